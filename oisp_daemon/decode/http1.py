"""Incremental HTTP/1.x parser for one direction of one connection.

The sensor sees plaintext as the TLS calls of the traced process deliver it: pieces of arbitrary
size, each with the kernel timestamp of its call, sometimes with bytes missing (kernel ring buffer
full). This parser turns such a stream into HttpRequest / HttpResponse objects with de-chunked,
content-decoded bodies, and must survive anything: it runs in a root daemon on traffic it does not
control. So:

- feed() never raises on bad input. A message that had started and cannot be framed is returned
  partial ("malformed") and the parser looks for the next start line (resynchronises), where a
  line begins or where a TLS call begins.
- Memory is bounded. A body beyond `max_body_bytes` or a header block beyond `max_header_bytes`
  is not stored further, but framing is still followed so that the next message parses; the message
  is returned partial ("body_limit" / "header_limit") with what was stored.
- After lost bytes (gap()), the message in progress is returned partial ("gap") at once, since its
  end can no longer be found, and the parser resynchronises on the next start line.
- A stream that does not begin as HTTP/1.x (e.g. the HTTP/2 preface) sets `protocol_error` and all
  further input is ignored, so the caller can stop capturing that connection.

Timestamps: ts_start_ns is the ts of the piece that carried the first byte of the start line,
ts_end_ns of the piece that completed the message (for partial messages: of the last piece that
added bytes to it). body_marks gets one (decoded offset, ts) entry per piece that added decoded
body bytes. wire_body_bytes counts the body after de-chunking and before content decoding.
Trailer fields of a chunked body are appended to `headers` after the header fields.
"""
from __future__ import annotations

import re
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple, Union

from .content import ContentDecoder, ContentDecodingError, make_decoder, parse_codings
from .messages import HttpRequest, HttpResponse

Message = Union[HttpRequest, HttpResponse]

_METHOD = rb"[A-Z][A-Z0-9_-]{0,31}"
# Start lines as parsed (one line, CRLF removed) ...
_REQUEST_LINE = re.compile(rb"(" + _METHOD + rb") (\S+) (HTTP/1\.[01])\Z")
_RESPONSE_LINE = re.compile(rb"(HTTP/1\.[01]) ([1-5][0-9][0-9])(?: ([^\r\n]*))?\Z")
# ... and as searched for when resynchronising: a whole start line at the beginning of a line (or of
# a TLS call, see _on_resync).
_REQUEST_START = _METHOD + rb" \S+ HTTP/1\.[01]\r?\n"
_RESPONSE_START = rb"HTTP/1\.[01] [1-5][0-9][0-9](?: [^\r\n]*)?\r?\n"
_METHOD_PREFIX = re.compile(_METHOD + rb"\Z")
_HTTP_PREFIX = b"HTTP/1."
_H2_PREFACE = b"PRI * HTTP/2.0"
_REQUEST_START_MATCH = re.compile(_REQUEST_START)


def starts_with_request_line(data: bytes) -> bool:
    """Whether the bytes begin with a whole HTTP/1.x request line."""
    return _REQUEST_START_MATCH.match(data) is not None

# Longest chunk-size line (with extensions) and longest junk accepted where a chunk's CRLF belongs.
_MAX_CHUNK_LINE = 4096
_MAX_CHUNK_END = 64
_TOO_LONG = object()

# Requests a response parser keeps waiting for. Real clients pipeline a few at most; the bound
# matters when the read side is not captured at all, so that the queue cannot grow forever.
MAX_PENDING_RESPONSES = 64

# Parser states.
_START = "start"  # at a message boundary, expecting a start line
_HEADERS = "headers"
_LENGTH = "length"  # Content-Length body
_CHUNK_SIZE = "chunk_size"
_CHUNK_DATA = "chunk_data"
_CHUNK_END = "chunk_end"  # the CRLF after chunk data
_TRAILERS = "trailers"
_UNTIL_CLOSE = "until_close"  # response delimited by the connection closing
_RESYNC = "resync"  # looking for a plausible start line after lost or garbled bytes
_DEAD = "dead"  # not HTTP/1.x (any more): input is ignored
_BODY_STATES = frozenset({_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE})


def _plausible_request(prefix: bytes) -> bool:
    """Could these bytes (at a line start) begin a request line?"""
    method = prefix.partition(b" ")[0]
    return not prefix or (bool(method) and _METHOD_PREFIX.match(method) is not None)


def _plausible_response(prefix: bytes) -> bool:
    """Could these bytes (at a line start) begin a status line?"""
    return prefix[:7] == _HTTP_PREFIX[: len(prefix)] and (len(prefix) < 8 or prefix[7:8] in b"01")


def _text(raw: bytes) -> str:
    # Field values are bytes on the wire; most are ASCII, some servers send UTF-8.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _content_length(values: List[str]) -> Optional[int]:
    """The length all Content-Length values agree on ("5, 5" is allowed), or None if invalid."""
    lengths = {v.strip() for value in values for v in value.split(",")}
    if len(lengths) != 1:
        return None
    length = lengths.pop()
    if not length.isdigit() or len(length) > 18:
        return None
    return int(length)


class Http1Parser:
    """Parse one direction ("request" or "response") of an HTTP/1.x connection incrementally."""

    def __init__(self, role: str, max_body_bytes: int, max_header_bytes: int = 64 * 1024) -> None:
        if role not in ("request", "response"):
            raise ValueError("role must be 'request' or 'response', not %r" % (role,))
        self.role = role
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        # Why this stream is not (or no longer) parsed as HTTP/1.x: "http2_preface", "not_http1"
        # (first bytes are no HTTP/1.x start line), "upgrade" (101), "tunnel" (CONNECT 2xx).
        self.protocol_error: Optional[str] = None
        # After a 101 or a CONNECT 2xx: the bytes that followed its head, the new protocol's.
        self.leftover = b""
        # Bytes thrown away while looking for a start line (garbage, or the rest of a lost message),
        # and how often the parser had to look for one (after lost or malformed bytes).
        self.skipped_bytes = 0
        self.resyncs = 0
        self._request = role == "request"
        start = _REQUEST_START if self._request else _RESPONSE_START
        self._start_match = re.compile(start)
        self._start_search = re.compile(rb"\n(?=" + start + rb")")
        self._plausible: Callable[[bytes], bool] = (
            _plausible_request if self._request else _plausible_response
        )
        # Methods of requests awaiting a response, in order; beyond the bound the oldest is dropped.
        self._methods: Deque[str] = deque(maxlen=MAX_PENDING_RESPONSES)
        self._handlers: Dict[str, Callable[[List[Message]], bool]] = {
            _START: self._on_start,
            _HEADERS: self._on_headers,
            _LENGTH: self._on_length,
            _CHUNK_SIZE: self._on_chunk_size,
            _CHUNK_DATA: self._on_chunk_data,
            _CHUNK_END: self._on_chunk_end,
            _TRAILERS: self._on_trailers,
            _UNTIL_CLOSE: self._on_until_close,
            _RESYNC: self._on_resync,
        }
        self._state = _START
        self._buf = bytearray()
        self._pos = 0  # consumed up to here in _buf
        self._scan = 0  # no newline in _buf[_pos:_scan]
        self._abs_base = 0  # stream offset of _buf[0]
        self._abs_end = 0  # stream offset just past the last byte fed
        self._feeds: Deque[Tuple[int, int]] = deque()  # (stream offset, ts) where each piece began
        self._ts = 0
        self._feed_no = 0
        # Past the "very start" of the stream: a start line was parsed, or bytes were lost.
        self._seen_start = False
        self._at_line_start = True  # for _RESYNC: _buf[_pos] begins a line
        self._clear_message()

    # -- public -----------------------------------------------------------------------------------

    @property
    def in_progress(self) -> Optional[Message]:
        """The message whose start line was parsed and which is not finished yet (interim 1xx
        responses excluded). It is the same object feed() returns once the message is done."""
        return None if self._interim else self._msg

    def body_since(self, offset: int) -> Optional[Tuple[bytes, List[Tuple[int, int]]]]:
        """The decoded body of the message in progress from `offset` on, with the body marks
        covering it, once its head is parsed (None before, or with no message in progress).
        Copies only those bytes: a live consumer asks after every read for what is new."""
        if self.in_progress is None or self._state not in _BODY_STATES:
            return None
        body, marks = self._body, self._marks
        if len(body) <= offset:
            return b"", []
        i = len(marks) - 1
        while i > 0 and marks[i][0] > offset:
            i -= 1  # new bytes are at the end: a short walk back over the newest marks
        covering = [(offset, marks[i][1])] + marks[i + 1:] if marks else []
        return bytes(body[offset:]), covering

    def expect_response_to(self, method: str) -> None:
        """(response role) A request with this method was sent; responses come in request order."""
        self._methods.append(method.upper())

    def forget_expected(self) -> None:
        """(response role) The requests awaiting a response were given up (after lost bytes):
        the next response is not known to answer any of them."""
        self._methods.clear()

    def feed(self, data: bytes, ts_ns: int) -> List[Message]:
        """Bytes of one TLS call; returns the messages this completed (possibly partial)."""
        out: List[Message] = []
        if self._state == _DEAD or not data:
            return out
        self._ts = ts_ns
        self._feed_no += 1
        self._feeds.append((self._abs_end, ts_ns))
        self._abs_end += len(data)
        self._buf += data
        while self._handlers[self._state](out) and self._state != _DEAD:
            pass
        if self._msg is not None:
            self._msg_last_ts = ts_ns
        self._compact()
        return out

    def gap(self, ts_ns: int) -> List[Message]:
        """Bytes were lost here: finish the message in progress as partial, then resynchronise.

        The partial message's ts_end_ns is that of its last data, not `ts_ns` (when the loss was
        noticed), so that durations do not include the time the capture fell behind."""
        out: List[Message] = []
        if self._state == _DEAD:
            return out
        self._finish_partial(out, "gap")
        self._reset_buffer()
        self._seen_start = True
        self._enter_resync(at_line_start=True)
        return out

    def close(self, ts_ns: int, reason: str = "connection_closed") -> List[Message]:
        """The stream ended. A response delimited by the connection closing is complete if `reason`
        is "connection_closed"; anything else in progress is returned partial with `reason`.

        ts_end_ns of what is returned is that of its last data: `ts_ns` may be much later (the
        client closes pooled connections lazily; exit and idle expiry are noticed late)."""
        out: List[Message] = []
        if self._state == _DEAD:
            return out
        if self._state == _UNTIL_CLOSE and reason == "connection_closed":
            self._ts = self._msg_last_ts
            self._complete(out)
        else:
            self._finish_partial(out, reason)
        self._reset_buffer()
        self._state = _START
        return out

    # -- buffer -----------------------------------------------------------------------------------

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._abs_base += self._pos
            self._scan = max(self._scan - self._pos, 0)
            self._pos = 0
        while len(self._feeds) > 1 and self._feeds[1][0] <= self._abs_base:
            self._feeds.popleft()

    def _reset_buffer(self) -> None:
        self._abs_base = self._abs_end
        self._buf = bytearray()
        self._pos = self._scan = 0
        self._feeds.clear()

    def _ts_at(self, pos: int) -> int:
        """ts of the piece that delivered _buf[pos]."""
        offset = self._abs_base + pos
        ts = self._ts
        for start, piece_ts in reversed(self._feeds):
            ts = piece_ts
            if start <= offset:
                break
        return ts

    def _line(self, limit: int):
        """Next line without its line end, None if incomplete, _TOO_LONG beyond `limit` bytes."""
        self._scan = max(self._scan, self._pos)
        nl = self._buf.find(b"\n", self._scan)
        if nl < 0:
            self._scan = len(self._buf)
            return _TOO_LONG if len(self._buf) - self._pos > limit else None
        if nl - self._pos > limit:
            return _TOO_LONG
        line = bytes(self._buf[self._pos : nl])
        self._pos = self._scan = nl + 1
        return line[:-1] if line.endswith(b"\r") else line

    def _take(self, limit: int) -> bytes:
        """Up to `limit` bytes of what is buffered, consumed."""
        data = bytes(self._buf[self._pos : self._pos + limit])
        self._pos += len(data)
        return data

    # -- message bookkeeping ----------------------------------------------------------------------

    def _clear_message(self) -> None:
        self._msg: Optional[Message] = None
        self._msg_last_ts = 0
        self._interim = False  # a 1xx response other than 101: parsed and skipped
        self._method: Optional[str] = None  # (response) method of the request it answers
        self._header_bytes = 0
        self._header_full = False
        self._last_field: Optional[int] = None  # index in headers of the last field (obs-fold)
        self._content_length: List[str] = []
        self._transfer_coding: List[str] = []
        self._content_coding: List[str] = []
        self._remaining = 0
        self._body = bytearray()
        self._marks: List[Tuple[int, int]] = []
        self._mark_feed = -1
        self._raw: Optional[bytearray] = None  # undecoded copy, kept while decoding may still fail
        self._raw_marks: List[Tuple[int, int]] = []
        self._raw_mark_feed = -1
        self._decoder: Optional[ContentDecoder] = None
        self._body_full = False

    def _emit(self, out: List[Message], ts_end: int) -> None:
        msg = self._msg
        if msg is not None and not self._interim:
            msg.body = bytes(self._body)
            msg.body_marks = self._marks
            msg.ts_end_ns = ts_end
            out.append(msg)
        self._clear_message()

    def _complete(self, out: List[Message]) -> None:
        """The message's framing ended: flush the decoder, emit, and expect the next message."""
        if self._decoder is not None and not self._body_full:
            try:
                self._store(self._decoder.finish())
            except ContentDecodingError:
                self._bad_encoding()
            self._check_body_limit()
        self._emit(out, self._ts)
        self._state = _START

    def _finish_partial(self, out: List[Message], reason: str) -> None:
        if self._msg is not None:
            self._msg.mark_partial(reason)
            self._emit(out, self._msg_last_ts)
        else:
            self._clear_message()

    def _malformed(self, out: List[Message], at_line_start: bool) -> bool:
        self._finish_partial(out, "malformed")
        self._enter_resync(at_line_start)
        return True

    def _enter_resync(self, at_line_start: bool) -> None:
        self.resyncs += 1
        self._state = _RESYNC
        self._at_line_start = at_line_start

    # -- body -------------------------------------------------------------------------------------

    def _start_body(self, transfer_codings: List[str]) -> None:
        # Transfer codings other than chunked (rare: "gzip, chunked") were applied after the
        # content codings, so they are undone first: decoders run in reverse of this order.
        codings = parse_codings(", ".join(self._content_coding)) + transfer_codings
        try:
            self._decoder = make_decoder(", ".join(codings), self.max_body_bytes)
        except ContentDecodingError:
            self._msg.mark_partial("bad_encoding")
            self._decoder = make_decoder(None, self.max_body_bytes)
        else:
            if codings:
                self._raw = bytearray()

    def _add_body(self, wire: bytes) -> None:
        self._msg.wire_body_bytes += len(wire)
        if self._body_full or not wire:
            return
        if self._raw is not None:
            if len(self._raw) + len(wire) > self.max_body_bytes:
                self._raw = None
            else:
                if self._raw_mark_feed != self._feed_no:
                    self._raw_marks.append((len(self._raw), self._ts))
                    self._raw_mark_feed = self._feed_no
                self._raw += wire
        try:
            self._store(self._decoder.feed(wire))
        except ContentDecodingError:
            self._bad_encoding()
        self._check_body_limit()

    def _store(self, decoded: bytes) -> None:
        if decoded:
            if self._mark_feed != self._feed_no:
                self._marks.append((len(self._body), self._ts))
                self._mark_feed = self._feed_no
            self._body += decoded

    def _check_body_limit(self) -> None:
        if self._decoder is not None and self._decoder.limit_reached:
            self._msg.mark_partial("body_limit")
            self._body_full = True

    def _bad_encoding(self) -> None:
        """Decoding failed: keep the undecoded bytes instead (if still held), and stop decoding."""
        self._msg.mark_partial("bad_encoding")
        if self._raw is None:
            self._body_full = True  # keep the decoded prefix; later bytes would not fit it
            self._decoder = None
            return
        self._body, self._marks, self._mark_feed = self._raw, self._raw_marks, self._raw_mark_feed
        self._raw = None
        self._decoder = make_decoder(None, self.max_body_bytes - len(self._body))

    # -- states -----------------------------------------------------------------------------------

    def _on_start(self, out: List[Message]) -> bool:
        buf = self._buf
        while self._pos < len(buf) and buf[self._pos] in b"\r\n":
            self._pos += 1  # blank lines between messages are tolerated
        if self._pos == len(buf):
            return False
        start = self._pos
        line = self._line(self.max_header_bytes)
        if line is None:
            if self._plausible(bytes(buf[start : start + 40])):
                return False
            return self._not_a_start_line(out, bytes(buf[start : start + 40]))
        if line is _TOO_LONG:
            return self._not_a_start_line(out, bytes(buf[start : start + 40]))
        m = (_REQUEST_LINE if self._request else _RESPONSE_LINE).match(line)
        if m is None:
            self._pos = start
            return self._not_a_start_line(out, line)
        self._seen_start = True
        self._state = _HEADERS
        ts = self._ts_at(start)
        self._msg_last_ts = self._ts
        self._header_bytes = len(line) + 2
        if self._request:
            self._msg = HttpRequest(
                headers=[], body=b"", ts_start_ns=ts, ts_end_ns=ts,
                method=m.group(1).decode("ascii"), target=_text(m.group(2)),
                version=m.group(3).decode("ascii"),
            )
            return True
        status = int(m.group(2))
        self._msg = HttpResponse(
            headers=[], body=b"", ts_start_ns=ts, ts_end_ns=ts, status=status,
            reason=_text(m.group(3) or b""), version=m.group(1).decode("ascii"),
        )
        self._interim = 100 <= status < 200 and status != 101
        if not self._interim:
            self._method = self._methods.popleft() if self._methods else None
        return True

    def _not_a_start_line(self, out: List[Message], head: bytes) -> bool:
        if not self._seen_start:
            self.protocol_error = "http2_preface" if head.startswith(_H2_PREFACE) else "not_http1"
            self._state = _DEAD
            self._reset_buffer()
            return False
        return self._malformed(out, at_line_start=False)

    def _on_headers(self, out: List[Message]) -> bool:
        while True:
            line = self._line(self.max_header_bytes)
            if line is None:
                return False
            if line is _TOO_LONG:
                self._msg.mark_partial("header_limit")
                return self._malformed(out, at_line_start=False)
            if not line:
                return self._headers_done(out)
            self._field_line(line)

    def _field_line(self, line: bytes) -> None:
        self._header_bytes += len(line) + 2
        if self._header_bytes > self.max_header_bytes and not self._header_full:
            self._header_full = True
            self._msg.mark_partial("header_limit")
        headers = self._msg.headers
        if line[:1] in b" \t":
            # obs-fold: a continuation of the previous field's value
            if self._last_field is not None and not self._header_full:
                name, value = headers[self._last_field]
                headers[self._last_field] = (name, (value + " " + _text(line.strip())).strip())
            return
        name, colon, value = line.partition(b":")
        name = name.strip()
        if not colon or not name:
            self._msg.mark_partial("malformed")
            return
        text = _text(value.strip())
        lname = name.lower()
        # Framing fields are honoured even past the header limit, to stay in sync with the stream.
        if lname == b"content-length":
            self._content_length.append(text)
        elif lname == b"transfer-encoding":
            self._transfer_coding.append(text)
        elif lname == b"content-encoding":
            self._content_coding.append(text)
        if not self._header_full:
            headers.append((_text(name), text))
            self._last_field = len(headers) - 1

    def _headers_done(self, out: List[Message]) -> bool:
        """End of the header block: decide how the body is framed (RFC 9112 section 6.3)."""
        msg = self._msg
        if isinstance(msg, HttpResponse):
            status = msg.status
            if self._interim:
                self._clear_message()  # 100 Continue and friends: the real response follows
                self._state = _START
                return True
            if status == 101 or (self._method == "CONNECT" and 200 <= status < 300):
                self._complete(out)
                self.protocol_error = "upgrade" if status == 101 else "tunnel"
                self.leftover = bytes(self._buf[self._pos :])
                self._state = _DEAD
                self._reset_buffer()
                return False
            if self._method == "HEAD" or status in (204, 304):
                self._complete(out)
                return True
        transfer = parse_codings(", ".join(self._transfer_coding))
        chunked = bool(transfer) and transfer[-1] == "chunked"
        if transfer and not chunked and self._request:
            return self._malformed(out, at_line_start=True)  # a request body must be delimited
        self._start_body(transfer[:-1] if chunked else transfer)
        if transfer:
            self._state = _CHUNK_SIZE if chunked else _UNTIL_CLOSE
        elif self._content_length:
            length = _content_length(self._content_length)
            if length is None:
                return self._malformed(out, at_line_start=True)
            self._remaining = length
            self._state = _LENGTH
        elif self._request:
            self._remaining = 0
            self._state = _LENGTH
        else:
            self._state = _UNTIL_CLOSE
        return True

    def _on_length(self, out: List[Message]) -> bool:
        if self._remaining:
            if self._pos == len(self._buf):
                return False
            data = self._take(self._remaining)
            self._remaining -= len(data)
            self._add_body(data)
            if self._remaining:
                return False
        self._complete(out)
        return True

    def _on_chunk_size(self, out: List[Message]) -> bool:
        line = self._line(_MAX_CHUNK_LINE)
        if line is None:
            return False
        size = b"" if line is _TOO_LONG else line.partition(b";")[0].strip()
        if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
            return self._malformed(out, at_line_start=line is not _TOO_LONG)
        self._remaining = int(size, 16)
        self._state = _CHUNK_DATA if self._remaining else _TRAILERS
        return True

    def _on_chunk_data(self, out: List[Message]) -> bool:
        if self._pos == len(self._buf):
            return False
        data = self._take(self._remaining)
        self._remaining -= len(data)
        self._add_body(data)
        if self._remaining:
            return False
        self._state = _CHUNK_END
        return True

    def _on_chunk_end(self, out: List[Message]) -> bool:
        line = self._line(_MAX_CHUNK_END)
        if line is None:
            return False
        if line:
            return self._malformed(out, at_line_start=line is not _TOO_LONG)
        self._state = _CHUNK_SIZE
        return True

    def _on_trailers(self, out: List[Message]) -> bool:
        while True:
            line = self._line(self.max_header_bytes)
            if line is None:
                return False
            if line is _TOO_LONG:
                self._msg.mark_partial("header_limit")
                return self._malformed(out, at_line_start=False)
            if not line:
                self._complete(out)
                return True
            self._field_line(line)

    def _on_until_close(self, out: List[Message]) -> bool:
        self._add_body(self._take(len(self._buf) - self._pos))
        return False

    def _piece_starts(self, pos: int) -> List[int]:
        """Offsets in _buf, from `pos` on, where a TLS call's bytes began."""
        return [start - self._abs_base for start, _ in self._feeds if start - self._abs_base >= pos]

    def _on_resync(self, out: List[Message]) -> bool:
        # A start line counts where a line begins, and where a TLS call begins: clients write each
        # request with calls of its own, and read a response that was sent after their request
        # with calls of its own, so a message that follows lost bytes is found even when the bytes
        # before it (a body) did not end with a newline.
        buf, pos = self._buf, self._pos
        if self._at_line_start and self._start_match.match(buf, pos):
            self._state = _START
            return True
        m = self._start_search.search(buf, pos)
        found = [m.end()] if m is not None else []
        found += [p for p in self._piece_starts(pos) if self._start_match.match(buf, p)]
        if found:
            start = min(found)
            self.skipped_bytes += start - pos
            self._pos = start
            self._state = _START
            return True
        # No whole start line: keep from the first place that could still become one, after the
        # last newline (a line start or a call start; earlier ones were decided above).
        nl = buf.rfind(b"\n", pos)
        starts = [nl + 1] if nl >= 0 else ([pos] if self._at_line_start else [])
        starts += [p for p in self._piece_starts(max(pos, nl + 1)) if p < len(buf)]
        keep = len(buf)
        for start in sorted(starts):
            if len(buf) - start <= self.max_header_bytes and self._plausible(bytes(buf[start : start + 40])):
                keep = start
                break
        self._at_line_start = keep < len(buf)
        self.skipped_bytes += keep - pos
        self._pos = keep
        return False
