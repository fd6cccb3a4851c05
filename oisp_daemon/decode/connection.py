"""All connections of all traced processes: one protocol decoder each, and their lifecycle.

The capture layer feeds TLS plaintext per connection (pid, SSL pointer); each connection gets a
ProtocolDecoder (decode/protocol.py) that turns it into exchange steps, chosen by its first bytes:
HTTP/2 (decode/http2.py) after the client preface, or from frames when the sensor joined the
connection mid-way (counted: http2_joined_midway), HTTP/1.1 (decode/http1_exchanges.py) otherwise.
A client's HTTP/1.1 connection that reads before it has written anything was joined mid-response
(a keep-alive connection opened before the sensor started): what it reads is skipped up to its
next write, which starts the next exchange (counted: http1_joined_midway; skipped_bytes), and
a SkippingReads step lets the consumer stop copying those reads. The
tracker owns when a connection's decoding ends, and makes sure that no
exchange is lost or left open when it does: every open exchange then gets its ResponseDone,
partial with the reason:

- "connection_closed" (SSL_free / close), "process_exit", "idle_timeout" (no activity for the
  idle timeout: a hung or forgotten connection);
- "gap" (bytes lost in the kernel ring) ends every exchange open at the gap; the connection
  stays decoded;
- a protocol change the decoder reports ("upgrade", "tunnel", "not_http1", "http2_preface") or a
  decoder failure ("decode_error"): the connection is no longer decoded, and a Stopped step tells
  the consumer so that it can stop the capture in the kernel too; except that a WebSocket upgrade
  (101) hands the connection to the WebSocket decoder (decode/websocket.py), which goes on;
- "ignored": the consumer asked (the connection is not AI traffic).

Memory per connection is bounded by the decoder's limits; connections end with close, exit or
idle expiry, and so does the memory of connections no longer decoded.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Dict, List, Optional, Tuple

from .http1 import starts_with_request_line
from .http1_exchanges import Http1Decoder
from .http2 import PREFACE, Http2Decoder, sniff
from .messages import HttpRequest, HttpResponse
from .websocket import after_connect, after_upgrade
from .protocol import (
    CONNECTION_CLOSED, DECODE_ERROR, IDLE_TIMEOUT, IGNORED, NOT_HTTP1, PROCESS_EXIT, ConnectionKey,
    DecodeStats, ProtocolDecoder, ResponseDone, SkippingReads, Step, Stopped, end_exchange,
)

log = logging.getLogger(__name__)

# What a connection joined mid-response may read before its next write: a long answer (an SSE
# stream of minutes) completes within it; a protocol whose server talks first and whose client
# never writes (its bytes cost ring bandwidth until then) is given up.
MIDWAY_SKIP_LIMIT = 64 * 1024 * 1024


def starts_a_request(data: bytes) -> bool:
    """Whether bytes begin as a client's request does: an HTTP/1.x request line, or the HTTP/2
    preface (the first line of it suffices)."""
    return data.startswith(PREFACE[:16]) or starts_with_request_line(data)


class _Connection:
    def __init__(self, now_ns: int) -> None:
        self.decoder: Optional[ProtocolDecoder] = None  # chosen by the first bytes
        self.head: List[Tuple[str, bytes, int]] = []  # calls held until the protocol is told
        self.midway_skipped: Optional[int] = None  # bytes read before its first write, once joined mid-way
        self.last_ns = now_ns


class ConnectionTracker:
    """Fed by the pipeline one capture event at a time; returns the exchange steps it caused."""

    def __init__(self, max_body_bytes: int, idle_timeout_s: float,
                 max_header_bytes: int = 64 * 1024) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.idle_timeout_ns = int(idle_timeout_s * 1e9)
        self.stats = DecodeStats()
        self._conns: Dict[ConnectionKey, _Connection] = {}
        self._ignored: Dict[ConnectionKey, int] = {}  # key -> last activity, for expiry
        self._latest_ns = 0

    # -- input ------------------------------------------------------------------------------------

    def on_data(self, key: ConnectionKey, direction: str, data: bytes, ts_ns: int) -> List[Step]:
        """Plaintext of one TLS call: "write" (what the client sent) or "read" (what it received)."""
        if direction not in ("write", "read"):
            raise ValueError("direction must be 'write' or 'read', not %r" % (direction,))
        conn = self._active(key, ts_ns, len(data))
        if conn is None:
            return []
        out: List[Step] = []
        try:
            if conn.decoder is None and not self._choose(key, conn, direction, data, ts_ns, out):
                if (conn.midway_skipped or 0) > MIDWAY_SKIP_LIMIT:
                    return self._counted(self._stop(key, ts_ns, NOT_HTTP1))
                return out  # still undecided, or skipping (SkippingReads)
            conn.decoder.feed(direction, data, ts_ns, out)
        except Exception:  # a decoder bug must cost one connection, never the daemon
            log.exception("decoding connection pid=%d ssl=%#x failed; ignoring it", key[0], key[1])
            self.stats.decode_failures += 1
            return self._counted(out + self._stop(key, ts_ns, DECODE_ERROR))
        stopped = conn.decoder.stopped
        if stopped is not None:
            out += self._hand_over(key, conn, ts_ns, stopped)
        return self._counted(out)

    def on_gap(self, key: ConnectionKey, ts_ns: int) -> List[Step]:
        """Bytes of this connection were lost (ring buffer full) before the next data."""
        conn = self._active(key, ts_ns, 0)
        if conn is None:
            return []
        out: List[Step] = []
        try:
            if conn.midway_skipped is not None and conn.decoder is None:
                return []  # skipping to the next write anyway
            if conn.decoder is None:  # lost bytes before the protocol was told: assume HTTP/1.1
                self._choose(key, conn, "write", b"", ts_ns, out, force=True)
            conn.decoder.gap(ts_ns, out)
        except Exception:
            log.exception("decoding a gap of pid=%d ssl=%#x failed; ignoring it", key[0], key[1])
            self.stats.decode_failures += 1
            out += self._stop(key, ts_ns, DECODE_ERROR)
        return self._counted(out)

    def on_close(self, key: ConnectionKey, ts_ns: int) -> List[Step]:
        """The connection ended (SSL_free / close): flush it and forget it."""
        self._latest_ns = max(self._latest_ns, ts_ns)
        self._ignored.pop(key, None)
        conn = self._conns.pop(key, None)
        return [] if conn is None else self._counted(self._release(key, conn, ts_ns, CONNECTION_CLOSED))

    def on_process_exit(self, pid: int, ts_ns: int) -> List[Step]:
        """The process is gone, and with it all its connections."""
        self._latest_ns = max(self._latest_ns, ts_ns)
        for key in [k for k in self._ignored if k[0] == pid]:
            del self._ignored[key]
        out: List[Step] = []
        for key in [k for k in self._conns if k[0] == pid]:
            out += self._release(key, self._conns.pop(key), ts_ns, PROCESS_EXIT)
        return self._counted(out)

    def expire_idle(self, now_ns: int) -> List[Step]:
        """Release connections without activity for longer than the idle timeout."""
        self._latest_ns = max(self._latest_ns, now_ns)
        cutoff = now_ns - self.idle_timeout_ns
        for key in [k for k, last in self._ignored.items() if last < cutoff]:
            del self._ignored[key]
        out: List[Step] = []
        for key in [k for k, c in self._conns.items() if c.last_ns < cutoff]:
            self.stats.expired_connections += 1
            out += self._release(key, self._conns.pop(key), now_ns, IDLE_TIMEOUT)
        return self._counted(out)

    def ignore(self, key: ConnectionKey) -> List[Step]:
        """Not interesting (e.g. not AI traffic): end its open exchanges ("ignored") and drop its
        data until on_close."""
        conn = self._conns.pop(key, None)
        self._ignored[key] = conn.last_ns if conn is not None else self._latest_ns
        if conn is None:
            return []
        return self._counted(self._release(key, conn, self._latest_ns, IGNORED))

    # -- queries ----------------------------------------------------------------------------------

    def connection_count(self) -> int:
        """Connections being decoded (ignored ones not included)."""
        return len(self._conns)

    def counters(self) -> Dict[str, int]:
        """DecodeStats, with the parser counters of live connections included."""
        counters = asdict(self.stats)
        for conn in self._conns.values():
            if conn.decoder is None:
                continue
            counters["skipped_bytes"] += conn.decoder.skipped_bytes
            counters["resyncs"] += conn.decoder.resyncs
        return counters

    # -- internals --------------------------------------------------------------------------------

    def _active(self, key: ConnectionKey, ts_ns: int, size: int) -> Optional[_Connection]:
        """The connection's state if its data should be decoded, created on first sight."""
        self._latest_ns = max(self._latest_ns, ts_ns)
        if key in self._ignored:
            self._ignored[key] = ts_ns
            self.stats.ignored_bytes += size
            return None
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = _Connection(ts_ns)
        conn.last_ns = max(conn.last_ns, ts_ns)
        return conn

    def _choose(self, key: ConnectionKey, conn: _Connection, direction: str, data: bytes, ts_ns: int,
                out: List[Step], force: bool = False) -> bool:
        """Pick the connection's protocol from its first bytes (held, a few bytes at most, until
        they tell): the HTTP/2 client preface, HTTP/2 frames (joined mid-way), else HTTP/1.1.
        Feeds the held calls to the new decoder; False while still undecided (or skipping what a
        connection joined mid-response reads)."""
        if conn.midway_skipped is not None and direction == "read" and not conn.head:
            kind = "http1"  # still the answer joined mid-way: its body may look like anything
        else:
            first = b"".join(d for dr, d, _ in conn.head if dr == direction) + data
            kind = sniff(first, direction) if not force else "http1"
        if kind is None:
            if data:
                conn.head.append((direction, data, ts_ns))
            return False
        if kind == "http1" and self._skip_midway(conn, direction, data):
            out.append(SkippingReads(key))
            return False
        conn.decoder = self._new_decoder(key, kind)
        head, conn.head = conn.head, []
        for held_direction, held, held_ts in head:
            conn.decoder.feed(held_direction, held, held_ts, out)
        return True

    def _skip_midway(self, conn: _Connection, direction: str, data: bytes) -> bool:
        """Drop what an HTTP/1.1 client read before its first write: the rest of an answer whose
        request came before the sensor (a server's end reading a request is not that). Counted.
        True when the current call was such a read."""
        lead = next((i for i, (dr, _, _) in enumerate(conn.head) if dr == "write"), len(conn.head))
        current = direction == "read" and lead == len(conn.head)
        skipped = b"".join(d for _, d, _ in conn.head[:lead]) + (data if current else b"")
        if not skipped or starts_a_request(skipped):
            return False
        if conn.midway_skipped is None:
            conn.midway_skipped = 0
            self.stats.http1_joined_midway += 1
        conn.midway_skipped += len(skipped)
        self.stats.skipped_bytes += len(skipped)
        conn.head = conn.head[lead:]
        return current

    def _new_decoder(self, key: ConnectionKey, kind: str) -> ProtocolDecoder:
        """The decoder for a protocol sniff() told ("h2", "h2_midway", "http1")."""
        if kind == "h2_midway":
            self.stats.http2_joined_midway += 1
        if kind in ("h2", "h2_midway"):
            return Http2Decoder(key, self.stats, self.max_body_bytes, self.max_header_bytes,
                                midway=kind == "h2_midway", open_tunnel=self._open_tunnel)
        return Http1Decoder(key, self.stats, self.max_body_bytes, self.max_header_bytes)

    def _open_tunnel(self, key: ConnectionKey, connect: HttpRequest, accepted: HttpResponse) -> Optional[ProtocolDecoder]:
        """The decoder of an HTTP/2 stream that a 2xx to CONNECT made a tunnel (RFC 8441: a WebSocket)."""
        return after_connect(key, self.stats, self.max_body_bytes, connect, accepted)

    def _hand_over(self, key: ConnectionKey, conn: _Connection, ts_ns: int, reason: str) -> List[Step]:
        """The decoder stopped (`reason`): go on with the decoder of the protocol the connection
        switched to (a WebSocket after its HTTP/1.1 upgrade), or stop decoding it."""
        old = conn.decoder
        switched = old.switched if reason == "upgrade" and isinstance(old, Http1Decoder) else None
        successor = None
        if switched is not None:
            successor = after_upgrade(key, self.stats, self.max_body_bytes, switched.request, switched.response)
        if successor is None:
            return self._stop(key, ts_ns, reason)
        out = self._release(key, conn, ts_ns, reason)  # the upgrade's own exchange ended with its 101
        conn.decoder = successor
        try:
            successor.feed("read", old.leftover, ts_ns, out)  # what the server sent after the 101
        except Exception:
            log.exception("decoding connection pid=%d ssl=%#x failed; ignoring it", key[0], key[1])
            self.stats.decode_failures += 1
            return out + self._stop(key, ts_ns, DECODE_ERROR)
        if successor.stopped is not None:
            out += self._stop(key, ts_ns, successor.stopped)
        return out

    def _stop(self, key: ConnectionKey, ts_ns: int, reason: str) -> List[Step]:
        """No more decoding for this connection: end what is open, ignore it until it ends."""
        conn = self._conns.pop(key)
        self._ignored[key] = ts_ns
        self.stats.stopped_connections += 1
        return self._release(key, conn, ts_ns, reason) + [Stopped(key, reason)]

    def _release(self, key: ConnectionKey, conn: _Connection, ts_ns: int, why: str) -> List[Step]:
        out: List[Step] = []
        decoder = conn.decoder
        if decoder is None:
            return out  # only a few held bytes: no exchange began
        try:
            decoder.close(ts_ns, why, out)
        except Exception:
            log.exception("flushing connection pid=%d ssl=%#x failed", key[0], key[1])
            self.stats.decode_failures += 1
        try:
            open_exchanges = decoder.open_exchanges()  # none, unless close failed above
            self.stats.skipped_bytes += decoder.skipped_bytes
            self.stats.resyncs += decoder.resyncs
        except Exception:
            log.exception("reading the state of connection pid=%d ssl=%#x failed", key[0], key[1])
            open_exchanges = []
        for exchange in open_exchanges:
            end_exchange(exchange, why, ts_ns, out)
        return out

    def _counted(self, out: List[Step]) -> List[Step]:
        self.stats.unanswered_requests += sum(
            1 for step in out if isinstance(step, ResponseDone) and step.exchange.response is None)
        return out
