"""OpenAI API family: Chat Completions, legacy Completions, Embeddings, the Responses API, and
the Responses and Realtime APIs over WebSocket (providers/openai_realtime.py).

Azure OpenAI and OpenAI-compatible servers send the same JSON under other path prefixes
(/openai/deployments/<deployment>/..., /openai/v1/..., /v1/...), so routes match on the path's
end. Raw provider values (finish reasons, statuses) are kept raw; `events/` normalises them.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from urllib.parse import parse_qs, urlsplit
from typing import Any, Dict, List, Optional, Tuple

from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.providers.credentials import fill_credentials
from oisp_daemon.providers.endpoint import endpoint_url, request_path
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
from oisp_daemon.providers.prompt import make_message, sampling_parameters, system_prompt
from oisp_daemon.decode.websocket import WEBSOCKET_METHOD
from oisp_daemon.providers import openai_realtime
from oisp_daemon.providers.openai_realtime import API_REALTIME
from oisp_daemon.providers.stream import JsonEvent, JsonSeq, SseJson, StreamDecoder, decode_whole, is_event_stream, is_message_stream

# The ApiFamily interface (providers/family.py).
FAMILY = "openai"
NATIVE_PROVIDERS = frozenset({"openai", "azure_openai"})
ANY_PROVIDER = True

API_CHAT = "openai.chat_completions"
API_COMPLETIONS = "openai.completions"
API_EMBEDDINGS = "openai.embeddings"
API_RESPONSES = "openai.responses"

# The endpoint follows an API root: /v1 (OpenAI, most compatible servers, /openai/v1 on Groq and
# Azure, /api/v1 on OpenRouter), /beta (DeepSeek), /openai (Google's compatibility layer), an Azure
# deployment, or nothing. Other servers' look-alike paths (Ollama's /api/embeddings, Mistral's
# /v1/fim/completions) are different APIs and do not match.
_ROUTE = re.compile(r"^(?:.*/v1|.*/beta|.*/openai|.*/openai/deployments/[^/]+)?/(chat/completions|completions|embeddings|responses)$")
_APIS = {
    "chat/completions": (API_CHAT, "chat"),
    "completions": (API_COMPLETIONS, "completion"),
    "embeddings": (API_EMBEDDINGS, "embedding"),
    "responses": (API_RESPONSES, "chat"),
}
# Over WebSocket (decode/websocket.py): the Responses API and the Realtime API.
_WS_ROUTE = re.compile(r"^(?:.*/v1|.*/openai)?/(responses|realtime)$")
_WS_APIS = {"responses": (API_RESPONSES, "chat"), "realtime": (API_REALTIME, "chat")}
_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/")
# Built-in tools of the Responses API, by their OISP tool type.
_BUILTIN_TOOL_TYPES = {
    "file_search": "file_search",
    "code_interpreter": "code_interpreter",
    "computer_use_preview": "computer_use",
    "computer_use": "computer_use",
}
_RESPONSE_ID_HEADERS = ("x-request-id", "apim-request-id")


def route(method: str, target: str) -> Optional[Route]:
    """(api, request_type) for an OpenAI-style API call, None for anything else (GET /v1/models...)."""
    if method == WEBSOCKET_METHOD:
        match = _WS_ROUTE.match(request_path(target))
        return _WS_APIS[match.group(1)] if match else None
    return route_post(_ROUTE, _APIS, method, target)


# ---------------------------------------------------------------------------------------------
# Requests


def parse_request(provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
    found = route(req.method, req.target)
    if found is None:
        return None
    if req.method == WEBSOCKET_METHOD:
        return _websocket_request(provider, req, host, found)
    info, body = start_request(provider, req, host, found)
    if body is not None:
        api = info.api
        if api == API_CHAT:
            _chat_request(info, body)
        elif api == API_COMPLETIONS:
            _completions_request(info, body)
        elif api == API_EMBEDDINGS:
            _embeddings_request(info, body)
        else:
            _responses_request(info, body)
    deployment = _AZURE_DEPLOYMENT.search(request_path(req.target) + "/")
    if deployment:
        info.attribution["azure_deployment"] = deployment.group(1)
        info.model = info.model or deployment.group(1)
    version = parse_qs(urlsplit(req.target).query).get("api-version")
    if version and version[0]:
        info.attribution["api_version"] = version[0][:40]
    return info


def _websocket_request(provider: str, req: HttpRequest, host: str, found: Route) -> AiRequestInfo:
    """A response.create over WebSocket (and, for Realtime, the session's messages before it)."""
    info = AiRequestInfo(provider=provider, api=found[0], request_type=found[1], endpoint=endpoint_url(host, req.target))
    fill_credentials(info, req.headers)
    messages = openai_realtime.client_messages(req)
    if info.api == API_REALTIME:
        openai_realtime.realtime_request(info, req, messages)
        return info
    body = openai_realtime.response_create(messages)
    if not body:
        info.parse_error = "no response.create message"
    info.model = as_str(body.get("model"))
    info.streaming = True  # the answer always streams back as events
    _responses_request(info, body)
    return info


def _tool_choice(value: Any) -> Optional[str]:
    """"auto" / "none" / "required" as sent; a specific tool forced by object is "specific"."""
    if isinstance(value, str):
        return value
    return "specific" if isinstance(value, dict) else None


def _chat_request(info: AiRequestInfo, body: Dict[str, Any]) -> None:
    for raw in as_list(body.get("messages")):
        raw = as_dict(raw)
        if raw:
            info.messages.append(
                make_message(
                    raw.get("role"),
                    raw.get("content"),
                    tool_call_id=as_str(raw.get("tool_call_id")),
                    name=as_str(raw.get("name")),
                )
            )
    info.system_prompt = system_prompt(info.messages)
    for tool in as_list(body.get("tools")):
        tool = as_dict(tool)
        function = as_dict(tool.get("function"))
        name = as_str(function.get("name")) or as_str(tool.get("name"))
        if name:
            info.tools.append(ToolDefinition(name=name, description=as_str(function.get("description"))))
    for function in as_list(body.get("functions")):  # legacy function calling
        function = as_dict(function)
        if as_str(function.get("name")):
            info.tools.append(ToolDefinition(name=function["name"], description=as_str(function.get("description"))))
    info.tool_choice = _tool_choice(body.get("tool_choice", body.get("function_call")))
    info.parameters = sampling_parameters(body, ("max_completion_tokens", "max_tokens"))


def _completions_request(info: AiRequestInfo, body: Dict[str, Any]) -> None:
    prompt = body.get("prompt")
    prompts = prompt if isinstance(prompt, list) else [prompt]
    info.messages = [Message(role="user", content=p) for p in prompts if isinstance(p, str)]
    info.parameters = sampling_parameters(body, ("max_tokens",))


def _embeddings_request(info: AiRequestInfo, body: Dict[str, Any]) -> None:
    data = body.get("input")
    if isinstance(data, str):
        info.input_count = 1
    elif isinstance(data, list):
        # A flat list of token ids is one input; otherwise each element is one input.
        info.input_count = 1 if data and all(as_int(x) is not None for x in data) else len(data)
    dimensions = as_int(body.get("dimensions"))
    if dimensions is not None:
        info.parameters["dimensions"] = dimensions


def _responses_request(info: AiRequestInfo, body: Dict[str, Any]) -> None:
    instructions = as_str(body.get("instructions"))
    if instructions:
        info.messages.append(Message(role="system", content=instructions))
    data = body.get("input")
    if isinstance(data, str):
        info.messages.append(Message(role="user", content=data))
    for item in as_list(data):
        item = as_dict(item)
        kind = as_str(item.get("type")) or "message"
        if kind == "message" and "role" in item:
            info.messages.append(make_message(item.get("role"), item.get("content")))
        elif kind == "function_call_output":
            # The output is a string, or a list of input_text / input_image parts.
            info.messages.append(make_message("tool", item.get("output"), tool_call_id=as_str(item.get("call_id"))))
        elif kind == "function_call":
            info.messages.append(Message(role="assistant", tool_call_id=as_str(item.get("call_id")), name=as_str(item.get("name"))))
    info.system_prompt = system_prompt(info.messages)
    for tool in as_list(body.get("tools")):
        tool = as_dict(tool)
        kind = as_str(tool.get("type")) or "function"
        if kind in ("function", "custom"):
            name = as_str(tool.get("name"))
            if name:
                info.tools.append(ToolDefinition(name=name, description=as_str(tool.get("description"))))
        else:
            name = as_str(tool.get("server_label")) or kind
            info.tools.append(ToolDefinition(name=name, type=_BUILTIN_TOOL_TYPES.get(kind, "other")))
    info.tool_choice = _tool_choice(body.get("tool_choice"))
    info.parameters = sampling_parameters(body, ("max_output_tokens",))


# ---------------------------------------------------------------------------------------------
# Responses


def parse_response(info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
    if is_message_stream(resp):  # over WebSocket: the status is the 101's, errors are events
        out = AiResponseInfo(status_code=resp.status, success=True, streaming=True)
        decode_whole(_decoder(info, out, resp), resp.body)
        out.model = out.model or info.model
        return out
    out, body = start_response(info, resp, _RESPONSE_ID_HEADERS)
    if body is not None:
        if info.api == API_EMBEDDINGS:
            _embeddings_response(out, body)
        elif info.api == API_RESPONSES:
            _responses_object(out, body, _Collected())
        else:
            _choices_response(out, body)
    elif out.streaming and out.success:
        decode_whole(_decoder(info, out, resp), resp.body)
    out.model = out.model or info.model
    return out


def stream_decoder(info: AiRequestInfo, resp: HttpResponse) -> Optional[StreamDecoder]:
    """A live decoder for a streamed answer whose headers just arrived; None if not a stream."""
    if not is_message_stream(resp) and (not is_event_stream(resp, info.streaming) or resp.status >= 400):
        return None
    return _decoder(info, AiResponseInfo(status_code=resp.status, success=True, streaming=True), resp)


def _decoder(info: AiRequestInfo, out: AiResponseInfo, resp: HttpResponse) -> StreamDecoder:
    if info.api == API_REALTIME:
        handler: Any = openai_realtime.RealtimeStream(out)
    else:
        handler = _ResponsesStream(out) if info.api == API_RESPONSES else _ChoicesStream(out)
    return StreamDecoder(JsonSeq() if is_message_stream(resp) else SseJson(), handler, out)


def _usage(raw: Any, input_key: str, output_key: str) -> Usage:
    """Usage of Chat/Completions/Embeddings (prompt_/completion_tokens) or Responses (input_/output_tokens)."""
    raw = as_dict(raw)
    return Usage(
        prompt_tokens=as_int(raw.get(input_key)),
        completion_tokens=as_int(raw.get(output_key)),
        total_tokens=as_int(raw.get("total_tokens")),
        # DeepSeek reports cache hits at the top level instead of in prompt_tokens_details.
        cached_tokens=_first_int(as_dict(raw.get(input_key + "_details")).get("cached_tokens"), raw.get("prompt_cache_hit_tokens")),
        reasoning_tokens=as_int(as_dict(raw.get(output_key + "_details")).get("reasoning_tokens")),
    )


def _first_int(*values: Any) -> Optional[int]:
    return next((n for n in (as_int(v) for v in values) if n is not None), None)


def _arguments_text(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (dict, list)) else None


def _message_tool_calls(message: Dict[str, Any]) -> List[ToolCall]:
    calls = []
    for raw in as_list(message.get("tool_calls")):
        raw = as_dict(raw)
        function = as_dict(raw.get("function"))
        name = as_str(function.get("name")) or as_str(as_dict(raw.get("custom")).get("name"))
        if name:
            calls.append(
                ToolCall(
                    name=name,
                    id=as_str(raw.get("id")),
                    type=as_str(raw.get("type")) or "function",
                    arguments=_arguments_text(function.get("arguments", as_dict(raw.get("custom")).get("input"))),
                )
            )
    legacy = as_dict(message.get("function_call"))
    if as_str(legacy.get("name")):
        calls.append(ToolCall(name=legacy["name"], arguments=_arguments_text(legacy.get("arguments"))))
    return calls


def _set_choices(out: AiResponseInfo, texts: Dict[int, str], finishes: Dict[int, Optional[str]]) -> None:
    count = max(list(texts) + list(finishes), default=-1) + 1
    out.choice_texts = [nonempty(texts.get(i)) for i in range(count)]
    out.choice_finish_reasons = [finishes.get(i) for i in range(count)]
    out.text = out.choice_texts[0] if out.choice_texts else None
    out.finish_reason = out.choice_finish_reasons[0] if out.choice_finish_reasons else None


def _choice_index(choice: Dict[str, Any], position: int) -> int:
    index = as_int(choice.get("index"))
    return index if index is not None and 0 <= index < 1024 else position


def _output_text(content: Any) -> Optional[str]:
    """Assistant content: a string, or (some compatible servers) a list of text parts."""
    if isinstance(content, list):
        return "".join(as_str(as_dict(p).get("text")) or "" for p in content) or None
    return as_str(content)


def _choices_response(out: AiResponseInfo, body: Dict[str, Any]) -> None:
    """Chat Completions / legacy Completions JSON body."""
    out.provider_request_id = as_str(body.get("id")) or out.provider_request_id
    out.model = as_str(body.get("model"))
    texts: Dict[int, str] = {}
    finishes: Dict[int, Optional[str]] = {}
    for position, choice in enumerate(as_list(body.get("choices"))):
        choice = as_dict(choice)
        index = _choice_index(choice, position)
        message = as_dict(choice.get("message"))
        text = _output_text(message.get("content")) if message else as_str(choice.get("text"))
        if text:
            texts[index] = text
        finishes[index] = as_str(choice.get("finish_reason"))
        out.tool_calls.extend(_message_tool_calls(message))
    _set_choices(out, texts, finishes)
    out.usage = _usage(body.get("usage"), "prompt_tokens", "completion_tokens")


class _StreamedCall:
    """A tool call assembled from deltas."""

    def __init__(self, name: Optional[str], call_id: Optional[str], kind: str) -> None:
        self.name = name
        self.id = call_id
        self.type = kind
        self.arguments: List[str] = []

    def done(self) -> Optional[ToolCall]:
        if not self.name:
            return None
        return ToolCall(name=self.name, id=self.id, type=self.type, arguments="".join(self.arguments))

    def piece(self, arguments: Optional[str]) -> ToolCall:
        """This call as a stream delta: its name and id so far, and the new arguments text."""
        return ToolCall(name=self.name or "", id=self.id, type=self.type, arguments=arguments)


class _ChoicesStream:
    """Chat Completions / legacy Completions SSE: chunks with choices[].delta (or .text)."""

    def __init__(self, out: AiResponseInfo) -> None:
        self.out = out
        self.texts: Dict[int, List[str]] = {}
        self.finishes: Dict[int, Optional[str]] = {}
        self.calls: Dict[Tuple[int, int], _StreamedCall] = {}
        self.stream_id: Optional[str] = None

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        out, chunk = self.out, event.data
        if chunk.get("error"):  # OpenRouter & co. report a failure mid-stream in a chunk
            set_error(out, stream_error(chunk["error"]))
        self.stream_id = self.stream_id or as_str(chunk.get("id"))
        out.model = out.model or nonempty(as_str(chunk.get("model")))
        usage = chunk.get("usage") or as_dict(chunk.get("x_groq")).get("usage")
        if isinstance(usage, dict):
            out.usage = _usage(usage, "prompt_tokens", "completion_tokens")
        deltas: List[StreamDelta] = []
        for position, choice in enumerate(as_list(chunk.get("choices"))):
            choice = as_dict(choice)
            index = _choice_index(choice, position)
            delta = as_dict(choice.get("delta"))
            text = as_str(delta.get("content")) if delta else as_str(choice.get("text"))
            if text:
                self.texts.setdefault(index, []).append(text)
            pieces = self._tool_deltas(index, delta)
            finish = as_str(choice.get("finish_reason"))
            if finish:
                self.finishes[index] = finish
            role = as_str(delta.get("role"))
            if text or role or finish:
                deltas.append(StreamDelta(choice_index=index, role=role, content=text or None, finish_reason=finish))
            deltas.extend(StreamDelta(choice_index=index, tool_call=piece) for piece in pieces)
        return deltas

    def _tool_deltas(self, index: int, delta: Dict[str, Any]) -> List[ToolCall]:
        """Assemble streamed tool calls; returns the pieces this chunk carried."""
        pieces: List[ToolCall] = []
        for tool_position, raw in enumerate(as_list(delta.get("tool_calls"))):
            raw = as_dict(raw)
            tool_index = as_int(raw.get("index"))
            key = (index, tool_index if tool_index is not None else tool_position)
            function = as_dict(raw.get("function"))
            call = self.calls.get(key)
            if call is None:
                call = self.calls[key] = _StreamedCall(None, None, as_str(raw.get("type")) or "function")
            call.name = call.name or as_str(function.get("name"))
            call.id = call.id or as_str(raw.get("id"))
            arguments = function.get("arguments") if isinstance(function.get("arguments"), str) else None
            if arguments is not None:
                call.arguments.append(arguments)
            pieces.append(call.piece(arguments))
        legacy = as_dict(delta.get("function_call"))
        if legacy:
            call = self.calls.setdefault((index, -1), _StreamedCall(None, None, "function"))
            call.name = call.name or as_str(legacy.get("name"))
            arguments = legacy.get("arguments") if isinstance(legacy.get("arguments"), str) else None
            if arguments is not None:
                call.arguments.append(arguments)
            pieces.append(call.piece(arguments))
        return pieces

    def close(self) -> None:
        out = self.out
        out.provider_request_id = self.stream_id or out.provider_request_id
        _set_choices(out, {i: "".join(parts) for i, parts in self.texts.items()}, self.finishes)
        out.tool_calls = [c for c in (self.calls[key].done() for key in sorted(self.calls)) if c]


def _embeddings_response(out: AiResponseInfo, body: Dict[str, Any]) -> None:
    out.model = as_str(body.get("model"))
    items = as_list(body.get("data"))
    out.embedding_count = len(items)
    if items:
        out.embedding_dimensions = _dimensions(as_dict(items[0]).get("embedding"))
    out.usage = _usage(body.get("usage"), "prompt_tokens", "completion_tokens")


def _dimensions(vector: Any) -> Optional[int]:
    """Length of an embedding: a list of floats, or base64 of little-endian float32s."""
    if isinstance(vector, list):
        return len(vector)
    if isinstance(vector, str):
        try:
            return len(base64.b64decode(vector, validate=True)) // 4
        except (binascii.Error, ValueError):
            return None
    return None


class _Collected:
    """Output assembled from Responses API stream deltas."""

    def __init__(self) -> None:
        self.text: List[str] = []
        self.calls: Dict[int, _StreamedCall] = {}


class _ResponsesStream:
    """Responses API SSE: typed events (output_text deltas, output items, function-call
    argument deltas) and a final response.completed carrying the whole response object."""

    def __init__(self, out: AiResponseInfo) -> None:
        self.out = out
        self.collected = _Collected()

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        out, data, collected = self.out, event.data, self.collected
        kind = as_str(data.get("type")) or event.event or ""
        if kind == "response.output_text.delta":
            delta = as_str(data.get("delta"))
            if delta:
                collected.text.append(delta)
                return [StreamDelta(content=delta)]
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = as_dict(data.get("item"))
            if as_str(item.get("type")) in ("function_call", "custom_tool_call"):
                call = self._call(data)
                call.name = call.name or as_str(item.get("name"))
                call.id = call.id or as_str(item.get("call_id"))
                final = _arguments_text(item.get("arguments", item.get("input")))
                if kind.endswith(".done") and final:
                    call.arguments = [final]
                    return []
                return [StreamDelta(tool_call=call.piece(None))]
        elif kind == "response.function_call_arguments.delta":
            call = self._call(data)
            if isinstance(data.get("delta"), str):
                call.arguments.append(data["delta"])
                return [StreamDelta(tool_call=call.piece(data["delta"]))]
        elif kind == "response.function_call_arguments.done":
            if isinstance(data.get("arguments"), str):
                self._call(data).arguments = [data["arguments"]]
        elif kind in ("response.created", "response.in_progress"):
            response = as_dict(data.get("response"))
            out.provider_request_id = as_str(response.get("id")) or out.provider_request_id
            out.model = out.model or nonempty(as_str(response.get("model")))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            _responses_object(out, as_dict(data.get("response")), collected)
            out.stream_finished = True
            return [StreamDelta(finish_reason=out.finish_reason)] if out.finish_reason else []
        elif kind == "error":
            # The event's own "type" is just "error"; what names the error is its code.
            set_error(out, stream_error({k: v for k, v in data.items() if k != "type"}))
        return []

    def _call(self, data: Dict[str, Any]) -> _StreamedCall:
        return self.collected.calls.setdefault(as_int(data.get("output_index")) or 0, _StreamedCall(None, None, "function"))

    def close(self) -> None:
        out, collected = self.out, self.collected
        if out.text is None and collected.text:
            out.text = "".join(collected.text)
            out.choice_texts = [out.text]
        if not out.tool_calls:
            out.tool_calls = [c for c in (collected.calls[i].done() for i in sorted(collected.calls)) if c]


def _responses_object(out: AiResponseInfo, response: Dict[str, Any], collected: _Collected) -> None:
    """A Responses API `response` object (plain body, or the one in the final stream event).

    Text and tool calls come from the streamed deltas when there were any, else from `output`.
    """
    out.provider_request_id = as_str(response.get("id")) or out.provider_request_id
    out.model = nonempty(as_str(response.get("model"))) or out.model
    status = as_str(response.get("status"))
    if status == "incomplete":
        reason = as_str(as_dict(response.get("incomplete_details")).get("reason"))
        status = f"incomplete:{reason}" if reason else status
    out.finish_reason = status
    out.choice_finish_reasons = [status]
    if isinstance(response.get("usage"), dict):
        out.usage = _usage(response["usage"], "input_tokens", "output_tokens")
    if response.get("error"):
        set_error(out, stream_error(response["error"]))
    texts: List[str] = []
    calls: List[ToolCall] = []
    for item in as_list(response.get("output")):
        item = as_dict(item)
        kind = as_str(item.get("type"))
        if kind == "message":
            for part in as_list(item.get("content")):
                part = as_dict(part)
                if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
        elif kind in ("function_call", "custom_tool_call") and as_str(item.get("name")):
            calls.append(
                ToolCall(
                    name=item["name"],
                    id=as_str(item.get("call_id")),
                    arguments=_arguments_text(item.get("arguments", item.get("input"))),
                )
            )
    if collected.text or collected.calls:
        return
    out.text = nonempty("".join(texts))
    out.choice_texts = [out.text]
    out.tool_calls = calls
