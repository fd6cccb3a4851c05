"""Cohere API family: v1 and v2 chat (whole, v1's application/stream+json NDJSON stream, v2's
SSE stream), embed and rerank.

Token counts follow what Cohere bills (`billed_units`); `tokens` (the raw count, with the
prompt template) is not the usage a user pays for. v1 tool calls carry `parameters` (an object),
v2 the OpenAI-like `function.arguments` (a JSON string, streamed in pieces).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.providers.errors import stream_error
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo, Message, StreamDelta, ToolCall, ToolDefinition, Usage
from oisp_daemon.providers.family import Route
from oisp_daemon.providers.fields import as_dict, as_int, as_list, as_str, nonempty
from oisp_daemon.providers.parsing import route_post, set_error, start_request, start_response
from oisp_daemon.providers.prompt import content_text, make_message, sampling_parameters, system_prompt
from oisp_daemon.providers.stream import JsonEvent, JsonLines, SseJson, StreamDecoder, decode_whole, is_event_stream

# The ApiFamily interface (providers/family.py).
FAMILY = "cohere"
NATIVE_PROVIDERS = frozenset({"cohere"})
ANY_PROVIDER = False  # /v1/chat and /v1/embed are too generic to claim on other hosts

API_V1_CHAT = "cohere.v1.chat"
API_V2_CHAT = "cohere.v2.chat"
API_EMBED = "cohere.embed"
API_RERANK = "cohere.rerank"

_ROUTE = re.compile(r"^(?:/.*)?/(v1/chat|v2/chat|v1/embed|v2/embed|v1/rerank|v2/rerank)$")
_APIS = {
    "v1/chat": (API_V1_CHAT, "chat"),
    "v2/chat": (API_V2_CHAT, "chat"),
    "v1/embed": (API_EMBED, "embedding"),
    "v2/embed": (API_EMBED, "embedding"),
    "v1/rerank": (API_RERANK, "other"),
    "v2/rerank": (API_RERANK, "other"),
}
_V1_ROLES = {"USER": "user", "CHATBOT": "assistant", "SYSTEM": "system", "TOOL": "tool"}


def route(method: str, target: str) -> Optional[Route]:
    return route_post(_ROUTE, _APIS, method, target)


def parse_request(provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
    found = route(req.method, req.target)
    if found is None:
        return None
    info, body = start_request(provider, req, host, found)
    if body is None:
        return info
    if info.api == API_V1_CHAT:
        preamble = nonempty(as_str(body.get("preamble")))
        if preamble:
            info.messages.append(Message(role="system", content=preamble))
        for turn in as_list(body.get("chat_history")):
            turn = as_dict(turn)
            info.messages.append(Message(role=_V1_ROLES.get(as_str(turn.get("role")) or "", "user"), content=as_str(turn.get("message"))))
        for result in as_list(body.get("tool_results")):
            call = as_dict(as_dict(result).get("call"))
            info.messages.append(Message(role="tool", name=as_str(call.get("name")), content=json.dumps(as_dict(result).get("outputs"))))
        if isinstance(body.get("message"), str):
            info.messages.append(Message(role="user", content=body["message"]))
        for tool in as_list(body.get("tools")):
            if as_str(as_dict(tool).get("name")):
                info.tools.append(ToolDefinition(name=tool["name"], description=as_str(tool.get("description"))))
    elif info.api == API_V2_CHAT:
        for raw in as_list(body.get("messages")):
            raw = as_dict(raw)
            if raw:
                info.messages.append(_v2_message(raw))
        for tool in as_list(body.get("tools")):
            function = as_dict(as_dict(tool).get("function"))
            if as_str(function.get("name")):
                info.tools.append(ToolDefinition(name=function["name"], description=as_str(function.get("description"))))
    elif info.api == API_EMBED:
        inputs = body.get("texts") or body.get("inputs") or body.get("images")
        info.input_count = len(inputs) if isinstance(inputs, list) else None
    else:
        documents = body.get("documents")
        info.input_count = len(documents) if isinstance(documents, list) else None
    info.system_prompt = system_prompt(info.messages)
    info.parameters = sampling_parameters(body, ("max_tokens",), stop_key="stop_sequences")
    if "p" in body and isinstance(body.get("p"), (int, float)) and not isinstance(body.get("p"), bool):
        info.parameters["top_p"] = body["p"]
    return info


def _v2_message(raw: Dict[str, Any]) -> Message:
    """A v2 chat message; a tool message's result may be documents ({"type": "document",
    "document": {...}}) rather than text, kept as their JSON."""
    message = make_message(raw.get("role"), raw.get("content"), tool_call_id=as_str(raw.get("tool_call_id")))
    if message.role == "tool" and message.content is None:
        documents = [as_dict(part).get("document") for part in as_list(raw.get("content"))]
        message.content = "\n".join(json.dumps(d) for d in documents if d is not None) or None
    return message


def _billed(raw: Any) -> Usage:
    billed = as_dict(as_dict(raw).get("billed_units"))
    return Usage(prompt_tokens=as_int(billed.get("input_tokens")), completion_tokens=as_int(billed.get("output_tokens")))


def parse_response(info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
    streamed = _is_stream(info, resp)
    if streamed and 200 <= resp.status < 300:
        out = AiResponseInfo(status_code=resp.status, success=True, streaming=True)
        decode_whole(_decoder(info, resp, out), resp.body)
    else:
        out, body = start_response(info, resp, ("x-request-id",))
        if body is not None:
            if info.api == API_V1_CHAT:
                _V1Chat(out).whole(body)
            elif info.api == API_V2_CHAT:
                _V2Chat(out).whole(body)
            elif info.api == API_EMBED:
                _embeddings(out, body)
            else:
                out.usage = _billed(body.get("meta"))
            out.provider_request_id = as_str(body.get("id")) or as_str(body.get("response_id")) or out.provider_request_id
    out.model = out.model or info.model
    return out


def stream_decoder(info: AiRequestInfo, resp: HttpResponse) -> Optional[StreamDecoder]:
    if not _is_stream(info, resp) or resp.status >= 400:
        return None
    return _decoder(info, resp, AiResponseInfo(status_code=resp.status, success=True, streaming=True))


def _is_stream(info: AiRequestInfo, resp: HttpResponse) -> bool:
    content_type = (resp.header("Content-Type") or "").lower()
    return info.api in (API_V1_CHAT, API_V2_CHAT) and ("stream+json" in content_type or is_event_stream(resp, info.streaming))


def _decoder(info: AiRequestInfo, resp: HttpResponse, out: AiResponseInfo) -> StreamDecoder:
    if info.api == API_V2_CHAT:
        return StreamDecoder(SseJson(), _V2Chat(out), out)
    return StreamDecoder(JsonLines(), _V1Chat(out), out)


def _v1_call(raw: Any) -> Optional[ToolCall]:
    raw = as_dict(raw)
    if not as_str(raw.get("name")):
        return None
    return ToolCall(name=raw["name"], arguments=json.dumps(raw.get("parameters") or {}))


class _V1Chat:
    """v1 chat: one response object, or NDJSON events (stream-start, text-generation,
    tool-calls-generation, stream-end with the whole response)."""

    def __init__(self, out: AiResponseInfo) -> None:
        self.out = out
        self.texts: List[str] = []

    def whole(self, body: Dict[str, Any]) -> None:
        out = self.out
        out.text = nonempty(as_str(body.get("text")))
        out.finish_reason = as_str(body.get("finish_reason"))
        out.tool_calls = [c for c in (_v1_call(raw) for raw in as_list(body.get("tool_calls"))) if c]
        out.usage = _billed(body.get("meta"))
        out.choice_texts, out.choice_finish_reasons = [out.text], [out.finish_reason]

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        out, data = self.out, event.data
        kind = as_str(data.get("event_type")) or ""
        if kind == "stream-start":
            out.provider_request_id = as_str(data.get("generation_id")) or out.provider_request_id
        elif kind == "text-generation":
            text = as_str(data.get("text"))
            if text:
                self.texts.append(text)
                return [StreamDelta(content=text)]
        elif kind == "tool-calls-generation":
            calls = [c for c in (_v1_call(raw) for raw in as_list(data.get("tool_calls"))) if c]
            out.tool_calls = calls
            return [StreamDelta(tool_call=c) for c in calls]
        elif kind == "stream-end":
            response = as_dict(data.get("response"))
            out.usage = _billed(response.get("meta"))
            out.finish_reason = as_str(data.get("finish_reason")) or as_str(response.get("finish_reason"))
            out.stream_finished = True
            if out.finish_reason == "ERROR":
                set_error(out, stream_error(response.get("error") or "stream ended with ERROR"))
            return [StreamDelta(finish_reason=out.finish_reason)]
        elif data.get("message") and kind in ("", "error"):
            set_error(out, stream_error({"message": data.get("message")}))
        return []

    def close(self) -> None:
        out = self.out
        out.text = out.text or nonempty("".join(self.texts))
        out.choice_texts, out.choice_finish_reasons = [out.text], [out.finish_reason]


@dataclass
class _V2Call:
    """A v2 tool call assembled from tool-call-start and tool-call-delta events."""

    id: Optional[str] = None
    name: Optional[str] = None
    arguments: List[str] = field(default_factory=list)


class _V2Chat:
    """v2 chat: one response object, or SSE events (message-start, content-delta, tool-call-start,
    tool-call-delta, message-end with finish reason and usage)."""

    def __init__(self, out: AiResponseInfo) -> None:
        self.out = out
        self.texts: List[str] = []
        self.calls: Dict[int, _V2Call] = {}

    def whole(self, body: Dict[str, Any]) -> None:
        out = self.out
        message = as_dict(body.get("message"))
        text, _ = content_text(message.get("content"))
        out.text = nonempty(text)
        out.finish_reason = as_str(body.get("finish_reason"))
        for raw in as_list(message.get("tool_calls")):
            function = as_dict(as_dict(raw).get("function"))
            if as_str(function.get("name")):
                out.tool_calls.append(ToolCall(name=function["name"], id=as_str(raw.get("id")), arguments=as_str(function.get("arguments"))))
        out.usage = _billed(body.get("usage"))
        out.choice_texts, out.choice_finish_reasons = [out.text], [out.finish_reason]

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        out, data = self.out, event.data
        kind = as_str(data.get("type")) or event.event or ""
        message = as_dict(as_dict(data.get("delta")).get("message"))
        if kind == "message-start":
            out.provider_request_id = as_str(data.get("id")) or out.provider_request_id
            return [StreamDelta(role="assistant")]
        if kind == "content-delta":
            text = as_str(as_dict(message.get("content")).get("text"))
            if text:
                self.texts.append(text)
                return [StreamDelta(content=text)]
        elif kind in ("tool-call-start", "tool-call-delta"):
            raw = as_dict(message.get("tool_calls"))
            function = as_dict(raw.get("function"))
            index = as_int(data.get("index")) or 0
            call = self.calls.setdefault(index, _V2Call())
            call.id = call.id or as_str(raw.get("id"))
            call.name = call.name or as_str(function.get("name"))
            piece = as_str(function.get("arguments"))
            if piece:
                call.arguments.append(piece)
            return [StreamDelta(tool_call=ToolCall(name=call.name or "", id=call.id, arguments=piece))]
        elif kind == "message-end":
            delta = as_dict(data.get("delta"))
            out.finish_reason = as_str(delta.get("finish_reason"))
            out.usage = _billed(delta.get("usage"))
            out.stream_finished = True
            if delta.get("error"):
                set_error(out, stream_error(delta["error"]))
            return [StreamDelta(finish_reason=out.finish_reason)] if out.finish_reason else []
        return []

    def close(self) -> None:
        out = self.out
        out.text = nonempty("".join(self.texts))
        out.tool_calls = [ToolCall(name=c.name, id=c.id, arguments="".join(c.arguments))
                          for _, c in sorted(self.calls.items()) if c.name]
        out.choice_texts, out.choice_finish_reasons = [out.text], [out.finish_reason]


def _embeddings(out: AiResponseInfo, body: Dict[str, Any]) -> None:
    embeddings = body.get("embeddings")
    if isinstance(embeddings, dict):  # v2 and v1 with embedding_types: {"float": [[...]], ...}
        embeddings = next((v for v in embeddings.values() if isinstance(v, list)), [])
    vectors = as_list(embeddings)
    out.embedding_count = len(vectors)
    out.embedding_dimensions = len(vectors[0]) if vectors and isinstance(vectors[0], list) else None
    out.usage = _billed(body.get("meta"))
