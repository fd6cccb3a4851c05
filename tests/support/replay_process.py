"""Start the replay server in its own process and talk to it from a test.

Each server gets its own loopback address (127.x.y.z) on port 443 so that several can run at once
and client URLs stay ``https://api.openai.com/v1/...``; a HostsNamespace maps the provider names
to that address for the clients. The server's request log is a file, read here, so that checking
it causes no TLS traffic that the sensor would see.
"""
from __future__ import annotations

import json
import os
import random
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from tests.support.hostsns import HostsNamespace
from tests.support.jsonl import whole_lines
from tests.support.llm_fixtures import FIXTURES_DIR, load_fixtures
from tests.support.paths import REPO_ROOT
from tests.support.tls import SERVER_NAMES, TestPki
from tests.support.processes import stop_process

NON_AI_HOST = "downloads.example.test"


def pick_loopback_address(port: int, attempts: int = 200) -> str:
    """A random 127.x.y.z address on which ``port`` is free (random, so parallel runs rarely meet)."""
    rng = random.Random()
    for _ in range(attempts):
        address = "127.%d.%d.%d" % (rng.randint(64, 250), rng.randint(0, 255), rng.randint(2, 254))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                continue
        return address
    raise RuntimeError("no free loopback address for port %d" % port)


def provider_host_names(fixtures_dir: Optional[Path] = None) -> List[str]:
    """Every HTTPS host of the fixtures, the certificate's plain names and the non-AI host."""
    names = {f.host for f in load_fixtures(fixtures_dir).values() if f.scheme == "https"}
    names.update(n for n in SERVER_NAMES if "*" not in n and n != "localhost" and not n[0].isdigit() and ":" not in n)
    names.add(NON_AI_HOST)
    return sorted(names)


class ReplayServerProcess:
    """A running replay server: where it listens, its pid, and the requests it has received."""

    def __init__(self, process: "subprocess.Popen[bytes]", host: str, port: int, pki: TestPki,
                 log_path: Path, stderr_path: Path, fixtures_dir: Path, plain: bool = False) -> None:
        self.process = process
        self.plain = plain
        self.host = host
        self.port = port
        self.pki = pki
        self.log_path = log_path
        self.stderr_path = stderr_path
        self.fixtures_dir = fixtures_dir

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str = "/", host: str = "api.openai.com") -> str:
        """``https://<host>[:port]<path>``: what a client in a hosts namespace asks for
        (``http://`` from a plain server)."""
        scheme, default = ("http", 80) if self.plain else ("https", 443)
        port = "" if self.port == default else ":%d" % self.port
        return "%s://%s%s%s" % (scheme, host, port, path)

    def hosts_mapping(self, names: Optional[Iterable[str]] = None) -> Dict[str, str]:
        """Host name -> this server's address, for all provider names unless ``names`` is given."""
        return {name: self.host for name in (names or provider_host_names(self.fixtures_dir))}

    def hosts_namespace(self, directory: Path, names: Optional[Iterable[str]] = None) -> HostsNamespace:
        """A HostsNamespace whose clients reach this server under the provider names."""
        return HostsNamespace.create(directory, self.hosts_mapping(names), name="hosts-%s" % self.host)

    def requests(self) -> List[Dict[str, Any]]:
        """Every request received so far, oldest first (see replay_server.request_record)."""
        return whole_lines(Path(self.log_path))

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> List[Dict[str, Any]]:
        """The request list once it has at least ``count`` entries; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.requests()
            if len(found) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(found) >= count, "replay server got %d requests, expected %d" % (len(found), count)
        return found

    def release(self, token: str) -> None:
        """Let the streams held with ``X-Replay-Hold: <token>`` go on (see replay_server.Hold)."""
        (self.log_path.parent / ("release-" + token)).touch()

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> "ReplayServerProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _await_ready(process: "subprocess.Popen[bytes]", timeout: float) -> Optional[Dict[str, Any]]:
    """The server's ready line, or None if it exited or stayed silent."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        return None
    line = process.stdout.readline()
    return json.loads(line) if line.strip() else None


def start_replay_server(pki: TestPki, workdir: Path, *, host: Optional[str] = None, port: int = 443,
                        fixtures_dir: Optional[Path] = None, chunk_delay_ms: float = 2.0,
                        python: str = sys.executable, timeout: float = 20.0,
                        plain: bool = False, module: str = "tests.support.replay_server") -> ReplayServerProcess:
    """Start ``python -m tests.support.replay_server`` (or another `module` with its arguments,
    e.g. tests.support.h2_replay_server) and wait until it listens.

    Without ``host`` a free random loopback address is chosen (and another one tried if it was
    taken meanwhile). ``port=0`` lets the kernel pick (then URLs carry the port). ``plain``: plain
    HTTP instead of TLS (the local model servers').
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(fixtures_dir or FIXTURES_DIR)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for attempt in range(3):
        address = host or pick_loopback_address(port)
        tag = "%s-%d-%d" % (address, port, attempt)
        log_path, stderr_path = workdir / ("requests-%s.jsonl" % tag), workdir / ("server-%s.err" % tag)
        log_path.touch()
        argv = [python, "-m", module, "--host", address, "--port", str(port),
                "--cert", str(pki.cert_file), "--key", str(pki.key_file), "--log", str(log_path),
                "--fixtures-dir", str(folder), "--chunk-delay-ms", str(chunk_delay_ms)] + (["--plain"] if plain else [])
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(argv, cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=stderr)
        ready = _await_ready(process, timeout)
        server = ReplayServerProcess(process, address, port, pki, log_path, stderr_path, folder, plain)
        if ready:
            server.port = int(ready["port"])
            return server
        server.stop()
        if host:
            break
    raise RuntimeError("replay server did not start:\n" + stderr_path.read_text(errors="replace"))
