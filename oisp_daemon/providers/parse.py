"""Dispatch an HTTP exchange to the API family that understands it (providers/families.py).

A provider's own API is tried first (Anthropic's Messages for provider "anthropic"), then the
families whose shape many providers serve (the OpenAI API: OpenAI, Azure OpenAI, Groq, DeepSeek,
vLLM, Ollama's /v1, ...). Responses and streams go back to the family that understood the request.

Parsers must never take the pipeline down: captured bodies are arbitrary bytes. They are written to
tolerate anything, and as a last line of defence an unexpected exception becomes `parse_error`.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.providers.endpoint import endpoint_url
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo
from oisp_daemon.providers.families import FAMILIES
from oisp_daemon.providers.family import ApiFamily
from oisp_daemon.providers.fields import load_json_object
from oisp_daemon.providers.stream import StreamDecoder

log = logging.getLogger(__name__)

_BY_NAME: Dict[str, ApiFamily] = {family.FAMILY: family for family in FAMILIES}

# The provider id of OpenAI-shaped traffic to a host no table knows (an in-house gateway, a
# self-hosted model): events name it with the host in the endpoint.
OPENAI_COMPATIBLE = "openai_compatible"
# What a body must hold beside a "model" string to be an OpenAI-shaped call: chat messages, a
# completion prompt, or Responses / embeddings input.
_SHAPE_KEYS = {"messages": (list,), "prompt": (str, list), "input": (str, list)}


def family_for(provider: str, req: HttpRequest) -> Optional[ApiFamily]:
    """The family whose call this request is: the provider's own API first, then shared shapes."""
    for family in FAMILIES:
        if provider in family.NATIVE_PROVIDERS and family.route(req.method, req.target):
            return family
    for family in FAMILIES:
        if family.ANY_PROVIDER and family.route(req.method, req.target):
            return family
    return None


def is_openai_compatible(req: HttpRequest) -> bool:
    """Whether a request to a host no table knows is an OpenAI-shaped AI call: its path is one
    of the OpenAI API's (/v1/chat/completions, /responses, ...) AND its body is a JSON object with
    a non-empty "model" string and messages, a prompt or input of the right type. Both are needed,
    so that other JSON POSTs (webhooks, REST APIs that happen to have a /completions path) are
    not taken for AI traffic. A body cut by the size limit is not JSON and does not qualify."""
    family = family_for(OPENAI_COMPATIBLE, req)
    if family is None or family.FAMILY != "openai":
        return False
    body, error = load_json_object(req.body)
    if error or not isinstance(body.get("model"), str) or not body["model"].strip():
        return False
    return any(isinstance(body.get(key), types) and body[key] for key, types in _SHAPE_KEYS.items())


def _family_of(info: AiRequestInfo) -> Optional[ApiFamily]:
    return _BY_NAME.get(info.api.split(".", 1)[0])


def parse_request(provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
    """AI semantics of a request, or None when it is not an AI API call this sensor knows
    (GET /v1/models, /v1/messages/count_tokens, ...)."""
    family = family_for(provider, req)
    if family is None:
        return None
    try:
        return family.parse_request(provider, req, host)
    except Exception as exc:  # noqa: BLE001 - see module docstring
        log.exception("request parser failed for provider %s", provider)
        api, request_type = family.route(req.method, req.target) or (f"{family.FAMILY}.unknown", "other")
        return AiRequestInfo(
            provider=provider,
            api=api,
            request_type=request_type,
            endpoint=endpoint_url(host, req.target),
            parse_error=f"parser error: {type(exc).__name__}",
        )


def stream_decoder(info: AiRequestInfo, resp: HttpResponse) -> Optional[StreamDecoder]:
    """A live decoder for the streamed answer to a request parse_request understood, or None."""
    family = _family_of(info)
    if family is None:
        return None
    try:
        return family.stream_decoder(info, resp)
    except Exception:  # noqa: BLE001 - see module docstring
        log.exception("stream decoder failed to start for %s", info.api)
        return None


def parse_response(info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
    """AI semantics of the response to a request that parse_request understood."""
    family = _family_of(info)
    try:
        if family is None:
            raise LookupError(f"no family for {info.api}")
        return family.parse_response(info, resp)
    except Exception as exc:  # noqa: BLE001 - see module docstring
        log.exception("response parser failed for %s", info.api)
        return AiResponseInfo(
            status_code=resp.status,
            success=200 <= resp.status < 300,
            model=info.model,
            parse_error=f"parser error: {type(exc).__name__}",
        )
