"""Anthropic API: Messages (/v1/messages, plain and streamed) and legacy Text Completions
(/v1/complete). Raw values (stop_reason) stay raw; `events/` normalises them.

Thinking blocks are the model's reasoning, not its answer: they never count as response text.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional

from oisp_daemon.decode.messages import HttpRequest, HttpResponse, header_value
from oisp_daemon.providers.endpoint import request_path
from oisp_daemon.providers.errors import stream_error
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo, Message, StreamDelta, ToolCall, ToolDefinition, Usage
from oisp_daemon.providers.fields import (
    as_dict,
    as_int,
    as_list,
    as_str,
    nonempty,
)
from oisp_daemon.providers.family import Route
from oisp_daemon.providers.parsing import route_post, set_error, start_request, start_response
from oisp_daemon.providers.prompt import content_text, make_message, sampling_parameters
from oisp_daemon.providers.stream import JsonEvent, SseJson, StreamDecoder, decode_whole, is_event_stream

# The ApiFamily interface (providers/family.py).
FAMILY = "anthropic"
NATIVE_PROVIDERS = frozenset({"anthropic", "google"})  # google: Claude on Vertex AI
ANY_PROVIDER = False

API_MESSAGES = "anthropic.messages"
API_COMPLETE = "anthropic.complete"

# The API version segment is the last one before the endpoint; proxies may add a prefix.
_ROUTE = re.compile(r"^(?:/.*)?/v1/(messages|complete)$")
_APIS = {"messages": (API_MESSAGES, "chat"), "complete": (API_COMPLETE, "completion")}
_TOOL_CALL_BLOCKS = ("tool_use", "server_tool_use")
_TOOL_CHOICES = {"auto": "auto", "any": "required", "tool": "specific", "none": "none"}


# Claude on Vertex AI: the Messages API under the publisher path, the model in the path.
_VERTEX = re.compile(
    r"^/v1[a-z0-9]*/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/anthropic/models/(?P<model>[^/:]+):(?P<method>rawPredict|streamRawPredict)$"
)


def route(method: str, target: str) -> Optional[Route]:
    """(api, request_type) for a Messages / Complete call; None for count_tokens, batches, models..."""
    if method.upper() == "POST" and _VERTEX.match(request_path(target)):
        return API_MESSAGES, "chat"
    return route_post(_ROUTE, _APIS, method, target)


# ---------------------------------------------------------------------------------------------
# Requests


def parse_request(provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
    found = route(req.method, req.target)
    if found is None:
        return None
    info, body = start_request(provider, req, host, found)
    for header, key in (("anthropic-beta", "anthropic_beta"), ("anthropic-version", "anthropic_version")):
        value = header_value(req.headers, header)
        if value:
            info.attribution[key] = value[:200]
    vertex = _VERTEX.match(request_path(req.target))
    if vertex:
        info.model = info.model or vertex.group("model")
        info.streaming = info.streaming or vertex.group("method") == "streamRawPredict"
        info.project_id = info.project_id or vertex.group("project")
        info.region = vertex.group("location")
    if body is None:
        return info
    if info.api == API_MESSAGES:
        messages_request(info, body)
    else:
        prompt = as_str(body.get("prompt"))
        info.messages = [Message(role="user", content=prompt)] if prompt is not None else []
        info.parameters = sampling_parameters(body, ("max_tokens_to_sample",), stop_key="stop_sequences")
    return info


def _tool_definition(tool: Dict[str, Any]) -> Optional[ToolDefinition]:
    """Client tools have an input_schema; server tools (web_search_..., computer_..., ...) a versioned type."""
    name = as_str(tool.get("name"))
    if not name:
        return None
    kind = as_str(tool.get("type")) or "custom"
    if kind == "custom" or "input_schema" in tool:
        return ToolDefinition(name=name, description=as_str(tool.get("description")))
    if kind.startswith("computer_"):
        return ToolDefinition(name=name, type="computer_use")
    if kind.startswith("code_execution_"):
        return ToolDefinition(name=name, type="code_interpreter")
    return ToolDefinition(name=name, type="other")


def messages_request(info: AiRequestInfo, body: Dict[str, Any]) -> None:
    system, _ = content_text(body.get("system"))
    if system:
        # Anthropic sends the system prompt beside the messages; OISP lists it as the first message.
        info.system_prompt = system
        info.messages.append(Message(role="system", content=system))
    for raw in as_list(body.get("messages")):
        raw = as_dict(raw)
        if raw:
            info.messages.extend(_request_messages(raw))
    for tool in as_list(body.get("tools")):
        definition = _tool_definition(as_dict(tool))
        if definition:
            info.tools.append(definition)
    choice = as_str(as_dict(body.get("tool_choice")).get("type"))
    info.tool_choice = _TOOL_CHOICES.get(choice or "", choice)
    info.parameters = sampling_parameters(body, ("max_tokens",), stop_key="stop_sequences")


def _request_messages(raw: Dict[str, Any]) -> List[Message]:
    """One message, plus one "tool" message per tool_result block (results of earlier tool calls)."""
    content = raw.get("content")
    message = make_message(raw.get("role"), content)
    results = []
    for block in as_list(content):
        block = as_dict(block)
        if block.get("type") == "tool_result":
            text, images = content_text(block.get("content"))
            results.append(
                Message(
                    role="tool",
                    content=text,
                    has_images=images > 0,
                    image_count=images,
                    tool_call_id=as_str(block.get("tool_use_id")),
                    is_error=block.get("is_error") is True,
                )
            )
    if results and message.content is None and not message.has_images:
        return results
    return [message] + results


# ---------------------------------------------------------------------------------------------
# Responses


def parse_response(info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
    out, body = start_response(info, resp, ("request-id",))
    if body is not None:
        if info.api == API_MESSAGES:
            message_object(out, body)
        else:
            _completion_object(out, body)
    elif out.streaming and out.success:
        decode_whole(_decoder(info, out), resp.body)
    out.model = out.model or info.model
    return out


def stream_decoder(info: AiRequestInfo, resp: HttpResponse) -> Optional[StreamDecoder]:
    """A live decoder for a streamed answer whose headers just arrived; None if not a stream."""
    if not is_event_stream(resp, info.streaming) or resp.status >= 400:
        return None
    return _decoder(info, AiResponseInfo(status_code=resp.status, success=True, streaming=True))


def _decoder(info: AiRequestInfo, out: AiResponseInfo) -> StreamDecoder:
    handler = MessagesStream(out) if info.api == API_MESSAGES else _CompleteStream(out)
    return StreamDecoder(SseJson(), handler, out)


def _set_text(out: AiResponseInfo, text: Optional[str], finish: Optional[str]) -> None:
    out.text = nonempty(text)
    out.choice_texts = [out.text]
    out.finish_reason = finish
    out.choice_finish_reasons = [finish]


def _apply_usage(usage: Usage, raw: Any) -> None:
    """Overlay the fields present in an Anthropic usage object (message_delta repeats only some)."""
    usage.cache_in_prompt = False  # input_tokens excludes cache reads and writes
    raw = as_dict(raw)
    for field, key in (
        ("prompt_tokens", "input_tokens"),
        ("completion_tokens", "output_tokens"),
        ("cached_tokens", "cache_read_input_tokens"),
        ("cache_creation_tokens", "cache_creation_input_tokens"),
    ):
        value = as_int(raw.get(key))
        if value is not None:
            setattr(usage, field, value)


def _block_call(block: Dict[str, Any]) -> Optional[ToolCall]:
    name = as_str(block.get("name"))
    if not name:
        return None
    kind = as_str(block.get("type")) or "tool_use"
    arguments = json.dumps(block["input"]) if isinstance(block.get("input"), dict) else None
    return ToolCall(name=name, id=as_str(block.get("id")), type="function" if kind == "tool_use" else kind, arguments=arguments)


def message_object(out: AiResponseInfo, body: Dict[str, Any]) -> None:
    out.provider_request_id = as_str(body.get("id")) or out.provider_request_id
    out.model = as_str(body.get("model"))
    texts = []
    for block in as_list(body.get("content")):
        block = as_dict(block)
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind in _TOOL_CALL_BLOCKS:
            call = _block_call(block)
            if call:
                out.tool_calls.append(call)
    _set_text(out, "".join(texts), as_str(body.get("stop_reason")))
    _apply_usage(out.usage, body.get("usage"))
    if body.get("type") == "error":  # an error object with a 2xx status
        set_error(out, stream_error(body.get("error")))


class _Block:
    """A content block being streamed: text, a tool call (input as JSON deltas), or ignored."""

    def __init__(self, kind: str, call: Optional[ToolCall]) -> None:
        self.kind = kind
        self.call = call
        self.parts: List[str] = []


class MessagesStream:
    """Messages SSE: message_start, content blocks (text, tool_use, thinking) with their deltas,
    message_delta (stop reason, usage) and message_stop."""

    def __init__(self, out: AiResponseInfo) -> None:
        self.out = out
        self.blocks: Dict[int, _Block] = {}
        self.order: List[_Block] = []
        self.finish: Optional[str] = None

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        out, data = self.out, event.data
        kind = as_str(data.get("type")) or event.event or ""
        if kind == "message_start":
            message = as_dict(data.get("message"))
            out.provider_request_id = as_str(message.get("id")) or out.provider_request_id
            out.model = out.model or nonempty(as_str(message.get("model")))
            _apply_usage(out.usage, message.get("usage"))
            return [StreamDelta(role="assistant")]
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "message_delta":
            self.finish = as_str(as_dict(data.get("delta")).get("stop_reason")) or self.finish
            _apply_usage(out.usage, data.get("usage"))
            return [StreamDelta(finish_reason=self.finish)] if self.finish else []
        if kind == "message_stop":
            out.stream_finished = True
        elif kind == "error":
            set_error(out, stream_error(data.get("error")))
        return []

    def _block_start(self, data: Dict[str, Any]) -> List[StreamDelta]:
        block = as_dict(data.get("content_block"))
        block_kind = as_str(block.get("type")) or ""
        current = _Block(block_kind, _block_call(block) if block_kind in _TOOL_CALL_BLOCKS else None)
        self.blocks[as_int(data.get("index")) or 0] = current
        self.order.append(current)
        if current.call is not None:
            return [StreamDelta(tool_call=ToolCall(name=current.call.name, id=current.call.id, type=current.call.type))]
        text = as_str(block.get("text")) if block_kind == "text" else None
        if text:
            current.parts.append(text)
            return [StreamDelta(content=text)]
        return []

    def _block_delta(self, data: Dict[str, Any]) -> List[StreamDelta]:
        delta = as_dict(data.get("delta"))
        current = self.blocks.get(as_int(data.get("index")) or 0)
        delta_kind = delta.get("type")
        if current is not None and current.kind == "text" and delta_kind == "text_delta":
            text = as_str(delta.get("text"))
            if text:
                current.parts.append(text)
                return [StreamDelta(content=text)]
        elif current is not None and current.call is not None and delta_kind == "input_json_delta":
            piece = delta.get("partial_json")
            if isinstance(piece, str):
                current.parts.append(piece)
                call = current.call
                return [StreamDelta(tool_call=ToolCall(name=call.name, id=call.id, type=call.type, arguments=piece))]
        return []

    def close(self) -> None:
        texts = []
        for block in self.order:
            if block.kind == "text":
                texts.append("".join(block.parts))
            elif block.call is not None:
                streamed = "".join(block.parts)
                if streamed:  # streamed input replaces the empty `input: {}` of content_block_start
                    block.call.arguments = streamed
                self.out.tool_calls.append(block.call)
        _set_text(self.out, "".join(texts), self.finish)


def _completion_object(out: AiResponseInfo, body: Dict[str, Any]) -> None:
    out.provider_request_id = as_str(body.get("id")) or out.provider_request_id
    out.model = as_str(body.get("model"))
    _set_text(out, as_str(body.get("completion")), as_str(body.get("stop_reason")))


class _CompleteStream:
    """Legacy /v1/complete stream: "completion" events carry text deltas and, at the end, stop_reason."""

    def __init__(self, out: AiResponseInfo) -> None:
        self.out = out
        self.texts: List[str] = []
        self.finish: Optional[str] = None

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        out, data = self.out, event.data
        kind = as_str(data.get("type")) or event.event or ""
        if kind == "completion":
            out.provider_request_id = as_str(data.get("id")) or out.provider_request_id
            out.model = out.model or nonempty(as_str(data.get("model")))
            text = as_str(data.get("completion"))
            if text:
                self.texts.append(text)
            finish = as_str(data.get("stop_reason"))
            self.finish = finish or self.finish
            out.stream_finished = out.stream_finished or finish is not None
            if text or finish:
                return [StreamDelta(content=text or None, finish_reason=finish)]
        elif kind == "error":
            set_error(out, stream_error(data.get("error")))
        return []

    def close(self) -> None:
        _set_text(self.out, "".join(self.texts), self.finish)
