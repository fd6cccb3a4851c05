"""Dispatch an HTTP exchange to the parser of its API family.

Requests are routed by provider and path: Anthropic's own API for provider "anthropic", and the
OpenAI API shape (Chat Completions, Completions, Embeddings, Responses) for any provider that
serves it: OpenAI, Azure OpenAI, and the many OpenAI-compatible servers (Groq, DeepSeek, Mistral,
vLLM, Ollama's /v1, Anthropic's compatibility endpoint, ...). Responses go back to the parser that
understood the request.

Parsers must never take the pipeline down: captured bodies are arbitrary bytes. They are written to
tolerate anything, and as a last line of defence an unexpected exception becomes `parse_error`.
"""
from __future__ import annotations

import logging
from types import ModuleType
from typing import Optional

from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.providers import anthropic, openai
from oisp_daemon.providers.endpoint import endpoint_url
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo

log = logging.getLogger(__name__)

# Providers with an API of their own, tried before the OpenAI shape.
_NATIVE = {"anthropic": anthropic}
# AiRequestInfo.api prefix -> parser module.
_FAMILIES = {"openai": openai, "anthropic": anthropic}


def _family(provider: str, req: HttpRequest) -> Optional[ModuleType]:
    native = _NATIVE.get(provider)
    if native is not None and native.route(req.method, req.target):
        return native
    return openai if openai.route(req.method, req.target) else None


def parse_request(provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
    """AI semantics of a request, or None when it is not an AI API call this sensor knows
    (GET /v1/models, /v1/messages/count_tokens, Gemini's native API, ...)."""
    family = _family(provider, req)
    if family is None:
        return None
    try:
        return family.parse_request(provider, req, host)
    except Exception as exc:  # noqa: BLE001 - see module docstring
        log.exception("request parser failed for provider %s", provider)
        api, request_type = family.route(req.method, req.target)
        return AiRequestInfo(
            provider=provider,
            api=api,
            request_type=request_type,
            endpoint=endpoint_url(host, req.target),
            parse_error=f"parser error: {type(exc).__name__}",
        )


def parse_response(info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
    """AI semantics of the response to a request that parse_request understood."""
    family = _FAMILIES.get(info.api.split(".", 1)[0], openai)
    try:
        return family.parse_response(info, resp)
    except Exception as exc:  # noqa: BLE001 - see module docstring
        log.exception("response parser failed for %s", info.api)
        return AiResponseInfo(
            status_code=resp.status,
            success=200 <= resp.status < 300,
            model=info.model,
            parse_error=f"parser error: {type(exc).__name__}",
        )
