"""HTTP/2 frame reader (RFC 9113 section 4) for one direction of one connection, incremental.

Bytes arrive as the TLS calls deliver them, cut anywhere. The reader turns them into frames
without ever holding more than one bounded frame: DATA payloads are handed out piece by piece as
they arrive (a 16 MiB DATA frame costs nothing to hold), and any other frame's payload is kept
only up to `max_payload` (the prefix; `truncated` says the rest was skipped), since the header
block of a HEADERS/CONTINUATION frame is what is bounded by the caller, and a control frame's
meaning is in its first bytes.

A frame that breaks the framing rules (length beyond the receiver's SETTINGS_MAX_FRAME_SIZE, a
fixed-size frame of the wrong size, a stream-0 frame on a stream or the reverse, padding longer
than the frame) is a connection error in HTTP/2: the peer closes the connection, and no later byte
can be framed with confidence. The reader then sets `error` and takes no more input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Union

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

DEFAULT_MAX_FRAME_SIZE = 16384
MAX_FRAME_SIZE_LIMIT = (1 << 24) - 1
_HEADER = 9

# Frames that belong to a stream, and those that belong to the connection (stream 0).
_ON_STREAM = frozenset({DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION})
_ON_CONNECTION = frozenset({SETTINGS, PING, GOAWAY})
_FIXED_SIZE = {PRIORITY: 5, RST_STREAM: 4, PING: 8, WINDOW_UPDATE: 4}


@dataclass
class Frame:
    """A frame other than DATA, with its payload (or its first `max_payload` bytes)."""

    type: int
    flags: int
    stream: int
    payload: bytes
    length: int  # the length on the wire
    truncated: bool = False


@dataclass
class DataPiece:
    """Bytes of a DATA frame's data (padding removed) as they arrived; `last` on the frame's end."""

    stream: int
    data: bytes
    last: bool
    end_stream: bool


Item = Union[Frame, DataPiece]


def plausible_frame_header(head: bytes) -> bool:
    """Could these 9 bytes start a frame of a connection seen mid-way (default frame size)?"""
    if len(head) < _HEADER:
        return False
    length = int.from_bytes(head[0:3], "big")
    ftype, stream = head[3], int.from_bytes(head[5:9], "big")
    if ftype > CONTINUATION or length > DEFAULT_MAX_FRAME_SIZE or stream >> 31:
        return False
    return _frame_error(ftype, head[4], stream, length, DEFAULT_MAX_FRAME_SIZE) is None


def _frame_error(ftype: int, flags: int, stream: int, length: int, max_size: int) -> Optional[str]:
    if length > max_size:
        return "frame_size"
    if ftype in _ON_STREAM and stream == 0 or ftype in _ON_CONNECTION and stream != 0:
        return "bad_stream"
    fixed = _FIXED_SIZE.get(ftype)
    if fixed is not None and length != fixed or ftype == SETTINGS and length % 6:
        return "frame_size"
    if ftype == SETTINGS and flags & ACK and length:
        return "frame_size"
    return None


class FrameReader:
    """Frames of one direction. feed() returns what the bytes completed; never raises."""

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE  # the receiver's SETTINGS_MAX_FRAME_SIZE
        self.error: Optional[str] = None
        self.bytes_read = 0
        self._head = bytearray()
        self._type = self._flags = self._stream = self._length = 0
        self._left = 0  # payload bytes of the current frame not read yet
        self._payload = bytearray()
        self._pad = -1  # DATA: padding length, -1 until read
        self._in_frame = False

    def feed(self, data: bytes) -> List[Item]:
        out: List[Item] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view) and self.error is None:
            if not self._in_frame:
                need = _HEADER - len(self._head)
                self._head += view[pos:pos + need]
                pos += min(need, len(view) - pos)
                if len(self._head) == _HEADER:
                    self._start_frame(out)
                continue
            pos = self._payload_bytes(view, pos, out)
        self.bytes_read += len(data)
        return out

    # -- internals --------------------------------------------------------------------------------

    def _start_frame(self, out: List[Item]) -> None:
        head = self._head
        self._length = int.from_bytes(head[0:3], "big")
        self._type, self._flags = head[3], head[4]
        self._stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        self._head = bytearray()
        self.error = _frame_error(self._type, self._flags, self._stream, self._length, self.max_frame_size)
        if self.error is not None:
            return
        self._left, self._pad, self._in_frame = self._length, -1, True
        self._payload = bytearray()
        if self._type == DATA and not self._flags & PADDED:
            self._pad = 0
        if self._length == 0:
            self._end_frame(out)

    def _payload_bytes(self, view: memoryview, pos: int, out: List[Item]) -> int:
        take = min(self._left, len(view) - pos)
        chunk = view[pos:pos + take]
        if self._type == DATA:
            if self._pad < 0:  # the first payload byte is the pad length
                self._pad = chunk[0]
                if self._pad >= self._length:
                    self.error = "bad_padding"
                    return pos + take
                chunk, pos, take = chunk[1:], pos + 1, take - 1
                self._left -= 1
            data_left = self._left - self._pad  # data bytes of the frame not handed out yet
            data = bytes(chunk[:max(min(take, data_left), 0)])
            self._left -= take
            if data and self._left:
                out.append(DataPiece(self._stream, data, False, False))
            elif not self._left:
                out.append(DataPiece(self._stream, data, True, bool(self._flags & END_STREAM)))
                self._in_frame = False
            return pos + take
        room = self.max_payload - len(self._payload)
        if room > 0:
            self._payload += chunk[:room]
        self._left -= take
        if not self._left:
            self._end_frame(out)
        return pos + take

    def _end_frame(self, out: List[Item]) -> None:
        self._in_frame = False
        if self._type == DATA:  # an empty DATA frame (END_STREAM alone)
            out.append(DataPiece(self._stream, b"", True, bool(self._flags & END_STREAM)))
            return
        payload = bytes(self._payload)
        self._payload = bytearray()
        out.append(Frame(self._type, self._flags, self._stream, payload, self._length,
                         truncated=len(payload) < self._length))
