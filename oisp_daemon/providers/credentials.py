"""The credential and account headers of an AI API request.

The key is kept on AiRequestInfo only long enough for the event builder to derive a short prefix
and a hash from it; it never goes into an event.
"""
from __future__ import annotations

from typing import Optional

from oisp_daemon.decode.messages import Headers, header_value
from oisp_daemon.providers.exchange import AiRequestInfo
from oisp_daemon.providers.registry import provider_auth

# Where API keys travel when the provider's own convention (from the bundle) finds none:
# OpenAI-style bearer tokens, Anthropic, Azure OpenAI, Google AI Studio.
_KEY_HEADERS = ("Authorization", "x-api-key", "api-key", "x-goog-api-key")
_TOKEN_SCHEMES = ("bearer", "token")


def _key_from(name: str, value: Optional[str]) -> Optional[str]:
    if not value or not value.strip():
        return None
    value = value.strip()
    if name.lower() != "authorization":
        return value
    scheme, _, rest = value.partition(" ")
    if scheme.lower() in _TOKEN_SCHEMES:
        return rest.strip() or None
    # Other schemes (Basic, AWS4-HMAC-SHA256 signatures) carry no reusable API key; a lone
    # token without a scheme is the key itself.
    return None if rest else value


def api_key(provider: str, headers: Headers) -> Optional[str]:
    """The API key as sent: the provider's documented header first, then the common ones."""
    preferred = provider_auth(provider).get("auth_header")
    names = ((preferred,) if preferred else ()) + _KEY_HEADERS
    for name in names:
        key = _key_from(name, header_value(headers, name))
        if key:
            return key
    return None


def fill_credentials(info: AiRequestInfo, headers: Headers) -> None:
    """Set api_key, organization_id and project_id on `info` from the request headers."""
    info.api_key = api_key(info.provider, headers)
    auth = provider_auth(info.provider)
    org_header = auth.get("organization_header")
    project_header = auth.get("project_header")
    info.organization_id = header_value(headers, org_header) if org_header else None
    info.project_id = header_value(headers, project_header) if project_header else None
