"""The control socket server running as in the daemon: on an asyncio loop in its own thread.

Tests talk to it from the main thread with blocking clients (oisp-ctl's SocketClient, raw
sockets, or oisp-ctl in a subprocess), and publish events into the hub from the main thread, as
the pipeline thread does in the daemon.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Dict, List, Optional

from oisp_ctl import protocol
from oisp_daemon.control.unix_socket import UnixSocketServer, start_unix_socket_server


class ServerThread:
    """start_unix_socket_server(ops, path, mode, **caps) on a loop thread; `close()` calls its close()."""

    def __init__(self, ops: Any, path: str, mode: int = 0o666, **caps: int) -> None:
        self.ops = ops
        self.path = path
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="control-loop",
                                        daemon=True)
        self._thread.start()
        try:
            self.server: UnixSocketServer = self.run(start_unix_socket_server(ops, path, mode, **caps))
        except BaseException:
            self._stop_loop()
            raise
        self._closed = False

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.run(self.server.close())
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()


class RawConnection:
    """A bare socket speaking NDJSON, to send exactly the bytes a test wants."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._decoder = protocol.Decoder(protocol.MAX_STREAM_LINE_BYTES)
        self._pending: List[Any] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, request_id: Any, op: str, args: Optional[Dict[str, Any]] = None) -> None:
        self.send(protocol.encode(protocol.request(request_id, op, args)))

    def hello(self, request_id: Any = 0) -> Dict[str, Any]:
        self.request(request_id, protocol.OP_HELLO, protocol.hello_args("test/1"))
        return self.receive()

    def receive(self) -> Dict[str, Any]:
        """The next message; raises EOFError when the server closed the connection."""
        while not self._pending:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("the server closed the connection")
            self._pending.extend(self._decoder.feed(data))
        item = self._pending.pop(0)
        assert isinstance(item, dict), item
        return item

    def receive_n(self, count: int) -> List[Dict[str, Any]]:
        return [self.receive() for _ in range(count)]

    def close(self) -> None:
        self.sock.close()


def wait_until(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `predicate` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


def event(n: int, uid: int = 0, size: int = 0, event_type: str = "ai.response") -> Dict[str, Any]:
    """A small OISP-shaped event; `size` pads it with a body of that many characters."""
    ev: Dict[str, Any] = {
        "event_id": "e%d" % n, "event_type": event_type,
        "ts": "2025-12-22T20:15:%02d.000000Z" % (n % 60),
        "actor": {"uid": uid}, "process": {"pid": 4242, "name": "python3"},
        "data": {"provider": {"name": "openai"}, "model": {"id": "gpt-4o-mini"},
                 "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_cost_usd": 0.0001},
                 "latency_ms": 812, "finish_reason": "stop"},
    }
    if size:
        ev["data"]["body"] = "x" * size
    return ev
