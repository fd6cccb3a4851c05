"""WebSocket frames (RFC 6455 section 5) of one direction, parsed incrementally.

Bytes arrive as the traced process's TLS calls deliver them, cut anywhere. The parser keeps at
most one frame header (14 bytes) and `max_payload` bytes of one payload: a longer payload is
followed (so that the next frame is found) but not stored, and its frame is `truncated`. The
length field is read as a number only; nothing is allocated from it, so a frame claiming 2^63
bytes costs nothing (it is an error: the most significant bit must be 0).

A frame the RFC forbids (reserved bits, unknown opcode, a fragmented or oversized control frame,
RSV1 without permessage-deflate) makes the direction unreadable: frame boundaries after it
cannot be trusted. `error` then names why and further input is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA
_KNOWN = frozenset({CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG})
MAX_CONTROL_PAYLOAD = 125

# Why a direction cannot be framed any more (FrameParser.error).
RESERVED_BITS = "reserved_bits"
BAD_OPCODE = "bad_opcode"
BAD_CONTROL_FRAME = "bad_control_frame"
BAD_LENGTH = "bad_length"


@dataclass
class Frame:
    fin: bool
    rsv1: bool  # permessage-deflate: set on the first frame of a compressed message
    opcode: int
    payload: bytes  # unmasked; only the first max_payload bytes when truncated
    length: int  # the payload length the frame header announced
    ts_start_ns: int  # TLS call that carried the header's first byte
    ts_end_ns: int  # TLS call that carried the payload's last byte
    truncated: bool = False

    @property
    def is_control(self) -> bool:
        return self.opcode >= 0x8


def unmask(data: bytes, key: bytes, offset: int) -> bytes:
    """XOR `data` with the 4-byte masking key, `data` starting at payload `offset`."""
    if not data:
        return data
    shift = offset % 4
    rotated = key[shift:] + key[:shift]
    mask = (rotated * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(data), "big")


class FrameParser:
    """Frames of one direction; `deflate`: permessage-deflate was negotiated (RSV1 allowed)."""

    def __init__(self, max_payload: int, deflate: bool = False) -> None:
        self.max_payload = max_payload
        self.deflate = deflate
        self.error: Optional[str] = None
        self._head = bytearray()  # header bytes of the frame being read
        self._frame: Optional[Frame] = None  # header parsed, payload in progress
        self._key: Optional[bytes] = None
        self._remaining = 0  # payload bytes still to come
        self._seen = 0  # payload bytes seen (for unmasking at the right offset)
        self._payload = bytearray()

    def feed(self, data: bytes, ts_ns: int) -> List[Frame]:
        """Bytes of one TLS call; the frames they completed, in order."""
        out: List[Frame] = []
        view = memoryview(data)
        pos = 0
        while self.error is None and (pos < len(view) or (self._frame is not None and not self._remaining)):
            if self._frame is None:
                pos = self._read_head(view, pos, ts_ns)
                continue
            take = min(self._remaining, len(view) - pos)
            piece = bytes(view[pos : pos + take])
            pos += take
            room = self.max_payload - len(self._payload)
            if room > 0 and piece:
                kept = piece[:room]
                self._payload += unmask(kept, self._key, self._seen) if self._key else kept
            if take > room:
                self._frame.truncated = True
            self._seen += take
            self._remaining -= take
            if not self._remaining:
                frame, self._frame = self._frame, None
                frame.payload, frame.ts_end_ns = bytes(self._payload), ts_ns
                self._payload = bytearray()
                out.append(frame)
        return out

    def _read_head(self, view: memoryview, pos: int, ts_ns: int) -> int:
        """Collect header bytes from view[pos:]; parse once whole. Returns the new position."""
        if not self._head:
            self._head_ts = ts_ns
        while True:  # at most three rounds: the first two bytes tell the rest of the size
            missing = self._head_size() - len(self._head)
            if not missing:
                self._parse_head()
                return pos
            if pos == len(view):
                return pos
            piece = view[pos : pos + missing]
            self._head += piece
            pos += len(piece)

    def _head_size(self) -> int:
        """Bytes the header has, as far as its first two bytes tell."""
        if len(self._head) < 2:
            return 2
        code = self._head[1] & 0x7F
        return 2 + (2 if code == 126 else 8 if code == 127 else 0) + (4 if self._head[1] & 0x80 else 0)

    def _parse_head(self) -> None:
        head, self._head = bytes(self._head), bytearray()
        b0, b1 = head[0], head[1]
        fin, rsv1, opcode = bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F
        code = b1 & 0x7F
        pos = 2
        if code == 126:
            length, pos = int.from_bytes(head[2:4], "big"), 4
        elif code == 127:
            length, pos = int.from_bytes(head[2:10], "big"), 10
        else:
            length = code
        if b0 & 0x30:
            self.error = RESERVED_BITS
        elif opcode not in _KNOWN:
            self.error = BAD_OPCODE
        elif length >> 63:
            self.error = BAD_LENGTH
        elif opcode >= 0x8 and (not fin or length > MAX_CONTROL_PAYLOAD):
            self.error = BAD_CONTROL_FRAME
        elif rsv1 and (not self.deflate or opcode in (CONTINUATION,) or opcode >= 0x8):
            self.error = RESERVED_BITS
        if self.error is not None:
            return
        self._key = head[pos : pos + 4] if b1 & 0x80 else None
        self._frame = Frame(fin, rsv1, opcode, b"", length, self._head_ts, self._head_ts)
        self._remaining, self._seen = length, 0
