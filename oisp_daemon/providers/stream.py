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

import json
from typing import Any, Dict, List, NamedTuple, Optional, Protocol

from oisp_daemon.decode.messages import HttpResponse
from oisp_daemon.decode.sse import SseEvent, SseParser
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
