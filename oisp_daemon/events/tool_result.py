"""OISP `agent.tool_result` events: the results of earlier tool calls, as a later request sends
them back to the model (OpenAI tool and legacy function messages, Anthropic tool_result blocks, Gemini
functionResponse parts, Responses function_call_output items, Bedrock toolResult blocks, Cohere
tool results).

The request is where the sensor sees a result, so the event shares the `ai.request`'s time,
host, actor and process. Which call it answers is the correlation module's finding
(events/correlation.py): the event links to that `agent.tool_call` as its parent.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from oisp_daemon.events.envelope import derived_envelope, make_confidence, make_source
from oisp_daemon.providers.exchange import Message
from oisp_daemon.redact.digest import short_sha256 as short_hash

CAPTURE_METHOD = "tls_boundary"


@dataclass(frozen=True)
class KnownCall:
    """An `agent.tool_call` the sensor emitted, as far as a later result needs it."""

    event_id: str
    name: str
    trace_id: str
    call_id: Optional[str] = None


@dataclass(frozen=True)
class ToolResultLink:
    """A tool result not reported before, and the call it answers (None: that call was not seen,
    e.g. it was made before the sensor started)."""

    message: Message
    call: Optional[KnownCall]


def _result_value(text: str) -> Any:
    """The result as the tool gave it: a JSON object or array stays structured, anything else
    (plain text, a JSON scalar) is the text."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return value if isinstance(value, (dict, list)) else text


def call_id_of(link: ToolResultLink) -> str:
    """The schema's required call_id: the API's id, else the answered call's id, else (APIs that
    link by name only, a call without an id) the answered tool_call event's id, else the name."""
    message, call = link.message, link.call
    if message.tool_call_id:
        return message.tool_call_id
    if call is not None:
        return call.call_id or call.event_id
    return "name:" + (message.name or "unknown")


def build_tool_result_events(links: List[ToolResultLink], request_event: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One `agent.tool_result` per link, derived from the `ai.request` that carried the results."""
    events = []
    for link in links:
        message, call = link.message, link.call
        data: Dict[str, Any] = {"call_id": call_id_of(link)}
        name = message.name or (call.name if call else None)
        if name:
            data["tool"] = {"name": name}
        data["success"] = not message.is_error
        if message.is_error:
            data["error"] = {"type": "tool_error"}
        if message.content is not None:
            data["result"] = _result_value(message.content)
            data["result_hash"] = short_hash(message.content)
            data["result_size_bytes"] = len(message.content.encode("utf-8", "surrogatepass"))
        data["request_id"] = request_event["data"]["request_id"]
        related = [(call.event_id, "parent")] if call else []
        related.append((request_event["event_id"], "related"))
        event = derived_envelope(
            "agent.tool_result",
            request_event,
            make_source(CAPTURE_METHOD, "ssl_write"),
            make_confidence(
                completeness=request_event["confidence"]["completeness"],
                reasons=["tool_result_observed"] + (["tool_call_linked"] if call else []),
                limitations=list(request_event["confidence"].get("limitations", ())) + ([] if call else ["tool_call_not_seen"]),
                content_source="tls_boundary",
                process_attribution="direct",
            ),
            data=data,
            related=related,
        )
        if "trace_context" in request_event:  # the request's conversation and span
            event["trace_context"] = dict(request_event["trace_context"])
        events.append(event)
    return events
