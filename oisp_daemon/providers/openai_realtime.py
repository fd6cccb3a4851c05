"""OpenAI's APIs over WebSocket: the Responses API in WebSocket mode and the Realtime API.

Both send JSON events; the WebSocket decoder makes each `response.create` and the server events
up to the end of that response one exchange (decode/websocket.py), with the client's messages as
the request body and the server's as the response body, one JSON text each (JsonSeq).

- Responses API (wss://.../v1/responses): `response.create` carries the same top-level fields as
  POST /v1/responses (the stream is implicit) and the server sends the same events as the SSE
  form, so the openai family's Responses handler reads them as they are.
- Realtime API (wss://.../v1/realtime?model=...): the request is spread over messages
  (session.update with instructions and tools, conversation.item.create with the user's input,
  response.create); the answer streams as response.text.delta / response.output_text.delta, or
  response.audio_transcript.delta for speech (its transcript is the answer's text), tool calls as
  function_call_arguments deltas, and response.done carries the whole response with usage.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional
from urllib.parse import parse_qs, urlsplit

from oisp_daemon.decode.messages import HttpRequest
from oisp_daemon.providers.errors import stream_error
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo, Message, StreamDelta, ToolCall, ToolDefinition, Usage
from oisp_daemon.providers.fields import as_dict, as_int, as_list, as_str, nonempty
from oisp_daemon.providers.parsing import set_error
from oisp_daemon.providers.prompt import make_message, system_prompt
from oisp_daemon.providers.stream import JsonEvent, JsonSeq

API_REALTIME = "openai.realtime"

_TEXT_DELTAS = frozenset({"response.text.delta", "response.output_text.delta",
                          "response.audio_transcript.delta", "response.output_audio_transcript.delta"})
# Content part types whose text is what the model said: text, or the transcript of its audio.
_OUTPUT_PARTS = {"text": "text", "output_text": "text", "audio": "transcript", "output_audio": "transcript"}
_INPUT_PARTS = {"input_text": "text", "text": "text", "input_audio": "transcript"}


def client_messages(req: HttpRequest) -> List[Dict[str, Any]]:
    """The client's JSON messages of one exchange (the request body), oldest first."""
    framing = JsonSeq()
    events = framing.feed(req.body) + framing.finish()
    return [event.data for event in events]


def response_create(messages: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The exchange's response.create (the last message), without its "type"."""
    last = messages[-1] if messages else {}
    return {k: v for k, v in last.items() if k != "type"} if as_str(last.get("type")) == "response.create" else {}


def realtime_request(info: AiRequestInfo, req: HttpRequest, messages: List[Dict[str, Any]]) -> None:
    """Model, instructions, input and tools of a Realtime response, from the session's
    messages and the response.create (whose own settings win for that response)."""
    info.streaming = True
    query = parse_qs(urlsplit(req.target).query)
    info.model = (query.get("model") or [None])[0]
    instructions: Optional[str] = None
    tools: List[Any] = []
    for message in messages:
        kind = as_str(message.get("type"))
        settings = as_dict(message.get("session")) if kind == "session.update" else \
            as_dict(message.get("response")) if kind == "response.create" else {}
        instructions = as_str(settings.get("instructions")) or instructions
        tools = as_list(settings.get("tools")) or tools
        info.model = as_str(settings.get("model")) or info.model
        if kind == "conversation.item.create":
            item = as_dict(message.get("item"))
            if as_str(item.get("type")) in (None, "message"):
                info.messages.append(make_message(item.get("role"), _parts_text(item.get("content"), _INPUT_PARTS)))
            elif as_str(item.get("type")) == "function_call_output":
                info.messages.append(make_message("tool", as_str(item.get("output")), tool_call_id=as_str(item.get("call_id"))))
    if instructions:
        info.messages.insert(0, Message(role="system", content=instructions))
    info.system_prompt = system_prompt(info.messages)
    for tool in tools:
        name = as_str(as_dict(tool).get("name"))
        if name:
            info.tools.append(ToolDefinition(name=name, description=as_str(as_dict(tool).get("description"))))


def _parts_text(content: Any, kinds: Dict[str, str]) -> Optional[str]:
    texts = []
    for part in as_list(content):
        part = as_dict(part)
        key = kinds.get(as_str(part.get("type")) or "")
        if key and isinstance(part.get(key), str):
            texts.append(part[key])
    return "".join(texts) or None


class RealtimeStream:
    """Realtime API server events: text (or transcript) deltas, tool calls, response.done."""

    def __init__(self, out: AiResponseInfo) -> None:
        self.out = out
        self.text: List[str] = []
        self.calls: Dict[int, ToolCall] = {}

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        out, data = self.out, event.data
        kind = as_str(data.get("type")) or ""
        if kind in _TEXT_DELTAS:
            delta = as_str(data.get("delta"))
            if delta:
                self.text.append(delta)
                return [StreamDelta(content=delta)]
        elif kind == "response.output_item.added":
            item = as_dict(data.get("item"))
            if as_str(item.get("type")) == "function_call" and as_str(item.get("name")):
                call = self._call(data)
                call.name, call.id = item["name"], as_str(item.get("call_id"))
                return [StreamDelta(tool_call=ToolCall(name=call.name, id=call.id))]
        elif kind == "response.function_call_arguments.delta":
            delta = as_str(data.get("delta"))
            if delta:
                call = self._call(data)
                call.arguments = (call.arguments or "") + delta
                return [StreamDelta(tool_call=ToolCall(name=call.name, id=call.id, arguments=delta))]
        elif kind == "response.function_call_arguments.done":
            call = self._call(data)
            call.arguments = as_str(data.get("arguments")) or call.arguments
            call.name = call.name or as_str(data.get("name")) or ""
            call.id = call.id or as_str(data.get("call_id"))
        elif kind == "response.created":
            response = as_dict(data.get("response"))
            out.provider_request_id = as_str(response.get("id")) or out.provider_request_id
        elif kind == "response.done":
            self._done(as_dict(data.get("response")))
            out.stream_finished = True
            return [StreamDelta(finish_reason=out.finish_reason)] if out.finish_reason else []
        elif kind == "error":
            set_error(out, stream_error(as_dict(data.get("error")) or {k: v for k, v in data.items() if k != "type"}))
        return []

    def _call(self, data: Dict[str, Any]) -> ToolCall:
        return self.calls.setdefault(as_int(data.get("output_index")) or 0, ToolCall(name=""))

    def _done(self, response: Dict[str, Any]) -> None:
        out = self.out
        out.provider_request_id = as_str(response.get("id")) or out.provider_request_id
        status = as_str(response.get("status"))
        details = as_dict(response.get("status_details"))
        if status == "incomplete" and as_str(details.get("reason")):
            status = f"incomplete:{details['reason']}"
        out.finish_reason = status
        out.choice_finish_reasons = [status]
        if details.get("error"):
            set_error(out, stream_error(details["error"]))
        usage = as_dict(response.get("usage"))
        if usage:
            out.usage = Usage(
                prompt_tokens=as_int(usage.get("input_tokens")),
                completion_tokens=as_int(usage.get("output_tokens")),
                total_tokens=as_int(usage.get("total_tokens")),
                cached_tokens=as_int(as_dict(usage.get("input_token_details")).get("cached_tokens")),
            )
        texts, calls = [], []
        for item in as_list(response.get("output")):
            item = as_dict(item)
            if as_str(item.get("type")) == "message":
                texts.append(_parts_text(item.get("content"), _OUTPUT_PARTS) or "")
            elif as_str(item.get("type")) == "function_call" and as_str(item.get("name")):
                calls.append(ToolCall(name=item["name"], id=as_str(item.get("call_id")), arguments=as_str(item.get("arguments"))))
        if not self.text:
            self.text = texts
        if not self.calls:
            self.calls = dict(enumerate(calls))

    def close(self) -> None:
        out = self.out
        out.text = nonempty("".join(self.text))
        out.choice_texts = [out.text]
        out.tool_calls = [c for _, c in sorted(self.calls.items()) if c.name]
