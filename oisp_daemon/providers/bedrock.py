"""AWS Bedrock runtime: Converse, ConverseStream, InvokeModel and InvokeModelWithResponseStream.

The model id is in the path (`/model/<id>/converse`, URL-encoded: `anthropic.claude-...%3A0`),
optionally behind a cross-region prefix (`us.`, `eu.`, ...). Converse has one body shape for
every model; InvokeModel carries the model's native body, picked here by the model's family:
Anthropic (Messages API), Amazon Titan and Nova, Meta Llama, Mistral, Cohere. Streams use the AWS
event stream framing (CRC-checked). Attribution: the SigV4 access key id from the
Authorization header's Credential, never the signature.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional
from urllib.parse import unquote

from oisp_daemon.decode.messages import HttpRequest, HttpResponse, header_value
from oisp_daemon.providers import anthropic
from oisp_daemon.providers.endpoint import request_path
from oisp_daemon.providers.errors import ErrorInfo
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo, Message, StreamDelta, ToolCall, ToolDefinition, Usage
from oisp_daemon.providers.family import Route
from oisp_daemon.providers.fields import as_dict, as_int, as_list, as_str, nonempty
from oisp_daemon.providers.parsing import set_error, start_request, start_response
from oisp_daemon.providers.prompt import make_message, named_parameters, system_prompt
from oisp_daemon.providers.stream import AwsEventStream, JsonEvent, StreamDecoder, decode_whole

# The ApiFamily interface (providers/family.py).
FAMILY = "bedrock"
NATIVE_PROVIDERS = frozenset({"aws_bedrock"})
ANY_PROVIDER = False

API_CONVERSE = "bedrock.converse"
API_CONVERSE_STREAM = "bedrock.converse_stream"
API_INVOKE = "bedrock.invoke"
API_INVOKE_STREAM = "bedrock.invoke_stream"

_ROUTE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream|invoke|invoke-with-response-stream)$")
_OPS = {
    "converse": API_CONVERSE,
    "converse-stream": API_CONVERSE_STREAM,
    "invoke": API_INVOKE,
    "invoke-with-response-stream": API_INVOKE_STREAM,
}
_STREAMS = (API_CONVERSE_STREAM, API_INVOKE_STREAM)
_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]{16,128})/")
_REGION_HOST = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com", re.IGNORECASE)
_CROSS_REGION = re.compile(r"^(?:us|eu|apac|us-gov|global|ca|jp|au)\.")


def _model_family(model: str) -> str:
    """anthropic | amazon | meta | mistral | cohere | other, from a (possibly prefixed) model id."""
    base = _CROSS_REGION.sub("", model.rsplit("/", 1)[-1])
    vendor = base.split(".", 1)[0]
    return vendor if vendor in ("anthropic", "amazon", "meta", "mistral", "cohere") else "other"


def _embedding(model: str) -> bool:
    return "embed" in model


def route(method: str, target: str) -> Optional[Route]:
    match = _ROUTE.match(request_path(target)) if method.upper() == "POST" else None
    if not match:
        return None
    api = _OPS[match.group("op")]
    model = unquote(match.group("model"))
    return api, "embedding" if _embedding(model) else "chat"


# ---------------------------------------------------------------------------------------------
# Requests


def parse_request(provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
    found = route(req.method, req.target)
    if found is None:
        return None
    match = _ROUTE.match(request_path(req.target))
    assert match is not None  # route() matched the same path
    info, body = start_request(provider, req, host, found)
    info.model = unquote(match.group("model"))
    base = _CROSS_REGION.sub("", info.model)
    info.base_model = base if base != info.model else None
    info.streaming = info.api in _STREAMS
    credential = _CREDENTIAL.search(header_value(req.headers, "authorization") or "")
    info.api_key = credential.group(1) if credential else None  # the access key id, not a secret
    region = _REGION_HOST.match(host or "")
    info.region = region.group(1) if region else None
    if body is None:
        return info
    if info.api in (API_CONVERSE, API_CONVERSE_STREAM):
        _converse_request(info, body)
    else:
        _invoke_request(info, body)
    return info


def _converse_request(info: AiRequestInfo, body: Dict[str, Any]) -> None:
    system = "\n".join(t for t in (as_str(as_dict(block).get("text")) for block in as_list(body.get("system"))) if t)
    if system:
        info.system_prompt = system
        info.messages.append(Message(role="system", content=system))
    for raw in as_list(body.get("messages")):
        info.messages.extend(_converse_messages(as_dict(raw)))
    for tool in as_list(as_dict(body.get("toolConfig")).get("tools")):
        spec = as_dict(as_dict(tool).get("toolSpec"))
        if as_str(spec.get("name")):
            info.tools.append(ToolDefinition(name=spec["name"], description=as_str(spec.get("description"))))
    choice = as_dict(as_dict(body.get("toolConfig")).get("toolChoice"))
    info.tool_choice = "auto" if "auto" in choice else "required" if "any" in choice else "specific" if "tool" in choice else None
    config = as_dict(body.get("inferenceConfig"))
    info.parameters = named_parameters(config, temperature="temperature", top_p="topP", max_tokens="maxTokens", stop="stopSequences")


def _converse_messages(raw: Dict[str, Any]) -> List[Message]:
    """A Converse message: its text and images, and one tool message per toolResult block."""
    role = as_str(raw.get("role")) or "user"
    texts, images, messages = [], 0, []
    for block in as_list(raw.get("content")):
        block = as_dict(block)
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif "image" in block or "document" in block:
            images += 1
        elif "toolResult" in block:
            result = as_dict(block["toolResult"])
            parts = [as_str(as_dict(c).get("text")) or json.dumps(as_dict(c).get("json")) for c in as_list(result.get("content"))]
            messages.append(Message(role="tool", tool_call_id=as_str(result.get("toolUseId")), content="\n".join(p for p in parts if p) or None,
                                    is_error=result.get("status") == "error"))
    if texts or images or not messages:
        messages.insert(0, Message(role="assistant" if role == "assistant" else "user", content="\n".join(texts) or None,
                                   has_images=images > 0, image_count=images))
    return messages


def _invoke_request(info: AiRequestInfo, body: Dict[str, Any]) -> None:
    family = _model_family(info.model or "")
    if family == "anthropic":
        if "messages" in body:
            anthropic.messages_request(info, body)
        elif isinstance(body.get("prompt"), str):
            info.messages = [Message(role="user", content=body["prompt"])]
        return
    if family == "amazon" and "messages" in body:  # Nova: a Converse-like body
        _converse_request(info, body)
        info.parameters.update(named_parameters(as_dict(body.get("inferenceConfig")), max_tokens="max_new_tokens", top_p="topP",
                                           stop="stopSequences"))
        return
    if family == "amazon":  # Titan text and embeddings
        text = as_str(body.get("inputText"))
        info.messages = [Message(role="user", content=text)] if text is not None else []
        info.input_count = 1 if _embedding(info.model or "") else None
        info.parameters = named_parameters(as_dict(body.get("textGenerationConfig")), max_tokens="maxTokenCount", top_p="topP",
                                      stop="stopSequences")
        return
    if family == "cohere" and isinstance(body.get("texts"), list):
        info.input_count = len(body["texts"])
        return
    if family == "cohere" and isinstance(body.get("message"), str):
        info.messages = [Message(role="user", content=body["message"])]
    elif "messages" in body:  # Mistral and Llama chat bodies
        info.messages = [make_message(as_dict(m).get("role"), as_dict(m).get("content")) for m in as_list(body.get("messages"))]
        info.system_prompt = system_prompt(info.messages)
    elif isinstance(body.get("prompt"), str):
        info.messages = [Message(role="user", content=body["prompt"])]
    info.parameters = named_parameters(body, max_tokens="max_gen_len" if family == "meta" else "max_tokens", top_p="top_p" if family != "cohere" else "p")


# ---------------------------------------------------------------------------------------------
# Responses


def parse_response(info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
    if info.api in _STREAMS and 200 <= resp.status < 300:
        out = AiResponseInfo(status_code=resp.status, success=True, streaming=True,
                             provider_request_id=resp.header("x-amzn-RequestId"))
        decode_whole(_decoder(info, out), resp.body)
    else:
        out, body = start_response(info, resp, ("x-amzn-RequestId",))
        if resp.status >= 400 and out.error_message is None and body is None:
            out.error_message = _aws_message(resp.body)
        if body is not None:
            if info.api == API_CONVERSE:
                _converse_object(out, body)
            else:
                _invoke_object(info, out, body)
        _header_usage(out, resp)
    out.model = out.model or info.model
    return out


def stream_decoder(info: AiRequestInfo, resp: HttpResponse) -> Optional[StreamDecoder]:
    if info.api not in _STREAMS or resp.status >= 400:
        return None
    return _decoder(info, AiResponseInfo(status_code=resp.status, success=True, streaming=True))


def _aws_message(body: bytes) -> Optional[str]:
    """AWS errors say `{"message": ...}` (or "Message") with the type in x-amzn-ErrorType."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    value = as_dict(value)
    return as_str(value.get("message")) or as_str(value.get("Message"))


def _header_usage(out: AiResponseInfo, resp: HttpResponse) -> None:
    """InvokeModel reports token counts in headers for every model."""
    usage = out.usage
    if usage.prompt_tokens is None:
        usage.prompt_tokens = _header_int(resp, "X-Amzn-Bedrock-Input-Token-Count")
    if usage.completion_tokens is None:
        usage.completion_tokens = _header_int(resp, "X-Amzn-Bedrock-Output-Token-Count")


def _header_int(resp: HttpResponse, name: str) -> Optional[int]:
    value = (resp.header(name) or "").strip()
    return int(value) if value.isdigit() and len(value) < 12 else None


def _converse_usage(raw: Any) -> Usage:
    raw = as_dict(raw)
    return Usage(
        prompt_tokens=as_int(raw.get("inputTokens")),
        completion_tokens=as_int(raw.get("outputTokens")),
        total_tokens=as_int(raw.get("totalTokens")),
        cached_tokens=as_int(raw.get("cacheReadInputTokens")),
        cache_creation_tokens=as_int(raw.get("cacheWriteInputTokens")),
        cache_in_prompt=False,  # Converse counts cache reads and writes apart from inputTokens
    )


def _set_answer(out: AiResponseInfo, text: Optional[str], finish: Optional[str]) -> None:
    out.text = nonempty(text)
    out.finish_reason = finish
    out.choice_texts, out.choice_finish_reasons = [out.text], [finish]


def _converse_object(out: AiResponseInfo, body: Dict[str, Any]) -> None:
    message = as_dict(as_dict(body.get("output")).get("message"))
    texts = []
    for block in as_list(message.get("content")):
        block = as_dict(block)
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif "toolUse" in block:
            use = as_dict(block["toolUse"])
            if as_str(use.get("name")):
                out.tool_calls.append(ToolCall(name=use["name"], id=as_str(use.get("toolUseId")), arguments=json.dumps(use.get("input"))))
    _set_answer(out, "".join(texts), as_str(body.get("stopReason")))
    out.usage = _converse_usage(body.get("usage"))


def _invoke_object(info: AiRequestInfo, out: AiResponseInfo, body: Dict[str, Any]) -> None:
    family = _model_family(info.model or "")
    if family == "anthropic":
        anthropic.message_object(out, body) if "content" in body else _set_answer(out, as_str(body.get("completion")), as_str(body.get("stop_reason")))
        return
    if "output" in body and "message" in as_dict(body.get("output")):  # Nova
        _converse_object(out, body)
        return
    if isinstance(body.get("embedding"), list) or isinstance(body.get("embeddings"), (list, dict)):
        vectors = [body["embedding"]] if isinstance(body.get("embedding"), list) else body.get("embeddings")
        if isinstance(vectors, dict):
            vectors = next((v for v in vectors.values() if isinstance(v, list)), [])
        out.embedding_count = len(vectors)
        out.embedding_dimensions = len(vectors[0]) if vectors and isinstance(vectors[0], list) else None
        out.usage = Usage(prompt_tokens=as_int(body.get("inputTextTokenCount")))
        return
    handler = _NativeChunk(out, family)
    handler.apply(body)
    handler.close()


class _NativeChunk:
    """Non-Anthropic model-native answers, whole or one stream chunk at a time: Titan
    (`outputText`/`results`), Llama (`generation`), Mistral (`outputs`), Cohere (`text`,
    `generations`). Each stream's last chunk carries amazon-bedrock-invocationMetrics."""

    def __init__(self, out: AiResponseInfo, family: str) -> None:
        self.out = out
        self.family = family
        self.texts: List[str] = []
        self.finish: Optional[str] = None

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        if event.event == "exception":
            set_error(self.out, _exception(event.data))
            return []
        return self.apply(event.data)

    def apply(self, data: Dict[str, Any]) -> List[StreamDelta]:
        text, finish = _native_text(data)
        usage = self.out.usage
        counts = as_dict(data.get("amazon-bedrock-invocationMetrics"))
        for field, keys in (("prompt_tokens", ("inputTokenCount", "prompt_token_count", "inputTextTokenCount")),
                            ("completion_tokens", ("outputTokenCount", "generation_token_count"))):
            for key in keys:
                value = as_int(counts.get(key)) if key in counts else as_int(data.get(key))
                if value is not None:
                    setattr(usage, field, value)
                    break
        for result in as_list(data.get("results")):  # Titan whole answers
            result = as_dict(result)
            usage.completion_tokens = as_int(result.get("tokenCount")) or usage.completion_tokens
        if text:
            self.texts.append(text)
        self.finish = finish or self.finish
        return [StreamDelta(content=text or None, finish_reason=finish)] if text or finish else []

    def close(self) -> None:
        _set_answer(self.out, "".join(self.texts), self.finish)


def _native_text(data: Dict[str, Any]) -> "tuple[Optional[str], Optional[str]]":
    """(text, finish reason) of one native answer or chunk, whichever model family sent it."""
    if "outputText" in data:
        return as_str(data.get("outputText")), as_str(data.get("completionReason"))
    if "results" in data:
        first = as_dict(next(iter(as_list(data.get("results"))), {}))
        return as_str(first.get("outputText")), as_str(first.get("completionReason"))
    if "generation" in data:
        return as_str(data.get("generation")), as_str(data.get("stop_reason"))
    if "outputs" in data:
        first = as_dict(next(iter(as_list(data.get("outputs"))), {}))
        return as_str(first.get("text")), as_str(first.get("stop_reason"))
    if "generations" in data:
        first = as_dict(next(iter(as_list(data.get("generations"))), {}))
        return as_str(first.get("text")), as_str(first.get("finish_reason"))
    if "text" in data:
        return as_str(data.get("text")), as_str(data.get("finish_reason"))
    return None, None


def _exception(data: Dict[str, Any]) -> ErrorInfo:
    return ErrorInfo(as_str(data.get("__type")) or "stream_error", as_str(data.get("message")) or as_str(data.get("Message")), None)


class _ConverseStream:
    """ConverseStream events: messageStart, contentBlockStart (tool use), contentBlockDelta
    (text, tool input pieces, reasoning), messageStop (stop reason), metadata (usage)."""

    def __init__(self, out: AiResponseInfo) -> None:
        self.out = out
        self.texts: List[str] = []
        self.calls: Dict[int, ToolCall] = {}
        self.finish: Optional[str] = None

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        data, kind = event.data, event.event or ""
        index = as_int(data.get("contentBlockIndex")) or 0
        if kind == "messageStart":
            return [StreamDelta(role="assistant")]
        if kind == "contentBlockStart":
            use = as_dict(as_dict(data.get("start")).get("toolUse"))
            if as_str(use.get("name")):
                call = self.calls[index] = ToolCall(name=use["name"], id=as_str(use.get("toolUseId")), arguments="")
                return [StreamDelta(tool_call=ToolCall(name=call.name, id=call.id))]
        elif kind == "contentBlockDelta":
            delta = as_dict(data.get("delta"))
            text = as_str(delta.get("text"))
            if text:
                self.texts.append(text)
                return [StreamDelta(content=text)]
            piece = as_str(as_dict(delta.get("toolUse")).get("input"))
            call = self.calls.get(index)
            if piece and call is not None:
                call.arguments = (call.arguments or "") + piece
                return [StreamDelta(tool_call=ToolCall(name=call.name, id=call.id, arguments=piece))]
        elif kind == "messageStop":
            self.finish = as_str(data.get("stopReason"))
            self.out.stream_finished = True
            return [StreamDelta(finish_reason=self.finish)] if self.finish else []
        elif kind == "metadata":
            self.out.usage = _converse_usage(data.get("usage"))
        elif kind == "exception":
            set_error(self.out, _exception(data))
        return []

    def close(self) -> None:
        _set_answer(self.out, "".join(self.texts), self.finish)
        self.out.tool_calls = [self.calls[i] for i in sorted(self.calls)]


class _AnthropicInvokeStream:
    """InvokeModelWithResponseStream of an Anthropic model: the Messages stream events, unwrapped."""

    def __init__(self, out: AiResponseInfo) -> None:
        self.messages = anthropic.MessagesStream(out)
        self.out = out

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        if event.event == "exception":
            set_error(self.out, _exception(event.data))
            return []
        deltas = self.messages.on_event(event)
        metrics = as_dict(event.data.get("amazon-bedrock-invocationMetrics"))
        if metrics:
            self.out.usage.prompt_tokens = as_int(metrics.get("inputTokenCount")) or self.out.usage.prompt_tokens
            self.out.usage.completion_tokens = as_int(metrics.get("outputTokenCount")) or self.out.usage.completion_tokens
        return deltas

    def close(self) -> None:
        self.messages.close()


def _decoder(info: AiRequestInfo, out: AiResponseInfo) -> StreamDecoder:
    handler: Any
    if info.api == API_CONVERSE_STREAM:
        handler = _ConverseStream(out)
    elif _model_family(info.model or "") == "anthropic":
        handler = _AnthropicInvokeStream(out)
    else:
        handler = _NativeChunk(out, _model_family(info.model or ""))
    return StreamDecoder(AwsEventStream(), handler, out)
