"""Per-connection HTTP/1.1 reassembly and request/response pairing, from the client's side.

The sensor sits in the client process: what it writes ("write") are requests, what it reads
("read") are responses. Each connection (pid, SSL pointer) gets one Http1Parser per direction, and
responses are paired with requests in order (HTTP/1.1 answers in request order).

Emission, so that events go out as early as they can:
- Exchange(request, None) as soon as a request is complete (the ai.request event need not wait
  for a long streaming answer);
- Exchange(request, response) when its response is complete. Every request gets exactly one of
  these, even one that is never answered: when the connection closes, the process exits, the
  connection idles out, or too many requests wait for answers, the request is paired with a
  synthetic HttpResponse with status 0, no headers, an empty body, ts_start_ns == ts_end_ns == the
  time of that event, complete=False and partial_reasons ["no_response", <why>], where <why> is
  "connection_closed", "process_exit", "idle_timeout" or "too_many_pending". An operator then
  sees the call that got no answer (a hung or killed request) instead of losing it.

A response for which no request was seen (the sensor started in the middle of a connection) is
dropped and counted in stats["orphan_responses"]. Memory per connection is bounded by the parsers'
limits and MAX_PENDING_RESPONSES pending requests.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Tuple

from .http1 import MAX_PENDING_RESPONSES, Http1Parser
from .messages import HttpRequest, HttpResponse

log = logging.getLogger(__name__)

ConnectionKey = Tuple[int, int]  # (pid, SSL pointer)


@dataclass
class Exchange:
    key: ConnectionKey
    request: HttpRequest
    response: Optional[HttpResponse]


@dataclass
class _Slot:
    """A request whose start line was seen, waiting for its own end and for its response."""

    request: HttpRequest
    done: bool = False
    response: Optional[HttpResponse] = None  # a response that came before the request ended


class _Connection:
    def __init__(self, max_body_bytes: int, max_header_bytes: int, now_ns: int) -> None:
        self.requests = Http1Parser("request", max_body_bytes, max_header_bytes)
        self.responses = Http1Parser("response", max_body_bytes, max_header_bytes)
        self.slots: Deque[_Slot] = deque()
        self.last_ns = now_ns
        self.seen_request = False

    def protocol(self) -> Optional[str]:
        error = self.requests.protocol_error or self.responses.protocol_error
        if error is not None:
            return "unknown:" + error
        return "http/1.1" if self.seen_request else None


def no_response(ts_ns: int, why: str) -> HttpResponse:
    """The response-side record of a request that got no answer (see the module docstring)."""
    return HttpResponse(
        headers=[], body=b"", ts_start_ns=ts_ns, ts_end_ns=ts_ns, complete=False,
        partial_reasons=["no_response", why], status=0,
    )


class ConnectionTracker:
    """All connections of all traced processes; fed by the capture layer, one event at a time."""

    def __init__(self, max_body_bytes: int, idle_timeout_s: float,
                 max_header_bytes: int = 64 * 1024) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.idle_timeout_ns = int(idle_timeout_s * 1e9)
        self.stats: Dict[str, int] = {
            "orphan_responses": 0,  # responses without a seen request, dropped
            "unanswered_requests": 0,  # requests paired with a synthetic "no_response"
            "expired_connections": 0,  # released by expire_idle
            "skipped_bytes": 0,  # thrown away while resynchronising (released connections)
            "ignored_bytes": 0,  # data of ignored connections
            "decode_failures": 0,  # parser bugs: the connection was ignored instead
        }
        self._conns: Dict[ConnectionKey, _Connection] = {}
        self._ignored: Dict[ConnectionKey, int] = {}  # key -> last activity, for expiry
        self._latest_ns = 0

    # -- input ------------------------------------------------------------------------------------

    def on_data(self, key: ConnectionKey, direction: str, data: bytes,
                ts_ns: int) -> List[Exchange]:
        """Plaintext of one TLS call: "write" (a request stream) or "read" (a response stream)."""
        if direction not in ("write", "read"):
            raise ValueError("direction must be 'write' or 'read', not %r" % (direction,))
        conn = self._active(key, ts_ns, len(data))
        if conn is None:
            return []
        out: List[Exchange] = []
        try:
            if direction == "write":
                self._requests_done(key, conn, conn.requests.feed(data, ts_ns), out)
            else:
                self._responses_done(key, conn, conn.responses.feed(data, ts_ns), out)
        except Exception:  # a decoder bug must cost one connection, never the daemon
            return self._failed(key)
        return out

    def on_gap(self, key: ConnectionKey, direction: str, ts_ns: int) -> List[Exchange]:
        """Bytes of this direction were lost (ring buffer full) before the next data."""
        if direction not in ("write", "read"):
            raise ValueError("direction must be 'write' or 'read', not %r" % (direction,))
        conn = self._active(key, ts_ns, 0)
        if conn is None:
            return []
        out: List[Exchange] = []
        try:
            if direction == "write":
                self._requests_done(key, conn, conn.requests.gap(ts_ns), out)
            else:
                self._responses_done(key, conn, conn.responses.gap(ts_ns), out)
        except Exception:
            return self._failed(key)
        return out

    def on_close(self, key: ConnectionKey, ts_ns: int) -> List[Exchange]:
        """The connection ended (SSL_free / close): flush it and forget it."""
        self._latest_ns = max(self._latest_ns, ts_ns)
        self._ignored.pop(key, None)
        conn = self._conns.pop(key, None)
        return [] if conn is None else self._release(key, conn, ts_ns, "connection_closed")

    def on_process_exit(self, pid: int, ts_ns: int) -> List[Exchange]:
        """The process is gone, and with it all its connections."""
        self._latest_ns = max(self._latest_ns, ts_ns)
        for key in [k for k in self._ignored if k[0] == pid]:
            del self._ignored[key]
        out: List[Exchange] = []
        for key in [k for k in self._conns if k[0] == pid]:
            out += self._release(key, self._conns.pop(key), ts_ns, "process_exit")
        return out

    def expire_idle(self, now_ns: int) -> List[Exchange]:
        """Release connections without activity for longer than the idle timeout."""
        self._latest_ns = max(self._latest_ns, now_ns)
        cutoff = now_ns - self.idle_timeout_ns
        for key in [k for k, last in self._ignored.items() if last < cutoff]:
            del self._ignored[key]
        out: List[Exchange] = []
        for key in [k for k, c in self._conns.items() if c.last_ns < cutoff]:
            self.stats["expired_connections"] += 1
            out += self._release(key, self._conns.pop(key), now_ns, "idle_timeout")
        return out

    def ignore(self, key: ConnectionKey) -> None:
        """Not interesting (e.g. not AI traffic, or not HTTP/1.x): drop its state, and its data
        until on_close. Nothing is flushed for it."""
        conn = self._conns.pop(key, None)
        if conn is not None:
            self._count_skipped(conn)
        self._ignored[key] = conn.last_ns if conn is not None else self._latest_ns

    # -- queries ----------------------------------------------------------------------------------

    def connection_count(self) -> int:
        """Connections with decoding state (ignored ones not included)."""
        return len(self._conns)

    def protocol_of(self, key: ConnectionKey) -> Optional[str]:
        """"http/1.1" once a request line was seen; "unknown:<reason>" when the stream is not (or no
        longer) HTTP/1.x: http2_preface, not_http1, upgrade (101), tunnel (CONNECT); None while
        undecided or for connections not tracked."""
        conn = self._conns.get(key)
        return None if conn is None else conn.protocol()

    # -- internals --------------------------------------------------------------------------------

    def _active(self, key: ConnectionKey, ts_ns: int, size: int) -> Optional[_Connection]:
        """The connection's state if its data should be decoded, created on first sight."""
        self._latest_ns = max(self._latest_ns, ts_ns)
        if key in self._ignored:
            self._ignored[key] = ts_ns
            self.stats["ignored_bytes"] += size
            return None
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = _Connection(self.max_body_bytes, self.max_header_bytes, ts_ns)
        conn.last_ns = max(conn.last_ns, ts_ns)
        if conn.requests.protocol_error or conn.responses.protocol_error:
            return None  # not HTTP/1.x (any more): nothing more to decode on either side
        return conn

    def _failed(self, key: ConnectionKey) -> List[Exchange]:
        log.exception("decoding connection pid=%d ssl=%#x failed; ignoring it", key[0], key[1])
        self.stats["decode_failures"] += 1
        self.ignore(key)
        return []

    def _register(self, key: ConnectionKey, conn: _Connection, request: HttpRequest,
                  out: List[Exchange]) -> _Slot:
        slot = _Slot(request)
        conn.slots.append(slot)
        conn.seen_request = True
        conn.responses.expect_response_to(request.method)
        if len(conn.slots) > MAX_PENDING_RESPONSES:
            # The response parser forgot the oldest method too; keep both queues aligned. The
            # oldest request is complete: on one connection only the newest can be in progress.
            oldest = conn.slots.popleft()
            self._unanswered(key, oldest, request.ts_start_ns, "too_many_pending", out)
        return slot

    def _requests_done(self, key: ConnectionKey, conn: _Connection, requests: List[HttpRequest],
                       out: List[Exchange]) -> None:
        for request in requests:
            slot = next((s for s in conn.slots if s.request is request), None)
            if slot is None:
                slot = self._register(key, conn, request, out)
            slot.done = True
            out.append(Exchange(key, request, None))
            if slot.response is not None:
                conn.slots.remove(slot)
                out.append(Exchange(key, request, slot.response))
        current = conn.requests.in_progress
        if current is not None and not any(s.request is current for s in conn.slots):
            # Known before it ends, so that an early response (e.g. 413 while the body is being
            # sent) pairs with it, and the response parser knows its method (HEAD has no body).
            self._register(key, conn, current, out)

    def _responses_done(self, key: ConnectionKey, conn: _Connection, responses: List[HttpResponse],
                        out: List[Exchange]) -> None:
        for response in responses:
            slot = next((s for s in conn.slots if s.response is None), None)
            if slot is None:
                self.stats["orphan_responses"] += 1
                continue
            slot.response = response
            if slot.done:
                conn.slots.remove(slot)
                out.append(Exchange(key, slot.request, response))

    def _unanswered(self, key: ConnectionKey, slot: _Slot, ts_ns: int, why: str,
                    out: List[Exchange]) -> None:
        self.stats["unanswered_requests"] += 1
        out.append(Exchange(key, slot.request, no_response(ts_ns, why)))

    def _release(self, key: ConnectionKey, conn: _Connection, ts_ns: int,
                 why: str) -> List[Exchange]:
        out: List[Exchange] = []
        try:
            self._requests_done(key, conn, conn.requests.close(ts_ns, why), out)
            self._responses_done(key, conn, conn.responses.close(ts_ns, why), out)
        except Exception:
            log.exception("flushing connection pid=%d ssl=%#x failed", key[0], key[1])
            self.stats["decode_failures"] += 1
        for slot in conn.slots:
            if slot.done:  # every request is, unless flushing failed above
                self._unanswered(key, slot, ts_ns, why, out)
        self._count_skipped(conn)
        return out

    def _count_skipped(self, conn: _Connection) -> None:
        self.stats["skipped_bytes"] += conn.requests.skipped_bytes + conn.responses.skipped_bytes
