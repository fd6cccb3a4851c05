"""The API family interface: every registered family implements it, routing follows the
registry, and a stream decoded live (in any pieces) says what the whole body says."""
from __future__ import annotations

import dataclasses

import pytest

from oisp_daemon.decode.messages import HttpResponse
from oisp_daemon.providers import anthropic, openai
from oisp_daemon.providers.families import FAMILIES
from oisp_daemon.providers.family import ApiFamily
from oisp_daemon.providers.parse import family_for, parse_request, parse_response, stream_decoder
from oisp_daemon.providers.registry import detect_provider
from tests.support.fixtures import fixture_host, fixture_paths, fixture_request, fixture_response, http_request, load_fixture

STREAMS = [p for p in fixture_paths("openai-*.json", "anthropic-*.json", "azure-openai-*.json", "deepseek-*.json",
                                    "groq-*.json", "mistral-*.json", "openrouter-*.json", "cerebras-*.json",
                                    "together-*.json", "gemini-*.json", "vertex-ai-*.json", "ollama-api*.json", "cohere-*.json", "bedrock-*.json")
           if load_fixture(str(p))["expect"].get("streaming")]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.FAMILY)
def test_every_registered_family_implements_the_interface(family):
    assert isinstance(family, ApiFamily)
    assert isinstance(family.NATIVE_PROVIDERS, frozenset) and isinstance(family.ANY_PROVIDER, bool)


def test_family_names_are_unique():
    names = [f.FAMILY for f in FAMILIES]
    assert len(names) == len(set(names))


def test_a_providers_own_api_wins_and_the_openai_shape_serves_the_rest():
    assert family_for("anthropic", http_request("/v1/messages")) is anthropic
    assert family_for("anthropic", http_request("/v1/chat/completions")) is openai  # compat endpoint
    assert family_for("groq", http_request("/openai/v1/chat/completions")) is openai
    assert family_for("groq", http_request("/v1/messages")) is None  # not the Anthropic API's host


def _head(resp: HttpResponse) -> HttpResponse:
    return dataclasses.replace(resp, body=b"")


def _live(info, resp, cuts):
    decoder = stream_decoder(info, _head(resp))
    assert decoder is not None
    deltas, start = [], 0
    for cut in list(cuts) + [len(resp.body)]:
        deltas += decoder.feed(resp.body[start:cut])
        start = cut
    return deltas + decoder.close(), decoder.out


def _parsed(path):
    fx = load_fixture(str(path))
    provider = detect_provider(fixture_host(fx), None) or fx["provider"]
    info = parse_request(provider, fixture_request(fx), fixture_host(fx))
    return info, fixture_response(fx)


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.name)
def test_live_deltas_add_up_to_the_final_text_and_calls(path):
    info, resp = _parsed(path)
    whole = parse_response(info, resp)
    deltas, live = _live(info, resp, range(7, len(resp.body), 97))
    text = "".join(d.content for d in deltas if d.content and d.choice_index == 0)
    assert text == (whole.text or "")
    assert live.text == whole.text and live.usage == whole.usage and live.finish_reason == whole.finish_reason
    arguments = {}
    for delta in deltas:
        if delta.tool_call is not None and delta.tool_call.arguments:
            arguments.setdefault(delta.tool_call.id or delta.tool_call.name, []).append(delta.tool_call.arguments)
    for call in whole.tool_calls:
        streamed = "".join(arguments.get(call.id or call.name, []))
        assert streamed in ("", call.arguments)  # Responses may send the final arguments only
    assert [d.offset for d in deltas] == sorted(d.offset for d in deltas)


@pytest.mark.parametrize("path", STREAMS[:4], ids=lambda p: p.name)
def test_live_decoding_does_not_depend_on_where_the_body_is_cut(path):
    info, resp = _parsed(path)
    one, _ = _live(info, resp, [])
    for cut in range(1, len(resp.body), max(1, len(resp.body) // 60)):
        assert _live(info, resp, [cut])[0] == one, "cut at %d" % cut


def test_no_live_decoder_for_a_whole_json_answer_or_an_error():
    info, resp = _parsed(fixture_paths("openai-chat-001.json")[0])
    assert stream_decoder(info, _head(resp)) is None
    info, resp = _parsed(STREAMS[0])
    assert stream_decoder(info, dataclasses.replace(_head(resp), status=500)) is None


def test_anthropic_usage_says_cache_tokens_are_outside_the_prompt():
    path = next(p for p in STREAMS if p.name.startswith("anthropic-messages-stream"))
    info, resp = _parsed(path)
    assert parse_response(info, resp).usage.cache_in_prompt is False
    info, resp = _parsed(fixture_paths("openai-chat-001.json")[0])
    assert parse_response(info, resp).usage.cache_in_prompt is True
