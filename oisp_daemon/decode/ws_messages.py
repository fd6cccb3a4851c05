"""WebSocket messages of one direction: frames reassembled (fragmentation), decompressed
(permessage-deflate, RFC 7692), control frames taken apart.

permessage-deflate compresses each message as raw DEFLATE with its trailing 00 00 ff ff removed.
With context takeover the sender keeps its LZ77 window across messages, so one inflater lives as
long as the connection and every compressed message must pass through it in order; without
(`*_no_context_takeover`) each message starts afresh. An inflater with a 2^15-byte window reads
any smaller window the sender chose (`*_max_window_bits`), so window bits need no setting here.

Memory is bounded: a message keeps at most `max_bytes` of payload and of decompressed data. A
message that inflates beyond that (a decompression bomb) is cut there, partial "body_limit", and
inflating stops; with context takeover the window is then unknown, so the later compressed
messages of that direction cannot be read ("deflate_context_lost").
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .ws_frames import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, Frame, FrameParser

_TAIL = b"\x00\x00\xff\xff"
UNEXPECTED_CONTINUATION = "unexpected_continuation"
UNFINISHED_MESSAGE = "unfinished_message"  # a new data frame while a fragmented one was open


@dataclass
class Message:
    opcode: int  # TEXT or BINARY
    data: bytes  # decompressed, at most max_bytes
    ts_start_ns: int
    ts_end_ns: int
    partial_reasons: List[str] = field(default_factory=list)


@dataclass
class Close:
    code: Optional[int]
    reason: str
    ts_ns: int


class Inflater:
    """permessage-deflate decompression of one direction."""

    def __init__(self, takeover: bool, max_bytes: int) -> None:
        self.takeover = takeover
        self.max_bytes = max_bytes
        self.lost = False  # the shared window is unknown: later messages cannot be inflated
        self._zlib = zlib.decompressobj(-15)

    def inflate(self, payload: bytes, cut: bool) -> Tuple[bytes, Optional[str]]:
        """The message's data, and why it is partial (None when whole). `cut`: the payload was
        not all stored (the frame exceeded the limit)."""
        if self.lost:
            return b"", "deflate_context_lost"
        inflater = self._zlib if self.takeover else zlib.decompressobj(-15)
        try:
            data = inflater.decompress(payload + (b"" if cut else _TAIL), self.max_bytes + 1)
        except zlib.error:
            self.lost = self.takeover
            return b"", "bad_deflate"
        if len(data) > self.max_bytes or inflater.unconsumed_tail or cut:
            self.lost = self.takeover
            return data[: self.max_bytes], "body_limit"
        return data, None


class MessageReader:
    """Frames of one direction in, messages and close frames out."""

    def __init__(self, max_bytes: int, inflater: Optional[Inflater]) -> None:
        self.frames = FrameParser(max_bytes, deflate=inflater is not None)
        self.max_bytes = max_bytes
        self.inflater = inflater
        self.error: Optional[str] = None  # why this direction is no longer readable
        self.control_frames = 0  # pings and pongs seen (nothing else to say about them)
        self._frames: List[Frame] = []  # the fragments of the message in progress
        self._size = 0
        self._cut = False

    def feed(self, data: bytes, ts_ns: int) -> List[object]:
        """Bytes of one TLS call; the Messages and Close frames they completed."""
        out: List[object] = []
        if self.error is not None:
            return out
        for frame in self.frames.feed(data, ts_ns):
            self._frame(frame, out)
            if self.error is not None:
                return out
        self.error = self.frames.error
        return out

    def _frame(self, frame: Frame, out: List[object]) -> None:
        if frame.opcode == CLOSE:
            code = int.from_bytes(frame.payload[:2], "big") if len(frame.payload) >= 2 else None
            out.append(Close(code, frame.payload[2:].decode("utf-8", "replace"), frame.ts_end_ns))
            return
        if frame.opcode in (PING, PONG):
            self.control_frames += 1
            return
        if frame.opcode == CONTINUATION and not self._frames:
            self.error = UNEXPECTED_CONTINUATION
            return
        if frame.opcode in (TEXT, BINARY) and self._frames:
            self.error = UNFINISHED_MESSAGE
            return
        self._frames.append(frame)
        room = self.max_bytes - self._size
        if frame.truncated or len(frame.payload) > room:
            self._cut = True
        kept = frame.payload[: max(room, 0)]
        self._frames[-1] = Frame(frame.fin, frame.rsv1, frame.opcode, kept, frame.length,
                                 frame.ts_start_ns, frame.ts_end_ns)
        self._size += len(kept)
        if frame.fin:
            out.append(self._message())

    def _message(self) -> Message:
        frames, self._frames = self._frames, []
        cut, self._cut, self._size = self._cut, False, 0
        first = frames[0]
        payload = b"".join(f.payload for f in frames)
        reasons: List[str] = []
        if first.rsv1 and self.inflater is not None:
            payload, why = self.inflater.inflate(payload, cut)
            if why:
                reasons.append(why)
        elif cut:
            reasons.append("body_limit")
        return Message(first.opcode, payload, first.ts_start_ns, frames[-1].ts_end_ns, reasons)
