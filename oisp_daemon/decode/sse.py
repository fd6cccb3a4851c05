"""Incremental Server-Sent Events parser (WHATWG HTML "Interpreting an event stream").

Streaming AI APIs answer with text/event-stream; each event is one chunk of the model's output.
The parser works on body bytes as they arrive, and records for each event the byte offset in the
body just past its terminating blank line, so that callers can map an event to the TLS call that
completed it (HttpMessage.ts_at_offset) and measure time to first token and inter-chunk gaps.

Lines are split on bytes (CR and LF never occur inside a UTF-8 sequence), so a multi-byte character
split across feeds needs no special care; each line is decoded as UTF-8 with invalid sequences
replaced, never raised.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

_BOM = b"\xef\xbb\xbf"
_EOL = re.compile(rb"[\r\n]")


@dataclass
class SseEvent:
    event: Optional[str]  # the "event" field; None when the event has none (spec: "message")
    data: str  # "data" lines joined with "\n"
    id: Optional[str]  # last event ID in effect (sticky across events, as the spec says)
    offset: int  # byte offset in the body just past the event's terminating blank line


class SseParser:
    """Feed body bytes in any pieces; get events as their blank line arrives.

    A CR at the very end of the data fed so far is held back until the next byte shows whether it
    is half of a CRLF, so a CRLF split across feeds never yields an extra empty line and event
    offsets do not depend on how the body was cut.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # body offset of self._buf[0]
        self._scan = 0  # where to resume looking for a line end in self._buf
        self._bom_checked = False
        self._data: List[str] = []
        self._event: Optional[str] = None
        self._last_id: Optional[str] = None
        # True when finish() returned a final event that had no terminating blank line.
        self.truncated = False

    def feed(self, data: bytes) -> List[SseEvent]:
        self._buf += data
        if not self._bom_checked:
            if len(self._buf) < len(_BOM) and _BOM.startswith(bytes(self._buf)):
                return []
            if self._buf.startswith(_BOM):
                del self._buf[: len(_BOM)]
                self._base += len(_BOM)
            self._bom_checked = True
        return self._lines(final=False)

    def finish(self) -> List[SseEvent]:
        """End of body: process a last unterminated line; return an unterminated event with data."""
        self._bom_checked = True
        events = self._lines(final=True)
        if self._buf:
            self._field(bytes(self._buf))
            self._base += len(self._buf)
            self._buf = bytearray()
            self._scan = 0
        if self._data:
            events.append(self._dispatch(self._base))
            self.truncated = True
        self._event = None
        return events

    def _lines(self, final: bool) -> List[SseEvent]:
        buf = self._buf
        events: List[SseEvent] = []
        pos = 0
        while True:
            m = _EOL.search(buf, self._scan)
            if m is None:
                break
            i = m.start()
            if buf[i] == 0x0D:
                if i + 1 == len(buf) and not final:
                    break  # maybe the CR of a CRLF whose LF has not arrived yet
                end = i + 2 if i + 1 < len(buf) and buf[i + 1] == 0x0A else i + 1
            else:
                end = i + 1
            if i != pos:
                self._field(bytes(buf[pos:i]))
            elif self._data:
                events.append(self._dispatch(self._base + end))
            else:
                self._event = None  # a blank line without data only resets the event type
            pos = self._scan = end
        if pos:
            del buf[:pos]
            self._base += pos
        self._scan = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
        return events

    def _field(self, line: bytes) -> None:
        if line.startswith(b":"):
            return  # comment
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:  # the spec ignores ids containing NUL
                self._last_id = value.decode("utf-8", "replace")
        # "retry" and unknown fields do not affect the events we report.

    def _dispatch(self, offset: int) -> SseEvent:
        event = SseEvent(
            event=self._event or None,
            data="\n".join(self._data),
            id=self._last_id or None,
            offset=offset,
        )
        self._data = []
        self._event = None
        return event


def parse_sse(body: bytes) -> List[SseEvent]:
    """All events of a complete body (a final unterminated event with data included)."""
    parser = SseParser()
    return parser.feed(body) + parser.finish()
