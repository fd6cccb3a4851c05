"""Estimated request cost in USD from the bundle's model prices (oisp_daemon/data/model_prices.json).

An unknown model gives no cost at all (None), never 0: a made-up zero would read as "free".
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from oisp_daemon.events.model_tables import lookup
from oisp_daemon.providers.exchange import Usage

_DIGITS = 12


def model_price(provider: str, model: Optional[str], *more: Optional[str]) -> Optional[Dict[str, float]]:
    """Prices per 1k tokens for the response model or, failing that, the other candidate ids
    (request model, base model), each also without a dated snapshot suffix."""
    price = lookup("model_prices", "prices", provider, model, *more)
    return price if isinstance(price, dict) else None


def cost_usd(
    provider: str,
    model: Optional[str],
    usage: Usage,
    request_model: Optional[str] = None,
    base_model: Optional[str] = None,
) -> Optional[Tuple[float, float, float]]:
    """(input, output, total) USD, or None for an unknown model or a response without token counts.

    Cached input tokens are priced at the cache-read price where the bundle has one, cache writes
    at the cache-write price. `usage.cache_in_prompt`, set by the API's parser, says whether
    prompt_tokens includes the cached tokens (OpenAI) or not (Anthropic).
    """
    price = model_price(provider, model, request_model, base_model)
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
