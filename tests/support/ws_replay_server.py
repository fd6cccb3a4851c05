"""A WebSocket replay of the Responses API: accepts the upgrade on /v1/responses (over TLS, with
the test CA's certificate) and answers each `response.create` with a recorded streaming
fixture's events, one text frame per event, as the API's WebSocket mode does.

aiohttp does the framing (its own RFC 6455 and RFC 7692 code, independent of the sensor's), and
accepts `permessage-deflate` (and server_no_context_takeover) when the client offers it. The
fixture is the one whose request body (without "stream") equals the response.create's fields;
the request log (one JSON line per upgrade and per message) lets a test see what was negotiated
without TLS traffic of its own.

Usage: python -m tests.support.ws_replay_server --host 127.x.y.z --port 443 --cert C --key K --log L
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from aiohttp import WSMsgType, web

from tests.support.llm_fixtures import FIXTURES_DIR, Fixture, load_fixtures
from tests.support.paths import REPO_ROOT
from tests.support.replay_process import ReplayServerProcess, _await_ready, pick_loopback_address
from tests.support.replay_server import PROCESS_COMM, _set_comm, server_context
from tests.support.tls import TestPki
from tests.support.ws_replay import server_events


def responses_fixtures(folder: Path) -> List[Fixture]:
    """The streaming Responses API recordings: what the WebSocket mode answers with."""
    return [fx for fx in load_fixtures(folder).values()
            if fx.path.endswith("/v1/responses") and fx.streaming and fx.status == 200]


def choose(fixtures: List[Fixture], event: Dict[str, Any]) -> Optional[Fixture]:
    fields = {k: v for k, v in event.items() if k != "type"}
    for fx in fixtures:
        if {k: v for k, v in fx.request_json().items() if k != "stream"} == fields:
            return fx
    return None


class Replay:
    def __init__(self, fixtures: List[Fixture], log_path: Path) -> None:
        self.fixtures = fixtures
        self.log = open(log_path, "a", encoding="utf-8")

    def note(self, record: Dict[str, Any]) -> None:
        self.log.write(json.dumps(record, sort_keys=True) + "\n")
        self.log.flush()

    async def responses(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=True, max_msg_size=16 << 20)
        await ws.prepare(request)
        self.note({"kind": "upgrade", "path": request.path, "deflate": bool(ws.compress),
                   "offered": request.headers.get("Sec-WebSocket-Extensions")})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            fx = choose(self.fixtures, event) if event.get("type") == "response.create" else None
            self.note({"kind": "message", "type": event.get("type"), "fixture": fx and fx.name})
            if fx is None:
                await ws.send_str(json.dumps({"type": "error", "error": {
                    "type": "invalid_request_error", "message": "no recording matches this request"}}))
                continue
            for data in server_events(fx):
                await ws.send_str(data.decode())
                await asyncio.sleep(0.002)  # one event per TLS write, as a live stream
        return ws


def start_ws_replay(pki: TestPki, workdir: Path, h2: bool = False, timeout: float = 20.0) -> ReplayServerProcess:
    """Start this server (or with `h2` its HTTP/2 twin, ws_replay_h2.py) in its own process on a
    free loopback address, port 443."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    address = pick_loopback_address(443)
    log_path, stderr_path = workdir / ("ws-requests-%s.jsonl" % address), workdir / ("ws-%s.err" % address)
    log_path.touch()
    module = "tests.support.ws_replay_h2" if h2 else "tests.support.ws_replay_server"
    argv = [sys.executable, "-m", module, "--host", address, "--port", "443",
            "--cert", str(pki.cert_file), "--key", str(pki.key_file), "--log", str(log_path)]
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(argv, cwd=str(REPO_ROOT), env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
    server = ReplayServerProcess(process, address, 443, pki, log_path, stderr_path, FIXTURES_DIR)
    if _await_ready(process, timeout) is None:
        server.stop()
        raise RuntimeError("WebSocket replay did not start:\n" + stderr_path.read_text(errors="replace"))
    return server


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--fixtures-dir", default=str(FIXTURES_DIR))
    args = parser.parse_args(argv)
    _set_comm(PROCESS_COMM)
    context = server_context(args.cert, args.key)
    replay = Replay(responses_fixtures(Path(args.fixtures_dir)), Path(args.log))
    app = web.Application()
    app.router.add_get("/v1/responses", replay.responses)

    async def serve() -> None:
        runner = web.AppRunner(app, handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        print(json.dumps({"ready": True, "host": args.host, "port": port, "fixtures": len(replay.fixtures)}), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except (KeyboardInterrupt, web.GracefulExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
