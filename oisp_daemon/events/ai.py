"""OISP `ai.request`, `ai.response` and `agent.tool_call` events from parsed AI exchanges.

Timestamps are the kernel's: the request event at the first byte sent, the response event at the
last byte received; latency and time to first token are differences of those. The API key never
enters an event: only a short prefix (which key family) and a truncated hash (which key).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Union

from oisp_daemon.decode.messages import HttpMessage, HttpRequest, HttpResponse
from oisp_daemon.events.cost import cost_usd
from oisp_daemon.events.context import HostContext
from oisp_daemon.events.envelope import Clock, derived_envelope, envelope, make_confidence, make_source, new_ulid
from oisp_daemon.events.finish_reason import normalise_finish_reason
from oisp_daemon.events.model_tables import model_family
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo, Message, ToolCall
from oisp_daemon.providers.parse import OPENAI_COMPATIBLE
# One "sha256:" + 16 hex for prompts, tool arguments and auth.key_hash: redact/digest.py is a
# stdlib-only leaf that events already reach through redact.keys, so importing it makes no cycle.
from oisp_daemon.redact.digest import short_sha256 as short_hash
from oisp_daemon.redact.keys import key_fingerprint

# provider_info.name enum of the OISP v0.1 schema; other bundle providers are reported as "other"
# with their id beside it.
OISP_PROVIDER_NAMES = frozenset(
    {
        "openai", "anthropic", "google", "azure_openai", "aws_bedrock", "cohere", "mistral", "groq",
        "together", "fireworks", "replicate", "huggingface", "ollama", "lmstudio", "vllm",
    }
)
CAPTURE_METHOD = "tls_boundary"


HostBlock = Union[HostContext, Dict[str, Any], None]


def _host_block(host: HostBlock) -> Optional[Dict[str, Any]]:
    return host.as_dict() if isinstance(host, HostContext) else host


def new_request_id() -> str:
    return "req_" + new_ulid()


def auth_info(api_key: Optional[str]) -> Optional[Dict[str, str]]:
    """OISP auth block: the key's public type prefix and a hash, as the redaction room defines them
    (one rule for what a prefix may reveal). Bearer JWTs are OAuth / Entra ID tokens, not API keys."""
    if not api_key:
        return None
    is_jwt = api_key.startswith("eyJ") and api_key.count(".") == 2
    auth = {"type": "oauth" if is_jwt else "api_key"}
    prefix, digest = key_fingerprint(api_key)
    if prefix:
        auth["key_prefix"] = prefix
    auth["key_hash"] = digest
    return auth


def _model_block(info: AiRequestInfo, model: str) -> Dict[str, str]:
    block = {"id": model}
    family = model_family(info.provider, model, info.model, info.base_model)
    if family:
        block["family"] = family
    return block


def _provider_block(info: AiRequestInfo, with_account: bool) -> Dict[str, str]:
    block = {"name": info.provider if info.provider in OISP_PROVIDER_NAMES else "other", "endpoint": info.endpoint}
    if block["name"] == "other":
        block["id"] = info.provider
    if info.region:
        block["region"] = info.region
    if with_account:
        if info.organization_id:
            block["organization_id"] = info.organization_id
        if info.project_id:
            block["project_id"] = info.project_id
    return block


def detection_method(info: AiRequestInfo) -> str:
    """How the sensor knew the call was AI: its host is a known provider's, or (openai_compatible,
    a host no table knows) its path and body have the OpenAI API's shape."""
    return "payload_inspection" if info.provider == OPENAI_COMPATIBLE else "known_endpoint"


def _confidence(
    message: HttpMessage, parse_error: Optional[str], method: str, stream_finished: bool = False
) -> Dict[str, Any]:
    """Full unless the message lost bytes (gap, body limit, ...) or its body could not be parsed.

    A stream whose own end marker was read is whole even when the client closed the connection
    before reading the chunked terminator (the OpenAI SDK does, right after "[DONE]")."""
    reasons = ["tls_boundary_capture", method]
    limitations = list(message.partial_reasons)
    if stream_finished and limitations == ["connection_closed"]:
        limitations = []
    elif not message.complete and not limitations:
        limitations.append("incomplete")
    if parse_error:
        limitations.append("parse_error")
    if limitations:
        reasons = reasons + (["message_incomplete"] if not message.complete else []) + (["body_not_parsed"] if parse_error else [])
    return make_confidence(
        completeness="partial" if limitations else "full",
        reasons=reasons,
        limitations=limitations,
        content_source="tls_boundary",
        ai_detection_method=method,
        process_attribution="direct",
    )


def _attrs(event: Dict[str, Any], **values: Any) -> None:
    present = {k: v for k, v in values.items() if v is not None}
    if present:
        event.setdefault("attrs", {}).update(present)


def _message(message: Message) -> Dict[str, Any]:
    block: Dict[str, Any] = {"role": message.role}
    if message.content is not None:
        block["content"] = message.content
    if message.has_images:
        block["has_images"] = True
        block["image_count"] = message.image_count
    if message.tool_call_id:
        block["tool_call_id"] = message.tool_call_id
    if message.name:
        block["name"] = message.name
    return block


def build_ai_request(
    info: AiRequestInfo,
    req: HttpRequest,
    *,
    clock: Clock,
    host: HostBlock = None,
    process: Optional[Dict[str, Any]] = None,
    actor: Optional[Dict[str, Any]] = None,
    request_id: Optional[str] = None,
) -> Dict[str, Any]:
    """The `ai.request` event; `request_id` (default: a new one) links the response to it."""
    data: Dict[str, Any] = {
        "request_id": request_id or new_request_id(),
        "provider": _provider_block(info, with_account=True),
        "api": info.api,
        "request_type": info.request_type,
        "streaming": info.streaming,
    }
    if info.model:
        data["model"] = _model_block(info, info.model)
    auth = auth_info(info.api_key)
    if auth:
        data["auth"] = auth
    if info.messages:
        data["messages"] = [_message(m) for m in info.messages]
    data["messages_count"] = len(info.messages)
    data["has_system_prompt"] = info.system_prompt is not None
    if info.system_prompt is not None:
        data["system_prompt_hash"] = short_hash(info.system_prompt)
    if info.tools:
        data["tools"] = [
            {k: v for k, v in (("name", t.name), ("type", t.type), ("description", t.description)) if v is not None} for t in info.tools
        ]
    data["tools_count"] = len(info.tools)
    if info.tool_choice:
        data["tool_choice"] = info.tool_choice
    if info.parameters:
        data["parameters"] = dict(info.parameters)
    images = sum(m.image_count for m in info.messages)
    data["has_images"] = images > 0
    if images:
        data["image_count"] = images
    event = envelope(
        "ai.request",
        req.ts_start_ns,
        clock,
        make_source(CAPTURE_METHOD, "ssl_write"),
        _confidence(req, info.parse_error, detection_method(info)),
        host=_host_block(host),
        actor=actor,
        process=process,
        data=data,
    )
    _attrs(event, parse_error=info.parse_error, **info.attribution)
    return event


def _usage(info: AiRequestInfo, resp_info: AiResponseInfo, model: Optional[str]) -> Dict[str, Any]:
    usage = resp_info.usage
    block: Dict[str, Any] = {}
    for key in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"):
        value = getattr(usage, key)
        if value is not None:
            block[key] = value
    if usage.cache_creation_tokens is not None:
        block["cache_creation_tokens"] = usage.cache_creation_tokens
    if "total_tokens" not in block and usage.prompt_tokens is not None and usage.completion_tokens is not None:
        cache = 0 if usage.cache_in_prompt else (usage.cached_tokens or 0) + (usage.cache_creation_tokens or 0)
        reasoning = 0 if usage.reasoning_in_completion else usage.reasoning_tokens or 0
        block["total_tokens"] = usage.prompt_tokens + usage.completion_tokens + cache + reasoning
    cost = cost_usd(info.provider, model, usage, request_model=info.model, base_model=info.base_model)
    if cost is not None:
        block["input_cost_usd"], block["output_cost_usd"], block["total_cost_usd"] = cost
    return block


def _tool_call(call: ToolCall) -> Dict[str, Any]:
    block: Dict[str, Any] = {"name": call.name, "type": call.type}
    if call.id:
        block["id"] = call.id
    if call.arguments is not None:
        block["arguments"] = call.arguments
        block["arguments_hash"] = short_hash(call.arguments)
    return block


def _ms(start_ns: int, end_ns: int) -> int:
    return max(end_ns - start_ns, 0) // 1_000_000


def build_ai_response(
    info: AiRequestInfo,
    resp_info: AiResponseInfo,
    req: HttpRequest,
    resp: HttpResponse,
    *,
    request_event: Dict[str, Any],
    clock: Clock,
    host: HostBlock = None,
    process: Optional[Dict[str, Any]] = None,
    actor: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The `ai.response` event, child of `request_event` (same data.request_id)."""
    model = resp_info.model or info.model
    data: Dict[str, Any] = {
        "request_id": request_event["data"]["request_id"],
        "provider": _provider_block(info, with_account=False),
        "api": info.api,
        "status_code": resp_info.status_code,
        "success": resp_info.success,
        "streaming": resp_info.streaming,
    }
    if resp_info.provider_request_id:
        data["provider_request_id"] = resp_info.provider_request_id
    if model:
        data["model"] = _model_block(info, model)
    if resp_info.error_type or resp_info.error_message:
        error = {"type": resp_info.error_type, "message": resp_info.error_message, "code": resp_info.error_code}
        data["error"] = {k: v for k, v in error.items() if v is not None}
    has_tools = bool(resp_info.tool_calls)
    choices = []
    for index in range(max(len(resp_info.choice_texts), len(resp_info.choice_finish_reasons))):
        text = resp_info.choice_texts[index] if index < len(resp_info.choice_texts) else None
        raw = resp_info.choice_finish_reasons[index] if index < len(resp_info.choice_finish_reasons) else None
        message: Dict[str, Any] = {"role": "assistant"}
        if text is not None:
            message["content"] = text
        choice: Dict[str, Any] = {"index": index, "message": message}
        finish = normalise_finish_reason(resp_info.finish_reason_names.get(raw or "", raw), has_tools)
        if finish:
            choice["finish_reason"] = finish
        choices.append(choice)
    if choices:
        data["choices"] = choices
    if resp_info.tool_calls:
        data["tool_calls"] = [_tool_call(c) for c in resp_info.tool_calls]
    data["tool_calls_count"] = len(resp_info.tool_calls)
    usage = _usage(info, resp_info, model)
    if usage:
        data["usage"] = usage
    data["latency_ms"] = _ms(req.ts_start_ns, resp.ts_end_ns)
    if resp_info.first_token_offset is not None:
        # SseEvent.offset is just past the event; its last byte is what completed it.
        first_token_ns = resp.ts_at_offset(max(resp_info.first_token_offset - 1, 0))
        data["time_to_first_token_ms"] = _ms(req.ts_start_ns, first_token_ns)
    finish = normalise_finish_reason(resp_info.finish_reason_names.get(resp_info.finish_reason or "", resp_info.finish_reason), has_tools)
    if finish is None and not resp_info.success:
        finish = "error"
    if finish:
        data["finish_reason"] = finish
    if resp_info.finish_reason is not None:
        data["provider_finish_reason"] = resp_info.finish_reason
    if info.request_type == "embedding":
        count = info.input_count if info.input_count is not None else resp_info.embedding_count
        if count is not None:
            data["input_count"] = count
        if resp_info.embedding_dimensions is not None:
            data["dimensions"] = resp_info.embedding_dimensions
    event = envelope(
        "ai.response",
        resp.ts_end_ns,
        clock,
        make_source(CAPTURE_METHOD, "ssl_read"),
        _confidence(resp, resp_info.parse_error, detection_method(info), resp_info.stream_finished),
        host=_host_block(host),
        actor=actor,
        process=process,
        data=data,
        related=[(request_event["event_id"], "parent")],
    )
    _attrs(event, parse_error=resp_info.parse_error, **resp_info.attribution)
    return event


# Why an exchange ended with no response seen (decode/protocol.py), as the event's error says it.
_NO_RESPONSE_WHY = {
    "connection_closed": "the connection was closed before a response arrived",
    "process_exit": "the process exited before a response arrived",
    "idle_timeout": "no response arrived before the connection idled out",
    "too_many_pending": "too many requests were waiting for responses on the connection",
    "gap": "bytes of the connection were lost, the response among them",
    "decode_error": "the connection could not be decoded any further",
    "ignored": "the connection was no longer captured",
    "upgrade": "the connection switched protocols",
    "tunnel": "the connection became a tunnel",
    "not_http1": "the response was not HTTP/1.x",
    "http2_preface": "the connection spoke HTTP/2",
    "http2_error": "the HTTP/2 connection broke its framing rules",
    "rst_stream": "the HTTP/2 stream was reset",
    "goaway": "the server refused the HTTP/2 stream (GOAWAY)",
}


def build_ai_response_missing(
    info: AiRequestInfo,
    why: str,
    ts_ns: int,
    *,
    request_event: Dict[str, Any],
    clock: Clock,
    host: HostBlock = None,
    process: Optional[Dict[str, Any]] = None,
    actor: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The `ai.response` of a request whose response the sensor never saw (`why`: the reason the
    exchange ended, at kernel time `ts_ns`): a call that hung or was killed is reported, not lost.

    Partial, as a response cut by a gap or the body limit is: limitations ["no_response", why],
    and `missing` says that the response is. It carries what is known from the request, and no
    status code or latency, which would be made up."""
    data: Dict[str, Any] = {
        "request_id": request_event["data"]["request_id"],
        "provider": _provider_block(info, with_account=False),
        "api": info.api,
        "success": False,
        "streaming": info.streaming,
        "error": {"type": "no_response", "message": "no response: " + _NO_RESPONSE_WHY.get(why, why)},
    }
    if info.model:
        data["model"] = _model_block(info, info.model)
    confidence = make_confidence(
        completeness="partial",
        reasons=["tls_boundary_capture", detection_method(info), "message_incomplete"],
        limitations=["no_response", why],
        missing=["response"],
        content_source="tls_boundary",
        ai_detection_method=detection_method(info),
        process_attribution="direct",
    )
    return envelope(
        "ai.response",
        ts_ns,
        clock,
        make_source(CAPTURE_METHOD, "ssl_read"),
        confidence,
        host=_host_block(host),
        actor=actor,
        process=process,
        data=data,
        related=[(request_event["event_id"], "parent")],
    )


def build_tool_call_events(resp_info: AiResponseInfo, response_event: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One `agent.tool_call` per tool call the model asked for, caused by the `ai.response` (whose
    time, host, actor and process they share).

    Arguments are an object when the model produced a JSON object; anything else (truncated or
    invalid JSON, a bare string) is kept raw under attrs, with only its hash in data.
    """
    events = []
    for call in resp_info.tool_calls:
        data: Dict[str, Any] = {"tool": {"name": call.name}, "triggered_by": "llm_decision"}
        if call.id:
            data["call_id"] = call.id
        data["request_id"] = response_event["data"]["request_id"]
        raw_arguments = None
        if call.arguments is not None:
            data["arguments_hash"] = short_hash(call.arguments)
            try:
                parsed = json.loads(call.arguments)
            except (ValueError, RecursionError):
                parsed = None
            if isinstance(parsed, dict):
                data["arguments"] = parsed
            else:
                raw_arguments = call.arguments
        event = derived_envelope(
            "agent.tool_call",
            response_event,
            make_source(CAPTURE_METHOD, "ssl_read"),
            make_confidence(
                completeness=response_event["confidence"]["completeness"],
                reasons=["llm_tool_call_observed"],
                limitations=response_event["confidence"].get("limitations", ()),
                content_source="tls_boundary",
                process_attribution="direct",
            ),
            data=data,
            related=[(response_event["event_id"], "caused_by")],
        )
        _attrs(event, arguments_raw=raw_arguments, tool_call_type=call.type if call.type != "function" else None)
        events.append(event)
    return events
