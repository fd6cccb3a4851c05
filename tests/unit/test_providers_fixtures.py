"""Every recorded exchange the parsers claim is parsed to what its fixture's `expect` block says.

Every provider's recordings: the native families (OpenAI, Azure OpenAI, Anthropic, Gemini and
Vertex AI, Bedrock, Cohere, Ollama) and the OpenAI-compatible servers (Cerebras, DeepSeek, Groq,
Mistral, OpenRouter, Together) that go through the OpenAI family. Calls that are not AI API calls
are declined, not misparsed.
"""
from __future__ import annotations

import json

import pytest

from oisp_daemon.providers.parse import parse_request, parse_response
from oisp_daemon.providers.registry import detect_provider
from tests.support.fixtures import fixture_host, fixture_paths, fixture_request, fixture_response, http_request, load_fixture

PARSED = fixture_paths(
    "openai-*.json",
    "anthropic-*.json",
    "azure-openai-*.json",
    "cerebras-*.json",
    "deepseek-*.json",
    "groq-*.json",
    "mistral-*.json",
    "openrouter-*.json",
    "together-*.json",
    "gemini-*.json",
    "vertex-ai-*.json",
    "ollama-api*.json",
    "cohere-*.json",
    "bedrock-*.json",
)
# usage_extra key in the fixtures -> Usage field
USAGE_EXTRA = {
    "cached_input_tokens": "cached_tokens",
    "cache_read_input_tokens": "cached_tokens",
    "cache_creation_input_tokens": "cache_creation_tokens",
    "prompt_cache_hit_tokens": "cached_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "total_tokens": "total_tokens",
}


def _provider(fx):
    # openrouter and cerebras are not in the bundle; the fixture names them.
    return detect_provider(fixture_host(fx), None) or fx["provider"]


def _parse(path):
    fx = load_fixture(str(path))
    info = parse_request(_provider(fx), fixture_request(fx), fixture_host(fx))
    assert info is not None, "request not recognised"
    return fx, info, parse_response(info, fixture_response(fx))


def test_fixture_sets_are_not_empty():
    assert len(PARSED) >= 58


@pytest.mark.parametrize("path", PARSED, ids=lambda p: p.name)
def test_request_semantics(path):
    fx, info, _ = _parse(path)
    expect = fx["expect"]
    assert info.api == expect["api"]
    assert info.model == expect["request_model"]
    assert info.streaming == expect["streaming"]
    assert info.parse_error is None
    assert info.endpoint.startswith("https://") and "?" not in info.endpoint


@pytest.mark.parametrize("path", PARSED, ids=lambda p: p.name)
def test_response_semantics(path):
    fx, _, out = _parse(path)
    expect = fx["expect"]
    assert out.model == expect["model"]
    assert out.streaming == expect["streaming"]
    assert out.usage.prompt_tokens == expect["input_tokens"]
    assert out.usage.completion_tokens == expect["output_tokens"]
    assert out.finish_reason == expect["finish_reason"]
    assert [call.name for call in out.tool_calls] == expect["tool_calls"]
    assert (out.text[:40] if out.text is not None else None) == expect["text_prefix"]
    assert out.error_type == expect["error_type"]
    assert out.success == (expect["error_type"] is None)
    assert out.parse_error is None


@pytest.mark.parametrize("path", PARSED, ids=lambda p: p.name)
def test_usage_extras(path):
    fx, _, out = _parse(path)
    for key, value in fx["expect"]["usage_extra"].items():
        if key in USAGE_EXTRA:
            assert getattr(out.usage, USAGE_EXTRA[key]) == value, key


@pytest.mark.parametrize("path", [p for p in PARSED if load_fixture(str(p))["expect"]["streaming"]], ids=lambda p: p.name)
def test_streams_with_output_mark_first_token(path):
    fx, _, out = _parse(path)
    expect = fx["expect"]
    if expect["text_prefix"] or expect["tool_calls"]:
        assert out.first_token_offset is not None
        assert 0 < out.first_token_offset <= len(fixture_response(fx).body)
    else:
        assert out.first_token_offset is None


@pytest.mark.parametrize("path", PARSED, ids=lambda p: p.name)
def test_tool_call_arguments_are_complete_json(path):
    _, _, out = _parse(path)
    for call in out.tool_calls:
        assert isinstance(json.loads(call.arguments), dict), call


@pytest.mark.parametrize("provider,method,target", [
    ("openai", "GET", "/v1/models"),
    ("anthropic", "POST", "/v1/messages/count_tokens"),
    ("google", "POST", "/v1beta/models/gemini-2.5-flash:countTokens"),
    ("aws_bedrock", "GET", "/foundation-models"),
    ("cohere", "POST", "/v1/tokenize"),
    ("ollama", "GET", "/api/tags"),
])
def test_calls_that_are_not_ai_api_calls_are_declined(provider, method, target):
    assert parse_request(provider, http_request(target, {"model": "m"}, method=method), "api.example.com") is None
