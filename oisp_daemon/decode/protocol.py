"""What a connection's protocol decoder hands out: exchanges, and the steps that move them on.

An Exchange is one request and its response on one connection. Its decoder creates it when the
request starts and hands it out twice, as steps:

- RequestDone(exchange) once the request is complete (or was cut off: then it is partial), so
  that the `ai.request` event need not wait for a long streaming answer;
- ResponseProgress(exchange, ...) while the response's body arrives, only for an exchange the
  consumer marked `streaming` (a streamed AI answer it decodes live): after the response's head
  was parsed, one per TLS read that added decoded body bytes, carrying only those new bytes, and
  before ResponseDone (the bytes of the read that completed the response come as a last
  progress step right before it);
- ResponseDone(exchange) once the response is complete, or when the exchange cannot go on (the
  connection closed, the process exited, the connection idled out or was dropped, bytes were
  lost, the protocol changed). `exchange.ended` then says why; `exchange.response` holds what
  of the response was seen (partial), or None when nothing was.

Every exchange gets exactly one RequestDone and one ResponseDone, RequestDone first. The consumer keeps what it knows about
an exchange on the exchange itself (`note`): a response can only ever meet its own request, and
what the consumer kept goes away with the exchange.

ProtocolDecoder is the interface one connection's decoder implements (HTTP/1.1 today; HTTP/2 and
WebSocket fit behind it): bytes of either direction in, steps out.
"""
from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

from .messages import HttpRequest, HttpResponse

ConnectionKey = Tuple[int, int]  # (pid, SSL pointer)

# Why an exchange ended without its whole response (Exchange.ended, and the partial reason of
# whatever of the response was seen). The `ai.response` event names the same reason.
CONNECTION_CLOSED = "connection_closed"
PROCESS_EXIT = "process_exit"
IDLE_TIMEOUT = "idle_timeout"
TOO_MANY_PENDING = "too_many_pending"
GAP = "gap"
DECODE_ERROR = "decode_error"  # the decoder failed (a bug): the connection is no longer decoded
NOT_HTTP1 = "not_http1"  # the bytes are no HTTP/1.x (nor HTTP/2): another protocol
IGNORED = "ignored"  # the consumer stopped the connection (e.g. it is not AI traffic)
# Protocol changes: "upgrade" (101), "tunnel" (CONNECT 2xx), "not_http1", "http2_preface" come
# from the decoder itself (ProtocolDecoder.stopped).


@dataclass(eq=False)
class Exchange:
    """One request and (later) its response; identity is the object itself."""

    key: ConnectionKey
    request: HttpRequest
    response: Optional[HttpResponse] = None
    # Why the decoder ended it before its response ended by itself, and when (kernel ns); None
    # when the response ended on its own (even partial: see response.partial_reasons).
    ended: Optional[str] = None
    ended_ns: int = 0
    requested: bool = False  # RequestDone was handed out
    answered: bool = False  # ResponseDone was handed out
    note: Any = None  # the consumer's state for this exchange (the pipeline: its ai.request)
    # Set by the consumer (after RequestDone) to get ResponseProgress steps for this exchange.
    streaming: bool = False
    progressed: int = 0  # decoded body bytes handed out in ResponseProgress steps so far


@dataclass(frozen=True)
class RequestDone:
    exchange: Exchange


@dataclass(frozen=True)
class ResponseProgress:
    """Decoded body bytes of a streaming exchange's response, as one TLS read delivered them.

    `response` is the response in progress: status and headers are parsed, its `body` is not
    filled in yet (it is at ResponseDone). `data` starts at decoded-body `offset`; `marks` are the
    (decoded offset, kernel ts) of the reads that delivered it, oldest first (one, except for the
    last step, which may carry several reads' bytes)."""

    exchange: Exchange
    response: HttpResponse
    data: bytes
    offset: int
    marks: Tuple[Tuple[int, int], ...]

    def ts_at(self, offset: int) -> int:
        """Kernel ts of the read that delivered the body byte at `offset` (within `data`)."""
        ts = self.marks[0][1]
        for start, mark_ts in self.marks:
            if start > offset:
                break
            ts = mark_ts
        return ts


@dataclass(frozen=True)
class ResponseDone:
    exchange: Exchange


@dataclass(frozen=True)
class Stopped:
    """The tracker stopped decoding this connection by itself (reason: a protocol change or a
    decoder failure); the consumer should stop its capture too."""

    key: ConnectionKey
    reason: str


@dataclass(frozen=True)
class SkippingReads:
    """The tracker skips what this connection reads until it writes again (it was joined
    mid-answer): the consumer may stop copying its reads until then."""

    key: ConnectionKey


Step = Union[RequestDone, ResponseProgress, ResponseDone, Stopped, SkippingReads]


def request_done(exchange: Exchange, out: List[Step]) -> None:
    exchange.requested = True
    out.append(RequestDone(exchange))


def response_progress(exchange: Exchange, response: HttpResponse, data: bytes,
                      marks: List[Tuple[int, int]], out: List[Step]) -> None:
    """Hand out `data`, the decoded body bytes of `response` past what was handed out already
    (`marks`: the body marks covering them), if the consumer asked for them."""
    if not exchange.streaming or not data or not marks or exchange.answered:
        return
    offset = exchange.progressed
    exchange.progressed += len(data)
    out.append(ResponseProgress(exchange, response, data, offset, tuple(marks)))


def response_done(exchange: Exchange, response: Optional[HttpResponse], out: List[Step]) -> None:
    if response is not None and exchange.streaming and exchange.requested:
        # The bytes of the read that completed the response (or of the reads since the exchange
        # became streaming) come as progress first, so the consumer sees every byte live.
        start = exchange.progressed
        if len(response.body) > start:
            marks = _marks_from(response.body_marks, start) or [(start, response.ts_end_ns)]
            response_progress(exchange, response, response.body[start:], marks, out)
    exchange.response, exchange.answered = response, True
    out.append(ResponseDone(exchange))


def _marks_from(marks: List[Tuple[int, int]], start: int) -> List[Tuple[int, int]]:
    """The body marks covering the body from `start` on (the first one moved to `start`)."""
    i = bisect.bisect_right(marks, (start, 1 << 64)) - 1
    if i < 0:
        return list(marks)
    return [(start, marks[i][1])] + list(marks[i + 1:])


def end_exchange(exchange: Exchange, why: str, ts_ns: int, out: List[Step],
                 response: Optional[HttpResponse] = None) -> None:
    """The exchange cannot go on (at `ts_ns`): hand out what is still owed, partial with `why`;
    `response` is what of the response was seen, if anything."""
    if exchange.answered:
        return
    if not exchange.requested:
        exchange.request.mark_partial(why)
        request_done(exchange, out)
    if response is not None:
        response.mark_partial(why)
    exchange.ended, exchange.ended_ns = why, ts_ns
    response_done(exchange, response, out)


@dataclass
class DecodeStats:
    """Counters of the decode layer, for status (see Pipeline.counters)."""

    orphan_responses: int = 0  # responses no request was seen for (or that began before it): dropped
    unanswered_requests: int = 0  # exchanges that ended with no byte of a response seen
    expired_connections: int = 0  # connections released after idling out
    stopped_connections: int = 0  # connections no longer decoded: protocol change or decoder failure
    decode_failures: int = 0  # decoder bugs (each cost one connection, never the daemon)
    resyncs: int = 0  # times a parser lost the message boundary and looked for the next one
    skipped_bytes: int = 0  # bytes thrown away while resynchronising
    ignored_bytes: int = 0  # bytes of connections not decoded (not AI, other protocol)
    http2_joined_midway: int = 0  # HTTP/2 connections first seen after their start: HPACK state unknown
    http1_joined_midway: int = 0  # HTTP/1.1 connections first seen mid-answer: skipped to the next request


class ProtocolDecoder(ABC):
    """The decoder of one connection, fed by the tracker one TLS call at a time.

    Implementations never lose an exchange: every exchange they create gets its RequestDone and
    ResponseDone (close() ends all open ones). feed() and gap() may raise only on a decoder bug;
    the tracker then ends the open exchanges itself (open_exchanges()) and drops the connection.
    """

    @property
    @abstractmethod
    def stopped(self) -> Optional[str]:
        """Why the stream is no longer this protocol ("upgrade", "tunnel", "not_http1",
        "http2_preface", ...), None while it is. A stopped decoder takes no more input; the
        tracker ends its open exchanges with that reason (issue 10: or hands over to a decoder of
        the new protocol)."""

    @abstractmethod
    def feed(self, direction: str, data: bytes, ts_ns: int, out: List[Step]) -> None:
        """Plaintext of one TLS call: "write" (what the client sent) or "read" (what it received)."""

    @abstractmethod
    def gap(self, ts_ns: int, out: List[Step]) -> None:
        """Bytes of the connection were lost (direction unknown) before the next data."""

    @abstractmethod
    def close(self, ts_ns: int, why: str, out: List[Step]) -> None:
        """The stream ends (`why`): finish what can be finished and end every open exchange."""

    @abstractmethod
    def open_exchanges(self) -> List[Exchange]:
        """Exchanges created and not answered yet, oldest first."""

    @property
    @abstractmethod
    def skipped_bytes(self) -> int:
        """Bytes thrown away while resynchronising (garbage, or the rest of a lost message)."""

    @property
    @abstractmethod
    def resyncs(self) -> int:
        """Times the decoder lost the message boundary and looked for the next one."""
