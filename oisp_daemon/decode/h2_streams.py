"""The per-stream state of an HTTP/2 connection: a message body as it arrives, and one stream.

A body is stored content-decoded (decode/content.py, as for HTTP/1.1), with a mark per TLS call
that added decoded bytes (offset, kernel ts), so that time to first token and chunk timing are
per stream. Memory: each body is bounded by `max_body_bytes`, and all bodies of one connection
together by a shared Budget, since one connection may carry a hundred streams at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .content import ContentDecoder, ContentDecodingError, make_decoder
from .messages import HttpMessage, HttpRequest, HttpResponse
from .protocol import Exchange, ProtocolDecoder


class Budget:
    """Body bytes all streams of a connection may hold at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class Body:
    """One message's body, de-framed (DATA frames) and content-decoded as it arrives."""

    def __init__(self, msg: HttpMessage, max_bytes: int, budget: Budget) -> None:
        self.msg = msg
        self.budget = budget
        self.data = bytearray()
        self.marks: List[Tuple[int, int]] = []
        self._mark_feed = -1
        self._full = False
        self._raw: Optional[bytearray] = None  # undecoded copy while decoding may still fail
        self._raw_marks: List[Tuple[int, int]] = []
        self._raw_mark_feed = -1
        self._max = max_bytes
        coding = msg.header("content-encoding")
        try:
            self._decoder: Optional[ContentDecoder] = make_decoder(coding, max_bytes)
        except ContentDecodingError:
            msg.mark_partial("bad_encoding")
            self._decoder = make_decoder(None, max_bytes)
        else:
            if coding:
                self._raw = bytearray()

    def add(self, wire: bytes, feed_no: int, ts_ns: int) -> None:
        self.msg.wire_body_bytes += len(wire)
        if self._full or not wire or self._decoder is None:
            return
        if self._raw is not None:
            if len(self._raw) + len(wire) > self._max:
                self._raw = None
            else:
                if self._raw_mark_feed != feed_no:
                    self._raw_marks.append((len(self._raw), ts_ns))
                    self._raw_mark_feed = feed_no
                self._raw += wire
        try:
            decoded = self._decoder.feed(wire)
        except ContentDecodingError:
            self._bad_encoding()
            return
        self._store(decoded, feed_no, ts_ns)

    def finish(self, feed_no: int, ts_ns: int) -> None:
        """End of the body: flush the content decoder and fill in the message's body."""
        if self._decoder is not None and not self._full:
            try:
                self._store(self._decoder.finish(), feed_no, ts_ns)
            except ContentDecodingError:
                self._bad_encoding()
        self.fill()

    def fill(self) -> None:
        """Put what was stored into the message (also for a message cut short)."""
        self.msg.body = bytes(self.data)
        self.msg.body_marks = self.marks

    def release(self) -> None:
        self.budget.used -= len(self.data)
        self.data, self._raw = bytearray(), None

    def since(self, offset: int) -> Tuple[bytes, List[Tuple[int, int]]]:
        """Decoded bytes from `offset` on, with the marks covering them."""
        if len(self.data) <= offset:
            return b"", []
        i = len(self.marks) - 1
        while i > 0 and self.marks[i][0] > offset:
            i -= 1
        return bytes(self.data[offset:]), [(offset, self.marks[i][1])] + self.marks[i + 1:]

    def _store(self, decoded: bytes, feed_no: int, ts_ns: int) -> None:
        if self._decoder is not None and self._decoder.limit_reached:
            self._limit("body_limit")
        if not decoded:
            return
        if self.budget.used + len(decoded) > self.budget.limit:
            self._limit("connection_body_limit")
            return
        if self._mark_feed != feed_no:
            self.marks.append((len(self.data), ts_ns))
            self._mark_feed = feed_no
        self.data += decoded
        self.budget.used += len(decoded)

    def _limit(self, reason: str) -> None:
        self.msg.mark_partial(reason)
        self._full = True

    def _bad_encoding(self) -> None:
        """Decoding failed: keep the undecoded bytes instead (if still held), and stop decoding."""
        self.msg.mark_partial("bad_encoding")
        if self._raw is None:
            self._full, self._decoder = True, None
            return
        self.budget.used += len(self._raw) - len(self.data)
        self.data, self.marks, self._raw = self._raw, self._raw_marks, None
        self._mark_feed = self._raw_mark_feed
        self._decoder = make_decoder(None, self._max - len(self.data))


@dataclass(eq=False)
class Stream:
    """One client-initiated stream: its exchange, and how far each side of it got."""

    id: int
    exchange: Exchange
    request_body: Body
    request_ended: bool = False
    response: Optional[HttpResponse] = None  # the final response, once its head arrived
    response_body: Optional[Body] = None
    response_ended: bool = False
    early: bool = False  # the response ended before the request did
    # After a 2xx to CONNECT (RFC 8441 extended CONNECT, e.g. WebSocket): the stream's DATA
    # belongs to another protocol, read by this decoder if one was opened (see Http2Decoder).
    tunnel: Optional[ProtocolDecoder] = None
    tunneled: bool = False
    progressed_feed: int = field(default=-1)  # last read that added response body bytes

    @property
    def request(self) -> HttpRequest:
        return self.exchange.request

    def release(self) -> None:
        self.request_body.release()
        if self.response_body is not None:
            self.response_body.release()
