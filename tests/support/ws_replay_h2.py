"""The WebSocket replay of the Responses API over HTTP/2 (RFC 8441): a TLS server offering only
h2 by ALPN, with SETTINGS_ENABLE_CONNECT_PROTOCOL, that accepts an extended CONNECT with
`:protocol` websocket on /v1/responses and answers each `response.create` (text frames in the
stream's DATA) with a recorded streaming fixture's events, one text frame each.

The h2 library does HTTP/2; the frames are this module's peers' (tests/support/ws_replay.py),
unfragmented and uncompressed (permessage-deflate is covered over HTTP/1.1 by
ws_replay_server.py). Started like it (ws_replay_server.start_ws_replay(..., h2=True)).

Usage: python -m tests.support.ws_replay_h2 --host 127.x.y.z --port 443 --cert C --key K --log L
"""
from __future__ import annotations

import argparse
import json
import socketserver
import ssl
import sys
from pathlib import Path
from typing import Dict, List, Optional

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded
from h2.settings import SettingCodes

from tests.support.llm_fixtures import FIXTURES_DIR
from tests.support.replay_server import PROCESS_COMM, _set_comm, serve, server_context
from tests.support.ws_replay import frame, read_frames, server_events
from tests.support.ws_replay_server import choose, responses_fixtures


class Handler(socketserver.BaseRequestHandler):
    server: "Server"

    def handle(self) -> None:
        try:
            tls = self.server.context.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with tls:
            self._serve(tls)

    def _serve(self, tls: ssl.SSLSocket) -> None:
        conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.update_settings({SettingCodes.ENABLE_CONNECT_PROTOCOL: 1})
        tls.sendall(conn.data_to_send())
        sockets: Dict[int, bytearray] = {}  # stream id -> WebSocket bytes not framed yet
        while True:
            try:
                data = tls.recv(65536)
            except (ssl.SSLError, OSError):
                return
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, RequestReceived):
                    headers = dict(event.headers)
                    ok = (headers.get(":method") == "CONNECT" and headers.get(":protocol") == "websocket"
                          and headers.get(":path") == "/v1/responses")
                    self.server.note({"kind": "upgrade", "path": headers.get(":path"), "h2": True, "accepted": ok})
                    conn.send_headers(event.stream_id, [(":status", "200" if ok else "404")], end_stream=not ok)
                    if ok:
                        sockets[event.stream_id] = bytearray()
                elif isinstance(event, DataReceived) and event.stream_id in sockets:
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    buf = sockets[event.stream_id]
                    buf += event.data
                    for opcode, payload in read_frames(buf):
                        if opcode == 1:
                            self._answer(conn, tls, event.stream_id, json.loads(payload))
                elif isinstance(event, StreamEnded) and event.stream_id in sockets:
                    del sockets[event.stream_id]
                    conn.end_stream(event.stream_id)
                elif isinstance(event, ConnectionTerminated):
                    tls.sendall(conn.data_to_send())
                    return
            tls.sendall(conn.data_to_send())

    def _answer(self, conn: H2Connection, tls: ssl.SSLSocket, sid: int, event: Dict) -> None:
        fx = choose(self.server.fixtures, event) if event.get("type") == "response.create" else None
        self.server.note({"kind": "message", "type": event.get("type"), "fixture": fx and fx.name})
        if fx is None:
            events = [json.dumps({"type": "error", "error": {"type": "invalid_request_error"}}).encode()]
        else:
            events = server_events(fx)
        for data in events:  # one event per TLS write, as a live stream (the client's window is big)
            conn.send_data(sid, frame(data))
            tls.sendall(conn.data_to_send())


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, context: ssl.SSLContext, log_path: Path) -> None:
        super().__init__(address, Handler)
        self.context = context
        self.fixtures = responses_fixtures(FIXTURES_DIR)
        self.log = open(log_path, "a", encoding="utf-8")

    def note(self, record: Dict) -> None:
        self.log.write(json.dumps(record, sort_keys=True) + "\n")
        self.log.flush()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    _set_comm(PROCESS_COMM)
    server = Server((args.host, args.port), server_context(args.cert, args.key, alpn=("h2",)), Path(args.log))
    serve(server, {"host": args.host, "port": server.server_address[1]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
