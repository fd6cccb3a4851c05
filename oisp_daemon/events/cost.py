"""Estimated request cost in USD from the bundle's model prices (oisp_daemon/data/model_prices.json).

An unknown model gives no cost at all (None), never 0: a made-up zero would read as "free".
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

from oisp_daemon.data import load_table
from oisp_daemon.providers.exchange import Usage

# Snapshot suffixes that name a dated version of a priced base model: gpt-4o-mini-2024-07-18,
# claude-3-5-sonnet-20240620, gpt-4-0613.
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")
# Providers whose input token count excludes cache reads and writes (Anthropic reports them apart);
# OpenAI-style prompt_tokens include the cached tokens.
_DIGITS = 12


def _prices(provider: str) -> Dict[str, Dict[str, float]]:
    table = load_table("model_prices")
    namespace = table["aliases"].get(provider, provider)
    return table["prices"].get(namespace, {})


def model_price(provider: str, model: Optional[str], request_model: Optional[str] = None) -> Optional[Dict[str, float]]:
    """Prices per 1k tokens for the response model, a dated snapshot's base model, or the request model."""
    prices = _prices(provider)
    for candidate in (model, request_model):
        if not candidate:
            continue
        if candidate in prices:
            return prices[candidate]
        base = _DATE_SUFFIX.sub("", candidate)
        if base in prices:
            return prices[base]
    return None


def cost_usd(
    provider: str,
    model: Optional[str],
    usage: Usage,
    request_model: Optional[str] = None,
) -> Optional[Tuple[float, float, float]]:
    """(input, output, total) USD, or None for an unknown model or a response without token counts.

    Cached input tokens are priced at the cache-read price where the bundle has one, cache writes
    at the cache-write price. `usage.cache_in_prompt`, set by the API's parser, says whether
    prompt_tokens includes the cached tokens (OpenAI) or not (Anthropic).
    """
    price = model_price(provider, model, request_model)
    if price is None or (usage.prompt_tokens is None and usage.completion_tokens is None):
        return None
    per_input = price["input"] / 1000
    cached = usage.cached_tokens or 0
    written = usage.cache_creation_tokens or 0
    prompt = usage.prompt_tokens or 0
    uncached = max(prompt - cached - written, 0) if usage.cache_in_prompt else prompt
    input_cost = (
        uncached * per_input
        + cached * price.get("cache_read", price["input"]) / 1000
        + written * price.get("cache_write", price["input"]) / 1000
    )
    output = (usage.completion_tokens or 0) + (0 if usage.reasoning_in_completion else usage.reasoning_tokens or 0)
    output_cost = output * price["output"] / 1000
    return round(input_cost, _DIGITS), round(output_cost, _DIGITS), round(input_cost + output_cost, _DIGITS)
