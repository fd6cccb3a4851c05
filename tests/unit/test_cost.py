"""Cost from the bundle's model prices: model resolution, cache pricing, unknown models.

Expected costs are computed here from shared/oisp-spec/spec/v0.1/bundle.json itself, not from
the package copy the code reads.
"""
from __future__ import annotations


import pytest

from oisp_daemon.events.ai import build_ai_request, build_ai_response
from oisp_daemon.events.cost import cost_usd, model_price
from oisp_daemon.events.model_tables import model_family
from oisp_daemon.events.envelope import Clock
from oisp_daemon.providers.exchange import Usage
from oisp_daemon.providers.parse import parse_request, parse_response
from oisp_daemon.providers.registry import detect_provider
from tests.support.fixtures import fixture_host, fixture_paths, fixture_request, fixture_response, load_fixture
from tests.support.prices import BUNDLE_MODELS, PRICED_AS, expected_cost

def response_event(fx):
    host = fixture_host(fx)
    req, resp = fixture_request(fx), fixture_response(fx)
    info = parse_request(detect_provider(host, None) or fx["provider"], req, host)
    out = parse_response(info, resp)
    clock = Clock(offset_ns=0)
    request = build_ai_request(info, req, clock=clock)
    return build_ai_response(info, out, req, resp, request_event=request, clock=clock)


def test_every_parsed_fixture_has_a_pricing_expectation():
    names = {p.name for p in fixture_paths("openai-*.json", "anthropic-*.json", "azure-openai-*.json")}
    assert names <= set(PRICED_AS)


@pytest.mark.parametrize("name", sorted(PRICED_AS))
def test_response_event_cost(name):
    fx = load_fixture(name)
    usage = response_event(fx)["data"].get("usage", {})
    key = PRICED_AS[name]
    if key is None:
        assert not {"input_cost_usd", "output_cost_usd", "total_cost_usd"} & set(usage)
        return
    input_cost, output_cost = expected_cost(fx, key)
    assert usage["input_cost_usd"] == pytest.approx(input_cost, rel=1e-9, abs=1e-12)
    assert usage["output_cost_usd"] == pytest.approx(output_cost, rel=1e-9, abs=1e-12)
    assert usage["total_cost_usd"] == pytest.approx(input_cost + output_cost, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    "model, request_model, key",
    [
        ("gpt-4o-mini-2024-07-18", None, "openai/gpt-4o-mini"),
        ("gpt-4-0613", None, "openai/gpt-4"),
        ("gpt-4o-2024-08-06", None, "openai/gpt-4o-2024-08-06"),  # exact snapshot price wins
        ("my-finetune", "gpt-4.1", "openai/gpt-4.1"),
        (None, "gpt-4.1-2025-04-14", "openai/gpt-4.1"),
    ],
)
def test_model_resolution(model, request_model, key):
    price = model_price("openai", model, request_model)
    assert (price["input"], price["output"]) == (BUNDLE_MODELS[key]["input_cost_per_1k"], BUNDLE_MODELS[key]["output_cost_per_1k"])


def test_dated_anthropic_model_is_exact():
    assert model_price("anthropic", "claude-3-5-sonnet-20240620")["input"] == BUNDLE_MODELS["anthropic/claude-3-5-sonnet-20240620"]["input_cost_per_1k"]


def test_provider_alias_for_together():
    assert model_price("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo") == model_price("togetherai", "meta-llama/Llama-3.3-70B-Instruct-Turbo")
    assert model_price("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo") is not None


@pytest.mark.parametrize("provider, model", [("openai", "gpt-99"), ("openai", None), ("nobody", "gpt-4o"), ("openai", "claude-3-opus-20240229")])
def test_unknown_model_has_no_cost(provider, model):
    assert cost_usd(provider, model, Usage(prompt_tokens=10, completion_tokens=10)) is None


def test_no_token_counts_means_no_cost():
    assert cost_usd("openai", "gpt-4o", Usage()) is None


def test_models_without_a_published_price_are_unknown():
    unpriced = next(k for k, v in BUNDLE_MODELS.items() if v.get("input_cost_per_1k") is None)
    provider, model = unpriced.split("/", 1)
    assert model_price(provider, model) is None


def test_openai_cached_tokens_are_part_of_the_prompt():
    price = BUNDLE_MODELS["openai/gpt-4o-mini"]
    got = cost_usd("openai", "gpt-4o-mini", Usage(prompt_tokens=1000, completion_tokens=100, cached_tokens=400))
    want_in = (600 * price["input_cost_per_1k"] + 400 * price["cache_read_cost_per_1k"]) / 1000
    want_out = 100 * price["output_cost_per_1k"] / 1000
    assert got == pytest.approx((want_in, want_out, want_in + want_out))


def test_anthropic_cache_reads_and_writes_are_priced_apart():
    price = BUNDLE_MODELS["anthropic/claude-3-5-sonnet-20240620"]
    got = cost_usd("anthropic", "claude-3-5-sonnet-20240620", Usage(prompt_tokens=10, completion_tokens=20, cached_tokens=1000, cache_creation_tokens=500, cache_in_prompt=False))
    want_in = (10 * price["input_cost_per_1k"] + 1000 * price["cache_read_cost_per_1k"] + 500 * price["cache_write_cost_per_1k"]) / 1000
    assert got[0] == pytest.approx(want_in)


def test_missing_cache_price_falls_back_to_the_input_price():
    price = BUNDLE_MODELS["openai/gpt-4"]
    assert "cache_read_cost_per_1k" not in price
    got = cost_usd("openai", "gpt-4", Usage(prompt_tokens=100, completion_tokens=0, cached_tokens=50))
    assert got[0] == pytest.approx(100 * price["input_cost_per_1k"] / 1000)


def test_a_bedrock_cross_region_model_is_priced_as_its_base_model():
    usage = Usage(prompt_tokens=1000, completion_tokens=1000, cache_in_prompt=False)
    price = BUNDLE_MODELS["aws_bedrock/amazon.nova-micro-v1:0"]
    got = cost_usd("aws_bedrock", "us.amazon.nova-micro-v1:0", usage, request_model="us.amazon.nova-micro-v1:0",
                   base_model="amazon.nova-micro-v1:0")
    assert got[0] == pytest.approx(price["input_cost_per_1k"]) and got[1] == pytest.approx(price["output_cost_per_1k"])
    assert cost_usd("aws_bedrock", "us.amazon.nova-micro-v1:0", usage) is None


def test_models_get_the_bundles_family():
    assert model_family("openai", "gpt-4o-mini-2024-07-18") == BUNDLE_MODELS["openai/gpt-4o-mini"]["family"]
    assert model_family("anthropic", "claude-3-5-sonnet-20240620") == BUNDLE_MODELS["anthropic/claude-3-5-sonnet-20240620"]["family"]
    assert model_family("openai", "no-such-model") is None
