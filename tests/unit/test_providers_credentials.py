"""API key and account headers, and the endpoint URL reported for a request."""
from __future__ import annotations

import pytest

from oisp_daemon.providers.credentials import api_key
from oisp_daemon.providers.endpoint import endpoint_url, request_path


@pytest.mark.parametrize(
    "provider, headers, expected",
    [
        ("openai", [("Authorization", "Bearer sk-proj-abc")], "sk-proj-abc"),
        ("openai", [("authorization", "bearer   sk-abc  ")], "sk-abc"),
        ("anthropic", [("X-Api-Key", "sk-ant-api03-x")], "sk-ant-api03-x"),
        ("anthropic", [("Authorization", "Bearer oauth-token")], "oauth-token"),
        ("azure_openai", [("api-key", "0123abcd")], "0123abcd"),
        ("google", [("x-goog-api-key", "AIza123")], "AIza123"),
        ("replicate", [("Authorization", "Token r8_abc")], "r8_abc"),
        ("anthropic", [("x-api-key", "ant"), ("Authorization", "Bearer other")], "ant"),
        ("openai", [("Authorization", "Basic dXNlcjpwYXNz")], None),
        ("aws_bedrock", [("Authorization", "AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/bedrock/aws4_request")], None),
        ("openai", [("Authorization", "Bearer")], None),
        ("openai", [("Authorization", "  ")], None),
        ("openai", [], None),
    ],
)
def test_api_key(provider, headers, expected):
    assert api_key(provider, headers) == expected


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/chat/completions/", "/v1/chat/completions"),
        ("/openai/deployments/d/embeddings?api-version=1", "/openai/deployments/d/embeddings"),
        ("https://api.openai.com/v1/responses?x=1", "/v1/responses"),
        ("", "/"),
    ],
)
def test_request_path(target, expected):
    assert request_path(target) == expected


@pytest.mark.parametrize(
    "host, expected",
    [
        ("api.openai.com", "https://api.openai.com/v1/embeddings"),
        ("API.OpenAI.com:443", "https://api.openai.com/v1/embeddings"),
        ("localhost:11434", "https://localhost:11434/v1/embeddings"),
        ("[::1]:8000", "https://[::1]:8000/v1/embeddings"),
        ("", "https://unknown/v1/embeddings"),
    ],
)
def test_endpoint_url_drops_default_port_and_query(host, expected):
    assert endpoint_url(host, "/v1/embeddings?key=secret") == expected
