"""HTTP/2 exchanges of one connection (RFC 9113), from the client's side, for any TLS library or h2c.

The sensor sits in the client: what it writes is the client's half (preface, requests on odd
streams), what it reads the server's. Each client stream is one Exchange with its own timing, so
many concurrent streams on one connection are decoded separately, each with its own time to first
token; streams are paired by id, never by order. Header blocks (HEADERS/PUSH_PROMISE plus
CONTINUATION) go through HPACK with one table per direction (h2_hpack.py), including those of
streams not decoded (pushes), so that the tables stay in step. Trailers are appended to the
message's headers (grpc-status comes in them).

How the pieces fit:
- h2_frames.FrameReader frames each direction; h2_streams holds bodies (content-decoded as for
  HTTP/1.1, bounded per stream and per connection) and streams;
- RST_STREAM ends that stream's exchange ("rst_stream"), GOAWAY those above its last stream id
  ("goaway"), a framing error the whole connection ("http2_error": the decoder stops, since no
  later byte can be framed with confidence);
- a connection joined mid-way (`midway`: its first bytes were frames, no preface) or after lost
  bytes (gap) resumes at the first TLS call of each direction that starts with a plausible frame
  header; its HPACK state is unknown, so header fields that reference it are left out and the
  message is partial ("hpack_state_unknown"), never guessed. Streams that began before are not
  decoded (their DATA is skipped, responses to them counted as orphans).
- a stream the client opened with CONNECT (RFC 8441 extended CONNECT: `:protocol` websocket)
  that got a 2xx becomes a tunnel: its exchange is answered (partial, "tunnel"), and its DATA
  goes to the decoder `open_tunnel(key, request, response)` returns, fed as "write"/"read" like a
  connection of its own (its steps go out with this connection's); without one it is skipped.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

from .h2_frames import (
    CONTINUATION, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PADDED, PRIORITY_FLAG, PUSH_PROMISE,
    RST_STREAM, SETTINGS, ACK, DataPiece, Frame, FrameReader, MAX_FRAME_SIZE_LIMIT, plausible_frame_header,
)
from .h2_hpack import HpackReader
from .h2_streams import Body, Budget, Stream
from .messages import Headers, HttpRequest, HttpResponse
from .protocol import (
    GAP, TOO_MANY_PENDING, ConnectionKey, DecodeStats, Exchange, ProtocolDecoder, Step, end_exchange,
    request_done, response_done, response_progress,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Why an HTTP/2 exchange or connection ended early (beside protocol.py's reasons).
HTTP2_ERROR = "http2_error"
RST = "rst_stream"
GOAWAY_REASON = "goaway"
HPACK_UNKNOWN = "hpack_state_unknown"
HEADER_LIMIT = "header_limit"

# Streams open at once that are decoded; servers allow 100-250 (SETTINGS_MAX_CONCURRENT_STREAMS).
MAX_STREAMS = 256
_SETTINGS_MAX_FRAME_SIZE = 5
_PADDING_AND_PRIORITY = 256 + 5  # what a HEADERS frame may carry beside its header block

OpenTunnel = Callable[[ConnectionKey, HttpRequest, HttpResponse], Optional[ProtocolDecoder]]


def sniff(data: bytes, direction: str = "write") -> Optional[str]:
    """What a connection's first bytes of one direction say: "h2" (the client preface),
    "h2_midway" (an HTTP/2 frame header: joined after the handshake), "http1" (anything else),
    None (too few bytes to tell yet: a prefix of the preface, or of a frame header).

    The sensor decodes the client's side. A process that serves HTTP/2 reads the preface and
    writes a SETTINGS frame first (its own preface): that is "http1" too, which HTTP/1.1 then
    refuses, as it refuses every server's side."""
    if direction == "read" and data.startswith(PREFACE[:len(data)]):
        return None if len(data) < len(PREFACE) else "http1"
    if data.startswith(PREFACE):
        return "h2"
    if PREFACE.startswith(data):
        return None  # also for b"": nothing to tell
    if data[:1] == b"\x00":
        if len(data) < 9:
            return None
        if not plausible_frame_header(data[:9]):
            return "http1"
        server_preface = direction == "write" and data[3] == SETTINGS and not data[4] & ACK
        return "http1" if server_preface else "h2_midway"
    return "http1"


class _Direction:
    """One side of the connection: its framing, its HPACK table, and where its header block is."""

    def __init__(self, max_header_bytes: int, synced: bool, resyncing: bool) -> None:
        self.frames = FrameReader(max_header_bytes + _PADDING_AND_PRIORITY)
        self.hpack = HpackReader(synced)
        self.resyncing = resyncing  # waiting for a TLS call that starts with a frame header
        self.first_frame = not resyncing  # the peer's preface SETTINGS must come first
        self.block: Optional[Tuple[Frame, bytearray, bool]] = None  # (HEADERS/PUSH_PROMISE, fragments, too big)


class Http2Decoder(ProtocolDecoder):
    """One HTTP/2 connection: the client's frames from "write", the server's from "read"."""

    def __init__(self, key: ConnectionKey, stats: DecodeStats, max_body_bytes: int,
                 max_header_bytes: int, midway: bool = False,
                 open_tunnel: Optional[OpenTunnel] = None) -> None:
        self.key = key
        self.stats = stats
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.midway = midway
        self.open_tunnel = open_tunnel
        self._write = _Direction(max_header_bytes, not midway, midway)
        self._read = _Direction(max_header_bytes, not midway, midway)
        self._preface_left = 0 if midway else len(PREFACE)
        self._streams: "OrderedDict[int, Stream]" = OrderedDict()
        self._budget = Budget(2 * max_body_bytes)
        self._error: Optional[str] = None
        self._skipped = 0
        self._resyncs = 0
        self._feed_no = 0
        self._ts = 0

    # -- ProtocolDecoder --------------------------------------------------------------------------

    @property
    def stopped(self) -> Optional[str]:
        return self._error

    @property
    def skipped_bytes(self) -> int:
        return self._skipped

    @property
    def resyncs(self) -> int:
        return self._resyncs

    def feed(self, direction: str, data: bytes, ts_ns: int, out: List[Step]) -> None:
        if self._error is not None or not data:
            return
        self._feed_no += 1
        self._ts = ts_ns
        side = self._write if direction == "write" else self._read
        if direction == "write" and self._preface_left:
            data = self._preface(data)
            if not data:
                return
        if side.resyncing:
            if not plausible_frame_header(data[:9]):
                self._skipped += len(data)
                return
            side.resyncing = False
        for item in side.frames.feed(data):
            if self._error is not None:
                return
            if isinstance(item, DataPiece):
                self._data(direction, item, out)
            else:
                self._frame(direction, side, item, out)
        if side.frames.error is not None and self._error is None:
            self._fail(out)
            return
        if direction == "read":
            self._progress(out)

    def gap(self, ts_ns: int, out: List[Step]) -> None:
        """Lost bytes: no frame boundary is known any more in either direction, nor the HPACK
        state. End every open exchange, then resume as for a connection joined mid-way."""
        if self._error is not None:
            return
        self._end_streams(list(self._streams), GAP, ts_ns, out)
        for name in ("_write", "_read"):
            old = getattr(self, name)
            new = _Direction(self.max_header_bytes, synced=False, resyncing=True)
            new.frames.max_frame_size = old.frames.max_frame_size
            setattr(self, name, new)
        self._preface_left = 0
        self._resyncs += 1

    def close(self, ts_ns: int, why: str, out: List[Step]) -> None:
        self._end_streams(list(self._streams), why, ts_ns, out)

    def open_exchanges(self) -> List[Exchange]:
        return [s.exchange for s in self._streams.values() if not s.exchange.answered]

    # -- framing ----------------------------------------------------------------------------------

    def _preface(self, data: bytes) -> bytes:
        """Match the client preface; returns what follows it in `data`."""
        start = len(PREFACE) - self._preface_left
        take = min(self._preface_left, len(data))
        if data[:take] != PREFACE[start:start + take]:
            self._error = HTTP2_ERROR
            return b""
        self._preface_left -= take
        return data[take:]

    def _fail(self, out: List[Step]) -> None:
        """A connection error: nothing after it can be framed. End what is open; the tracker then
        stops the connection (stopped)."""
        self._error = HTTP2_ERROR
        self._end_streams(list(self._streams), HTTP2_ERROR, self._ts, out)

    def _frame(self, direction: str, side: _Direction, frame: Frame, out: List[Step]) -> None:
        if side.first_frame:
            side.first_frame = False
            if frame.type != SETTINGS or frame.flags & ACK:
                self._fail(out)  # each side's preface is a SETTINGS frame: this is not HTTP/2
                return
        if side.block is not None:
            self._continuation(direction, side, frame, out)
            return
        ftype = frame.type
        if ftype in (HEADERS, PUSH_PROMISE):
            if ftype == PUSH_PROMISE and direction == "write":
                self._fail(out)  # only servers push
                return
            side.block = (frame, bytearray(), False)
            self._fragment(side, frame, out)
            if frame.flags & END_HEADERS:
                self._block_done(direction, side, out)
        elif ftype == CONTINUATION:
            # A continuation of a block that began before the sensor saw this connection.
            side.hpack.lose()
        elif ftype == SETTINGS and not frame.flags & ACK:
            self._settings(direction, frame.payload)
        elif ftype == RST_STREAM:
            self._end_streams([frame.stream], RST, self._ts, out)
        elif ftype == GOAWAY and direction == "read" and len(frame.payload) >= 4:
            last = int.from_bytes(frame.payload[:4], "big") & 0x7FFFFFFF
            self._end_streams([s for s in self._streams if s > last], GOAWAY_REASON, self._ts, out)
        # PRIORITY, PING, WINDOW_UPDATE and unknown types carry nothing an exchange needs.

    def _continuation(self, direction: str, side: _Direction, frame: Frame, out: List[Step]) -> None:
        first, _, _ = side.block
        if frame.type != CONTINUATION or frame.stream != first.stream:
            self._fail(out)  # a header block must not be interrupted (RFC 9113 section 6.10)
            return
        self._fragment(side, frame, out)
        if frame.flags & END_HEADERS:
            self._block_done(direction, side, out)

    def _fragment(self, side: _Direction, frame: Frame, out: List[Step]) -> None:
        """Add the frame's piece of the header block, within the header limit."""
        first, fragments, too_big = side.block
        payload, start, end = frame.payload, 0, frame.length
        if frame.type != CONTINUATION:
            pad = 0
            if frame.flags & PADDED:
                pad, start = (payload[0] if payload else 0), 1
            if frame.type == HEADERS and frame.flags & PRIORITY_FLAG:
                start += 5
            if frame.type == PUSH_PROMISE:
                start += 4
            end = frame.length - pad
            if end < start:
                self._fail(out)
                return
        if too_big or frame.truncated or len(fragments) + end - start > self.max_header_bytes:
            side.block = (first, bytearray(), True)
            return
        fragments += payload[start:end]

    def _block_done(self, direction: str, side: _Direction, out: List[Step]) -> None:
        first, fragments, too_big = side.block
        side.block = None
        reasons: List[str] = []
        headers: Headers = []
        if too_big:
            side.hpack.lose()  # the entries it added are not known
            reasons.append(HEADER_LIMIT)
        else:
            headers, unknown, malformed = side.hpack.decode(bytes(fragments))
            if malformed:
                reasons.append("malformed")
            if unknown:
                reasons.append(HPACK_UNKNOWN)  # fields left out: their values are not known
        if first.type == PUSH_PROMISE:
            return  # a pushed response: its block kept HPACK in step, nothing more to decode
        end_stream = bool(first.flags & END_STREAM)
        if direction == "write":
            self._request_headers(first.stream, headers, reasons, end_stream, out)
        else:
            self._response_headers(first.stream, headers, reasons, end_stream, out)

    def _settings(self, direction: str, payload: bytes) -> None:
        """The sender's SETTINGS bound the frames the other side may send it."""
        other = self._read if direction == "write" else self._write
        for i in range(0, len(payload) - 5, 6):
            ident = int.from_bytes(payload[i:i + 2], "big")
            value = int.from_bytes(payload[i + 2:i + 6], "big")
            if ident == _SETTINGS_MAX_FRAME_SIZE and 16384 <= value <= MAX_FRAME_SIZE_LIMIT:
                other.frames.max_frame_size = value

    # -- streams ----------------------------------------------------------------------------------

    def _request_headers(self, sid: int, headers: Headers, reasons: List[str], end_stream: bool,
                         out: List[Step]) -> None:
        stream = self._streams.get(sid)
        if stream is not None:
            if not stream.request_ended:  # trailers
                stream.request.headers.extend(headers)
                for reason in reasons:
                    stream.request.mark_partial(reason)
                if end_stream:
                    self._request_end(stream, out)
            return
        if sid % 2 == 0:
            return  # clients open odd streams only
        request = _request(headers, self._ts)
        for reason in reasons:
            request.mark_partial(reason)
        if len(self._streams) >= MAX_STREAMS:
            self._end_streams([next(iter(self._streams))], TOO_MANY_PENDING, self._ts, out)
        stream = Stream(sid, Exchange(self.key, request),
                        Body(request, self.max_body_bytes, self._budget))
        self._streams[sid] = stream
        if end_stream or request.method == "CONNECT":
            # A CONNECT's request is its head: what follows on the stream is tunnel data.
            self._request_end(stream, out)

    def _response_headers(self, sid: int, headers: Headers, reasons: List[str], end_stream: bool,
                          out: List[Step]) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            if sid % 2 == 1:
                self.stats.orphan_responses += 1  # a stream that began before the sensor saw it
            return
        if stream.tunneled:
            return
        if stream.response is not None:  # trailers
            stream.response.headers.extend(headers)
            for reason in reasons:
                stream.response.mark_partial(reason)
        else:
            response = _response(headers, self._ts)
            if 100 <= response.status < 200:
                return  # an interim response (100 Continue, 103 Early Hints)
            for reason in reasons:
                response.mark_partial(reason)
            stream.response = response
            stream.response_body = Body(response, self.max_body_bytes, self._budget)
            if stream.request.method == "CONNECT" and 200 <= response.status < 300:
                self._tunnel(stream, out)
                return
        if end_stream:
            self._response_end(stream, out)

    def _data(self, direction: str, piece: DataPiece, out: List[Step]) -> None:
        stream = self._streams.get(piece.stream)
        if stream is None:
            return  # a stream not decoded (began before the sensor saw it, or a push)
        if stream.tunneled:
            tunnel = stream.tunnel
            if tunnel is not None and piece.data:
                tunnel.feed(direction, piece.data, self._ts, out)
                if tunnel.stopped is not None:  # it cannot read the stream any further
                    tunnel.close(self._ts, tunnel.stopped, out)
                    stream.tunnel = None
            if piece.end_stream:
                self._end_streams([stream.id], "connection_closed", self._ts, out)
            return
        if direction == "write":
            if not stream.request_ended:
                stream.request_body.add(piece.data, self._feed_no, self._ts)
                if piece.end_stream:
                    self._request_end(stream, out)
        elif stream.response_body is not None and not stream.response_ended:
            stream.response_body.add(piece.data, self._feed_no, self._ts)
            stream.progressed_feed = self._feed_no
            if piece.end_stream:
                self._response_end(stream, out)

    def _request_end(self, stream: Stream, out: List[Step]) -> None:
        stream.request_ended = True
        stream.request.ts_end_ns = self._ts
        stream.request_body.finish(self._feed_no, self._ts)
        request_done(stream.exchange, out)
        if stream.early:
            self._answer(stream, out)

    def _response_end(self, stream: Stream, out: List[Step]) -> None:
        stream.response_ended = True
        stream.response.ts_end_ns = self._ts
        stream.response_body.finish(self._feed_no, self._ts)
        if stream.request_ended:
            self._answer(stream, out)
        else:
            stream.early = True  # answered once the request ends (or the stream is reset)

    def _answer(self, stream: Stream, out: List[Step]) -> None:
        del self._streams[stream.id]
        stream.release()
        response_done(stream.exchange, stream.response, out)

    def _tunnel(self, stream: Stream, out: List[Step]) -> None:
        """A 2xx to CONNECT: the exchange is answered, the stream carries another protocol."""
        response = stream.response
        response.mark_partial("tunnel")
        stream.response_body.fill()
        stream.tunneled = True
        response_done(stream.exchange, response, out)
        if self.open_tunnel is not None:
            stream.tunnel = self.open_tunnel(self.key, stream.request, response)

    def _end_streams(self, sids: List[int], why: str, ts_ns: int, out: List[Step]) -> None:
        """These streams cannot go on (`why`): hand out what is owed for each, then forget it."""
        for sid in sids:
            stream = self._streams.pop(sid, None)
            if stream is None:
                continue
            if stream.tunnel is not None:
                stream.tunnel.close(ts_ns, why, out)
            exchange, response = stream.exchange, stream.response
            if not exchange.answered:
                stream.request_body.fill()
                if response is not None:
                    stream.response_body.fill()
                    if not stream.response_ended:  # a cut response ends at its last data
                        marks = stream.response_body.marks
                        response.ts_end_ns = marks[-1][1] if marks else response.ts_start_ns
                if stream.response_ended:
                    # The response was whole, the request never ended: only the request is cut.
                    if not exchange.requested:
                        exchange.request.mark_partial(why)
                        request_done(exchange, out)
                    response_done(exchange, response, out)
                else:
                    end_exchange(exchange, why, ts_ns, out, response)
            stream.release()

    def _progress(self, out: List[Step]) -> None:
        """New body bytes of this read, per streaming exchange (protocol.ResponseProgress)."""
        for stream in self._streams.values():
            if stream.progressed_feed != self._feed_no or not stream.exchange.streaming:
                continue
            data, marks = stream.response_body.since(stream.exchange.progressed)
            if data:
                response_progress(stream.exchange, stream.response, data, marks, out)


def _pseudo(headers: Headers) -> Tuple[Dict[str, str], Headers]:
    """Pseudo-header fields by name, and the regular fields."""
    pseudo: Dict[str, str] = {}
    regular: Headers = []
    for name, value in headers:
        if name.startswith(":"):
            pseudo.setdefault(name, value)
        else:
            regular.append((name, value))
    return pseudo, regular


def _request(headers: Headers, ts_ns: int) -> HttpRequest:
    """The request of a HEADERS block. :authority becomes Host, as when HTTP/2 is relayed as
    HTTP/1.1 (RFC 9113 section 8.3.1); fields the block did not tell stay empty, never guessed."""
    pseudo, regular = _pseudo(headers)
    authority = pseudo.get(":authority")
    if authority is not None and not any(name.lower() == "host" for name, _ in regular):
        regular.insert(0, ("host", authority))
    protocol = pseudo.get(":protocol")
    if protocol is not None:
        regular.append((":protocol", protocol))  # extended CONNECT: what the tunnel will carry
    return HttpRequest(headers=regular, body=b"", ts_start_ns=ts_ns, ts_end_ns=ts_ns,
                       method=pseudo.get(":method", ""), target=pseudo.get(":path", ""),
                       version="HTTP/2")


def _response(headers: Headers, ts_ns: int) -> HttpResponse:
    pseudo, regular = _pseudo(headers)
    status = pseudo.get(":status", "")
    response = HttpResponse(headers=regular, body=b"", ts_start_ns=ts_ns, ts_end_ns=ts_ns,
                            status=int(status) if status.isdigit() and len(status) == 3 else 0,
                            version="HTTP/2")
    if not response.status:
        response.mark_partial(HPACK_UNKNOWN if not status else "malformed")
    return response
