"""Streamed responses, decoded as they arrive.

A streamed answer is a framing (SSE here; other families bring NDJSON, JSON arrays or AWS event
streams) carrying JSON events, and an API-specific handler that turns each event into deltas
(`StreamDelta`: text, tool-call pieces, finish reason) while it accumulates the whole answer
into an AiResponseInfo. The same handler serves both uses:

- live: the pipeline feeds body bytes as the TLS reads arrive and emits a chunk event per delta;
- whole: `parse_response` runs the handler over the complete body for the final `ai.response`.

So the deltas a user sees live and the text in the final response cannot disagree.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Dict, List, NamedTuple, Optional, Protocol

from oisp_daemon.decode.eventstream import EventStreamDecoder
from oisp_daemon.decode.messages import HttpResponse
from oisp_daemon.decode.sse import SseEvent, SseParser
from oisp_daemon.decode.websocket import JSON_SEQ, RS
from oisp_daemon.providers.exchange import AiResponseInfo, StreamDelta


class JsonEvent(NamedTuple):
    event: Optional[str]  # SSE event name, if any
    data: Dict[str, Any]  # the event's JSON object
    offset: int  # body offset just past the event (maps to the kernel time of the TLS read)


def is_event_stream(resp: HttpResponse, stream_requested: bool) -> bool:
    """The response is SSE: by Content-Type, or (no Content-Type) because the request asked for it."""
    content_type = (resp.header("Content-Type") or "").lower()
    if content_type:
        return "text/event-stream" in content_type
    return stream_requested and resp.body.lstrip().startswith((b"data:", b"event:", b"id:", b":"))


def is_message_stream(resp: HttpResponse) -> bool:
    """The response is a WebSocket connection's messages, one JSON text each (decode/websocket.py)."""
    return (resp.header("Content-Type") or "").lower().startswith(JSON_SEQ)


class Framing(Protocol):
    """Splits a streamed body into JSON events, incrementally; never raises."""

    done_sentinel: bool  # the framing's own end marker was seen (OpenAI's "data: [DONE]")

    def feed(self, data: bytes) -> List[JsonEvent]: ...
    def finish(self) -> List[JsonEvent]: ...
    def parse_error(self) -> Optional[str]: ...


class EventHandler(Protocol):
    """One API's stream semantics: deltas per event, the whole answer accumulated in `out`."""

    def on_event(self, event: JsonEvent) -> List[StreamDelta]: ...
    def close(self) -> None: ...


class SseJson:
    """SSE whose events carry JSON objects; counts events that do not (the "[DONE]" sentinel
    excepted) so parsers can report them."""

    def __init__(self) -> None:
        self._parser = SseParser()
        self.bad = 0
        self.done_sentinel = False

    def feed(self, data: bytes) -> List[JsonEvent]:
        return self._json(self._parser.feed(data))

    def finish(self) -> List[JsonEvent]:
        return self._json(self._parser.finish())

    def parse_error(self) -> Optional[str]:
        return f"{self.bad} stream event(s) without a JSON object" if self.bad else None

    def _json(self, events: List[SseEvent]) -> List[JsonEvent]:
        out = []
        for sse in events:
            data = sse.data.strip()
            if data == "[DONE]":
                self.done_sentinel = True
                continue
            if not data:
                continue
            value = load_event(data)
            if isinstance(value, dict):
                out.append(JsonEvent(sse.event, value, sse.offset))
            else:
                self.bad += 1
        return out


def load_event(text: str) -> Any:
    """The JSON value of one event's text, or None when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


class StreamDecoder:
    """A framing and a handler: body bytes in, deltas out; `close` completes `out`."""

    def __init__(self, framing: Framing, handler: EventHandler, out: AiResponseInfo) -> None:
        self.framing = framing
        self.handler = handler
        self.out = out

    def feed(self, data: bytes) -> List[StreamDelta]:
        return self._deltas(self.framing.feed(data))

    def close(self) -> List[StreamDelta]:
        """End of body: the last events, then the handler's finishing touches on `out`."""
        deltas = self._deltas(self.framing.finish())
        self.handler.close()
        self.out.parse_error = self.out.parse_error or self.framing.parse_error()
        self.out.stream_finished = self.out.stream_finished or self.framing.done_sentinel
        return deltas

    def _deltas(self, events: List[JsonEvent]) -> List[StreamDelta]:
        deltas: List[StreamDelta] = []
        for event in events:
            produced = self.handler.on_event(event)
            for delta in produced:
                delta.offset = event.offset
            if produced and self.out.first_token_offset is None and any(d.carries_output for d in produced):
                self.out.first_token_offset = event.offset
            deltas.extend(produced)
        return deltas


def decode_whole(decoder: StreamDecoder, body: bytes) -> None:
    """Run a decoder over a complete body (parse_response of a streamed answer)."""
    decoder.feed(body)
    decoder.close()


class JsonLines:
    """Newline-delimited JSON objects (Ollama's application/x-ndjson, Cohere v1's
    application/stream+json). A line too long to be an event is dropped and counted."""

    done_sentinel = False

    def __init__(self, max_line: int = 16 << 20) -> None:
        self._buf = bytearray()
        self._base = 0  # body offset of self._buf[0]
        self._skipping = False  # inside an over-long line: drop bytes up to its newline
        self.max_line = max_line
        self.bad = 0

    def feed(self, data: bytes) -> List[JsonEvent]:
        self._buf += data
        events: List[JsonEvent] = []
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                self._line(bytes(self._buf[start:end]), self._base + end + 1, events)
            start = end + 1
        del self._buf[:start]
        self._base += start
        if len(self._buf) > self.max_line:
            self._base += len(self._buf)
            self._buf = bytearray()
            if not self._skipping:
                self.bad += 1
            self._skipping = True
        return events

    def finish(self) -> List[JsonEvent]:
        events: List[JsonEvent] = []
        if self._buf and not self._skipping:
            self._line(bytes(self._buf), self._base + len(self._buf), events)
        self._base += len(self._buf)
        self._buf = bytearray()
        return events

    def parse_error(self) -> Optional[str]:
        return f"{self.bad} stream line(s) without a JSON object" if self.bad else None

    def _line(self, line: bytes, offset: int, events: List[JsonEvent]) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        value = load_event(text)
        if isinstance(value, dict):
            events.append(JsonEvent(None, value, offset))
        else:
            self.bad += 1


class JsonSeq:
    """JSON text sequences (RFC 7464: RS, a JSON text, LF), how the WebSocket decoder hands out
    a connection's messages (decode/websocket.py): one event per message. A record ends where
    the next RS begins, or (to decode live) at the end of what was fed when it ends in LF and
    parses; bounded like JsonLines."""

    done_sentinel = False

    def __init__(self, max_record: int = 16 << 20) -> None:
        self._buf = bytearray()
        self._base = 0  # body offset of self._buf[0]
        self._tried = -1  # length of _buf when its last record last failed to parse
        self.max_record = max_record
        self.bad = 0

    def feed(self, data: bytes) -> List[JsonEvent]:
        self._buf += data
        events: List[JsonEvent] = []
        while self._buf:
            end = self._buf.find(RS, 1)
            if end < 0:
                break
            self._record(bytes(self._buf[:end]), self._base + end, events)
            self._consume(end)
        if self._buf.endswith(b"\n") and len(self._buf) != self._tried:
            value = load_event(self._buf[1:].decode("utf-8", "replace")) if self._buf[:1] == RS else None
            if isinstance(value, dict):
                events.append(JsonEvent(None, value, self._base + len(self._buf)))
                self._consume(len(self._buf))
            else:
                self._tried = len(self._buf)
        if len(self._buf) > self.max_record:
            self.bad += 1
            self._consume(len(self._buf))
        return events

    def finish(self) -> List[JsonEvent]:
        events: List[JsonEvent] = []
        if self._buf:
            self._record(bytes(self._buf), self._base + len(self._buf), events)
            self._consume(len(self._buf))
        return events

    def parse_error(self) -> Optional[str]:
        return f"{self.bad} message(s) without a JSON object" if self.bad else None

    def _consume(self, size: int) -> None:
        del self._buf[:size]
        self._base += size
        self._tried = -1

    def _record(self, record: bytes, offset: int, events: List[JsonEvent]) -> None:
        value = load_event(record[1:].decode("utf-8", "replace")) if record[:1] == RS else None
        if isinstance(value, dict):
            events.append(JsonEvent(None, value, offset))
        else:
            self.bad += 1


class JsonArray:
    """A JSON array streamed one element at a time (Gemini's streamGenerateContent without
    alt=sse): `[{...},\r\n{...}]`. Scans for the end of each top-level object, minding
    strings and escapes, so an element is parsed once it is whole; bounded like JsonLines."""

    done_sentinel = False
    _SPECIAL = re.compile(rb'[{}\[\]"\\]')

    def __init__(self, max_element: int = 16 << 20) -> None:
        self._buf = bytearray()
        self._base = 0  # body offset of self._buf[0]
        self._depth = 0  # 0 between elements, >0 inside one
        self._in_string = False
        self._start = -1  # index in _buf where the current element began; -1 when dropped
        self._scan = 0
        self._dropping = False  # inside an element too large to keep
        self.max_element = max_element
        self.bad = 0

    def feed(self, data: bytes) -> List[JsonEvent]:
        self._buf += data
        events: List[JsonEvent] = []
        buf, i = self._buf, self._scan
        while True:
            m = self._SPECIAL.search(buf, i)
            if m is None:
                break
            i, byte = m.start(), buf[m.start()]
            if byte == 0x5C:  # backslash: skips the next byte (only meaningful inside strings)
                if i + 1 >= len(buf):
                    break  # the escaped byte has not arrived yet
                i += 2
                continue
            i += 1
            if self._in_string:
                self._in_string = byte != 0x22
            elif byte == 0x22:
                self._in_string = self._depth > 0
            elif byte in (0x7B, 0x5B) and (self._depth > 0 or byte == 0x7B):  # {, or [ inside one
                if self._depth == 0:
                    self._start = i - 1
                self._depth += 1
            elif byte in (0x7D, 0x5D) and self._depth > 0:
                self._depth -= 1
                if self._depth == 0:
                    if not self._dropping:
                        self._element(bytes(buf[self._start:i]), self._base + i, events)
                    self._start, self._dropping = -1, False
        keep = self._start if self._start >= 0 else i
        del buf[:keep]
        self._base += keep
        self._scan = i - keep
        if self._start >= 0:
            self._start = 0
        if len(buf) > self.max_element and not self._dropping:  # too large to hold: drop, count
            self._base += len(buf)
            buf.clear()
            self._scan, self._start, self._dropping = 0, -1, True
            self.bad += 1
        elif self._dropping:
            self._base += len(buf)
            buf.clear()
            self._scan = 0
        return events

    def finish(self) -> List[JsonEvent]:
        if self._depth > 0 and not self._dropping:
            self.bad += 1  # an element cut off by the end of the body
        return []

    def parse_error(self) -> Optional[str]:
        return f"{self.bad} stream element(s) without a JSON object" if self.bad else None

    def _element(self, raw: bytes, offset: int, events: List[JsonEvent]) -> None:
        value = load_event(raw.decode("utf-8", "replace"))
        if isinstance(value, dict):
            events.append(JsonEvent(None, value, offset))
        else:
            self.bad += 1


class AwsEventStream:
    """AWS event stream messages as JSON events (Bedrock): the `:event-type` header names the
    event; an `exception` message becomes an event named "exception" with the exception type
    in `__type`; InvokeModelWithResponseStream's `chunk` events carry the model's own JSON
    base64-encoded in `bytes`, which is unwrapped. CRCs are checked by the decoder."""

    done_sentinel = False

    def __init__(self) -> None:
        self._decoder = EventStreamDecoder()
        self.bad = 0

    def feed(self, data: bytes) -> List[JsonEvent]:
        events = []
        for message in self._decoder.feed(data):
            value = load_event(message.payload.decode("utf-8", "replace")) if message.payload else {}
            if not isinstance(value, dict):
                self.bad += 1
                continue
            if message.message_type == "exception":
                value = dict(value, __type=message.header(":exception-type") or "exception")
                events.append(JsonEvent("exception", value, message.offset))
                continue
            name = message.header(":event-type")
            if name == "chunk" and isinstance(value.get("bytes"), str):
                try:
                    inner = load_event(base64.b64decode(value["bytes"], validate=True).decode("utf-8", "replace"))
                except (binascii.Error, ValueError):
                    inner = None
                if not isinstance(inner, dict):
                    self.bad += 1
                    continue
                value = inner
            events.append(JsonEvent(name, value, message.offset))
        return events

    def finish(self) -> List[JsonEvent]:
        self._decoder.finish()
        return []

    def parse_error(self) -> Optional[str]:
        errors = [e for e in (self._decoder.error, f"{self.bad} stream event(s) without a JSON object" if self.bad else None) if e]
        return "; ".join(errors) or None
