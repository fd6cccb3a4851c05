"""Which requests belong to one agent conversation, and which tool call a tool result answers.

An agent loop is a chain of requests: the model asks for tool calls in a response, the agent runs
them and sends the results in its next request, which (chat APIs being stateless) also resends
the whole history. From that the correlator derives, per process:

- A trace id shared by the requests of one conversation (the envelope's `trace_context`): the
  trace of the request whose response made a call this request answers (tool call ids are
  unique, so they link across requests even when the history is not resent, as with the
  Responses API's previous_response_id), else a hash of the process, system prompt and first
  user message (what every request of one conversation starts with). Each request is a span.
- For each tool result, the `agent.tool_call` it answers: by call id, or by name where the API
  has no ids (Gemini without ids, Cohere v1, Ollama): the most recent unanswered call of that
  name in the same conversation.
- Whether a result was already reported: a result resent in every later request of the
  conversation gives one `agent.tool_result`, not one per request.

All state is bounded (LRU): a long-running daemon forgets the oldest conversations first, and a
forgotten result resent much later is reported again rather than memory growing.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from typing import Any, Dict, Hashable, List, Optional, Tuple

from oisp_daemon.events.tool_result import KnownCall, ToolResultLink
from oisp_daemon.providers.exchange import AiRequestInfo, Message

MAX_CALLS = 4096  # tool calls remembered by id
MAX_NAMED = 1024  # (process, conversation, tool name) lists of calls not yet answered
MAX_UNANSWERED_PER_NAME = 32
MAX_REPORTED = 16384  # tool results already reported
# Roles of messages that carry a tool's result ("function": OpenAI's legacy function calling).
TOOL_RESULT_ROLES = ("tool", "function")


def _hex(*parts: str, length: int) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:length]


def _first(messages: List[Message], role: str) -> Optional[str]:
    return next((m.content for m in messages if m.role == role and m.content), None)


class Correlator:
    """Owned by the pipeline's thread (no locks): fed every request and response it turns into
    events, in order."""

    def __init__(self, max_calls: int = MAX_CALLS, max_named: int = MAX_NAMED, max_reported: int = MAX_REPORTED) -> None:
        self.max_calls, self.max_named, self.max_reported = max_calls, max_named, max_reported
        self._calls: "OrderedDict[Tuple[int, str], KnownCall]" = OrderedDict()
        self._unanswered: "OrderedDict[Tuple[int, str, str], List[KnownCall]]" = OrderedDict()
        self._reported: "OrderedDict[Hashable, None]" = OrderedDict()

    # -- requests -----------------------------------------------------------------------------

    def on_request(self, pid: int, info: AiRequestInfo, request_event: Dict[str, Any]) -> Tuple[str, List[ToolResultLink]]:
        """The request's trace id (stamped on `request_event`) and the tool results in it that
        were not reported before, each with the call it answers."""
        trace = self._trace(pid, info)
        stamp(request_event, trace)
        return trace, self._new_results(pid, trace, info.messages)

    def _trace(self, pid: int, info: AiRequestInfo) -> str:
        for message in info.messages:
            if message.tool_call_id:
                call = self._calls.get((pid, message.tool_call_id))
                if call is not None:
                    return call.trace_id
        messages = info.messages
        system = info.system_prompt or _first(messages, "system") or ""
        user = _first(messages, "user")
        if user is None and not system:
            first = messages[0] if messages else None
            if first is None or not (first.content or first.tool_call_id):
                return os.urandom(16).hex()  # nothing stable to follow (embeddings): a trace of its own
            user = first.content or first.tool_call_id or ""
        return _hex(str(pid), system, user or "", length=32)

    def _new_results(self, pid: int, trace: str, messages: List[Message]) -> List[ToolResultLink]:
        links: List[ToolResultLink] = []
        by_name: Dict[str, List[int]] = {}  # name-only results new in this request: their places in links
        ordinals: Dict[str, int] = {}
        for message in messages:
            if message.role not in TOOL_RESULT_ROLES:
                continue
            if message.tool_call_id:
                if self._seen(("id", pid, message.tool_call_id)):
                    continue
                call = self._calls.get((pid, message.tool_call_id))
                if call is not None:
                    self._answered(pid, call)
                links.append(ToolResultLink(message, call))
                continue
            name = message.name or ""
            # The k-th result of a tool in the history is the same result each time it is resent.
            ordinal = ordinals[name] = ordinals.get(name, -1) + 1
            if self._seen(("name", pid, trace, name, ordinal)):
                continue
            by_name.setdefault(name, []).append(len(links))
            links.append(ToolResultLink(message, None))
        for name, places in by_name.items():
            calls = self._take_unanswered(pid, trace, name, len(places)) if name else []
            for place, call in zip(places[len(places) - len(calls):], calls):
                links[place] = ToolResultLink(links[place].message, call)
        return links

    def _seen(self, key: Hashable) -> bool:
        """Whether `key` was reported before; notes it as reported either way."""
        if key in self._reported:
            self._reported.move_to_end(key)
            return True
        self._reported[key] = None
        if len(self._reported) > self.max_reported:
            self._reported.popitem(last=False)
        return False

    def _take_unanswered(self, pid: int, trace: str, name: str, count: int) -> List[KnownCall]:
        """The `count` most recent unanswered calls of `name`, oldest first, now answered."""
        pending = self._unanswered.get((pid, trace, name))
        if not pending:
            return []
        taken = pending[-count:]
        del pending[-count:]
        return taken

    def _answered(self, pid: int, call: KnownCall) -> None:
        pending = self._unanswered.get((pid, call.trace_id, call.name))
        if pending and call in pending:
            pending.remove(call)

    # -- responses ----------------------------------------------------------------------------

    def on_response(self, pid: int, trace: str, response_event: Dict[str, Any], tool_call_events: List[Dict[str, Any]]) -> None:
        """Stamp the response and its tool calls with the request's trace, and remember the calls
        for the results that later requests will carry."""
        stamp(response_event, trace)
        for event in tool_call_events:
            stamp(event, trace)
            data = event["data"]
            call = KnownCall(event_id=event["event_id"], name=data["tool"]["name"], trace_id=trace, call_id=data.get("call_id"))
            if call.call_id:
                self._calls[(pid, call.call_id)] = call
                self._calls.move_to_end((pid, call.call_id))
                if len(self._calls) > self.max_calls:
                    self._calls.popitem(last=False)
            key = (pid, trace, call.name)
            pending = self._unanswered.setdefault(key, [])
            self._unanswered.move_to_end(key)
            pending.append(call)
            del pending[:-MAX_UNANSWERED_PER_NAME]
            if len(self._unanswered) > self.max_named:
                self._unanswered.popitem(last=False)


def stamp(event: Dict[str, Any], trace_id: str) -> None:
    """Set the envelope's W3C trace context: the conversation's trace, the request's span (the
    request, its response, and the tool calls and results it carries share one)."""
    request_id = str(event.get("data", {}).get("request_id", event["event_id"]))
    event["trace_context"] = {"trace_id": trace_id, "span_id": _hex(request_id, length=16)}
