"""The replay server (replay_server.py) offering h2 and http/1.1 by ALPN, as providers' front ends do.

A client that negotiates h2 (curl by default, httpx with ``http2=True``, Go's net/http) is served
over HTTP/2 with the `h2` library: every stream is answered on a thread of its own, so concurrent
streams on one connection are multiplexed (their DATA frames interleave), streamed replies are sent
one SSE event / NDJSON line per DATA frame ``chunk_delay`` apart, and flow control is respected.
Anything else falls back to replay_server's HTTP/1.1 handling. With ``--plain`` it serves h2c
(HTTP/2 with prior knowledge: a connection that starts with the client preface) and HTTP/1.1
on plain TCP, as a local model or gRPC server would. Responses are chosen exactly as
there (build_reply: ``X-Fixture``, or method, path and body matching); every request is logged with
its ALPN.

Run: ``python -m tests.support.h2_replay_server --cert ... --key ... --log ...`` (replay_process.py
``start_replay_server(..., module=__name__)``).
"""
from __future__ import annotations

import gzip
import select
import socket
import ssl
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset, WindowUpdated
from h2.exceptions import H2Error

from tests.support.replay_server import (
    MAX_DELAY_S, ConnectionHandler, ReplayServer, Reply, Request, _number, accepts_gzip, build_reply, hold_of,
    request_record,
)
from tests.support.replay_server import main as replay_main

MAX_REQUEST_BODY = 64 << 20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class H2Session:
    """One HTTP/2 connection: a reader loop on this thread, one sender thread per stream."""

    def __init__(self, server: ReplayServer, conn_id: int, peer: str, tls: ssl.SSLSocket) -> None:
        self.server, self.conn_id, self.peer, self.tls = server, conn_id, peer, tls
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.lock = threading.Condition()  # guards conn; notified when a window opens or a stream ends
        self.heads: Dict[int, List[Tuple[str, str]]] = {}
        self.bodies: Dict[int, bytearray] = {}
        self.closed = False

    def run(self) -> None:
        with self.lock:
            self.conn.initiate_connection()
            self._flush()
        try:
            while not self.closed:
                # One SSL object must not be read and written at once: read under the lock, and
                # only once select() says bytes are there, so senders wait at most that long.
                if not self._pending() and not select.select([self.tls], [], [], 0.05)[0]:
                    continue
                with self.lock:
                    try:
                        data = self.tls.recv(65536)
                    except (socket.timeout, ssl.SSLWantReadError):
                        continue
                    if not data:
                        break
                    events = self.conn.receive_data(data)
                    for event in events:
                        self._on(event)
                    self._flush()
                    self.lock.notify_all()
        finally:
            with self.lock:
                self.closed = True
                self.lock.notify_all()

    def _pending(self) -> int:
        return self.tls.pending() if isinstance(self.tls, ssl.SSLSocket) else 0

    def _on(self, event) -> None:
        if isinstance(event, RequestReceived):
            self.heads[event.stream_id] = list(event.headers)
            self.bodies[event.stream_id] = bytearray()
        elif isinstance(event, DataReceived):
            body = self.bodies.get(event.stream_id)
            if body is not None and len(body) + len(event.data) <= MAX_REQUEST_BODY:
                body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, StreamEnded) and event.stream_id in self.heads:
            request = _request(self.heads.pop(event.stream_id), bytes(self.bodies.pop(event.stream_id)))
            threading.Thread(target=self._answer, args=(event.stream_id, request), daemon=True).start()
        elif isinstance(event, StreamReset):
            self.heads.pop(event.stream_id, None)
            self.bodies.pop(event.stream_id, None)
        elif isinstance(event, ConnectionTerminated):
            self.closed = True
        elif isinstance(event, WindowUpdated):
            pass  # the senders waiting for a window are notified after every read

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.tls.sendall(data)

    def _answer(self, sid: int, request: Request) -> None:
        reply = build_reply(self.server.fixtures, request)
        gzip_ok = reply.compressible and accepts_gzip(request.header("accept-encoding"))
        self.server.log.write(request_record(self.conn_id, self.peer, self.tls, request, reply, gzip_ok))
        time.sleep(min(max(_number(request.header("x-replay-delay-ms"), 0.0) / 1000.0, 0.0), MAX_DELAY_S))
        try:
            self._send(sid, reply, gzip_ok, request)
        except (H2Error, OSError, ssl.SSLError) as exc:
            self.server.note("conn %d stream %d: %s" % (self.conn_id, sid, exc))

    def _send(self, sid: int, reply: Reply, gzip_ok: bool, request: Request) -> None:
        headers = [(":status", str(reply.status))] + [(k.lower(), v) for k, v in reply.headers]
        if reply.streaming:
            with self.lock:
                self.conn.send_headers(sid, headers)
                self._flush()
            hold = hold_of(request, self.server.log.path.parent)
            for index, part in enumerate(reply.parts):
                if hold is not None and index == hold.after:
                    hold.wait()
                time.sleep(self.server.chunk_delay)
                self._data(sid, part, end=False)
            self._data(sid, b"", end=True)
            return
        body = reply.body
        if gzip_ok:
            body = gzip.compress(body, mtime=0)
            headers.append(("content-encoding", "gzip"))
        headers.append(("content-length", str(len(body))))
        with self.lock:
            self.conn.send_headers(sid, headers, end_stream=not body)
            self._flush()
        if body:
            self._data(sid, body, end=True)

    def _data(self, sid: int, data: bytes, end: bool) -> None:
        """Send `data` as the flow-control windows allow (waiting for WINDOW_UPDATEs)."""
        view = memoryview(data)
        with self.lock:
            while True:
                if self.closed:
                    raise OSError("connection closed")
                size = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(view))
                if size or not view:
                    last = size == len(view)
                    self.conn.send_data(sid, bytes(view[:size]), end_stream=end and last)
                    self._flush()
                    view = view[size:]
                    if last:
                        return
                else:
                    self.lock.wait(1.0)


def _request(headers: List[Tuple[str, str]], body: bytes) -> Request:
    pseudo = {k: v for k, v in headers if k.startswith(":")}
    regular = [(k, v) for k, v in headers if not k.startswith(":")]
    if ":authority" in pseudo and not any(k == "host" for k, _ in regular):
        regular.insert(0, ("host", pseudo[":authority"]))
    return Request(pseudo.get(":method", "GET").upper(), pseudo.get(":path", "/"), "HTTP/2", regular, body)


class H2ConnectionHandler(ConnectionHandler):
    def _serve(self, conn_id: int, peer: str, tls: ssl.SSLSocket) -> None:
        if tls.selected_alpn_protocol() == "h2" if isinstance(tls, ssl.SSLSocket) else _starts_with_preface(tls):
            H2Session(self.server, conn_id, peer, tls).run()
        else:
            super()._serve(conn_id, peer, tls)


def _starts_with_preface(sock: socket.socket) -> bool:
    """h2c with prior knowledge: the first bytes are the client preface (peeked, not consumed)."""
    while True:
        head = sock.recv(len(PREFACE), socket.MSG_PEEK)
        if len(head) == len(PREFACE) or not head or not PREFACE.startswith(head):
            return head == PREFACE
        time.sleep(0.01)


class H2ReplayServer(ReplayServer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.RequestHandlerClass = H2ConnectionHandler


def main(argv: Optional[List[str]] = None) -> int:
    """The replay's command line, serving h2 (and http/1.1 to a client that does not offer h2)."""
    return replay_main(argv, H2ReplayServer, alpn=("h2", "http/1.1"))


if __name__ == "__main__":
    sys.exit(main())
