"""Streamed responses: is the body an event stream, and its events as JSON objects."""
from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, NamedTuple, Optional

from oisp_daemon.decode.messages import HttpResponse
from oisp_daemon.decode.sse import parse_sse


class JsonEvent(NamedTuple):
    event: Optional[str]  # SSE event name, if any
    data: Dict[str, Any]  # the event's JSON object
    offset: int  # SseEvent.offset: body offset just past the event


def is_event_stream(resp: HttpResponse, stream_requested: bool) -> bool:
    """The response is SSE: by Content-Type, or (no Content-Type) because the request asked for it."""
    content_type = (resp.header("Content-Type") or "").lower()
    if content_type:
        return "text/event-stream" in content_type
    return stream_requested and resp.body.lstrip().startswith((b"data:", b"event:", b"id:", b":"))


class JsonEvents:
    """The JSON-object events of an SSE body; counts events whose data is not a JSON object
    (the "[DONE]" sentinel excepted) so parsers can report them."""

    def __init__(self, body: bytes) -> None:
        self.bad = 0
        self.done_sentinel = False  # OpenAI-style "data: [DONE]" ended the stream
        self._events: List[JsonEvent] = []
        for sse in parse_sse(body):
            data = sse.data.strip()
            if data == "[DONE]":
                self.done_sentinel = True
                continue
            if not data:
                continue
            try:
                value = json.loads(data)
            except (ValueError, RecursionError):
                value = None
            if isinstance(value, dict):
                self._events.append(JsonEvent(sse.event, value, sse.offset))
            else:
                self.bad += 1

    def __iter__(self) -> Iterator[JsonEvent]:
        return iter(self._events)

    def parse_error(self) -> Optional[str]:
        return f"{self.bad} stream event(s) without a JSON object" if self.bad else None
