"""Expected prices of the recorded fixtures, computed from shared/oisp-spec's bundle.json itself
(not from the package copy the sensor reads), for the unit and the integration tests alike."""
from __future__ import annotations

import json
from typing import Any, Dict, Tuple

from tests.support.paths import BUNDLE_PATH

BUNDLE_MODELS = json.loads(BUNDLE_PATH.read_text())["models"]

# Fixture -> the bundle model whose price applies (response model, its dated snapshot's base, or
# the request model), or None when the bundle has no price (or the response has no usage).
PRICED_AS = {
    "anthropic-complete-001.json": None,  # claude-instant-1.2 is not in the bundle
    "anthropic-messages-001.json": "anthropic/claude-sonnet-4-20250514",
    "anthropic-messages-002.json": "anthropic/claude-3-opus-20240229",
    "anthropic-messages-003.json": "anthropic/claude-3-5-sonnet-20240620",
    "anthropic-messages-stream-001.json": "anthropic/claude-sonnet-4-20250514",
    "anthropic-messages-stream-004.json": "anthropic/claude-3-7-sonnet-20250219",
    "anthropic-messages-stream-tools-002.json": "anthropic/claude-3-5-sonnet-20240620",
    "anthropic-messages-tools-001.json": "anthropic/claude-3-5-haiku-20241022",
    "azure-openai-chat-001.json": None,  # gpt-35-turbo, deployment openllmetry-testing
    "azure-openai-chat-002.json": "azure_openai/gpt-4.1-mini",
    "azure-openai-chat-stream-002.json": None,
    "azure-openai-embeddings-001.json": "azure_openai/text-embedding-3-large",
    "azure-openai-embeddings-error-001.json": None,  # error: no usage
    "bedrock-converse-error-001.json": None,  # error: no usage
    "bedrock-converse-stream-001.json": "aws_bedrock/amazon.nova-micro-v1:0",  # us. cross-region prefix dropped
    "bedrock-invoke-001.json": "aws_bedrock/anthropic.claude-3-sonnet-20240229-v1:0",  # the request's model id
    "cerebras-chat-001.json": "cerebras/gpt-oss-120b",
    "cohere-v1chat-001.json": None,  # command is not priced
    "cohere-v1chat-stream-001.json": None,
    "cohere-v2chat-001.json": None,
    "cohere-v2chat-stream-tools-001.json": None,  # command-r (undated) is not priced
    "deepseek-chat-001.json": "deepseek/deepseek-reasoner",
    "deepseek-chat-stream-001.json": "deepseek/deepseek-reasoner",
    "deepseek-chat-stream-003.json": "deepseek/deepseek-chat",
    "deepseek-chat-tools-001.json": "deepseek/deepseek-reasoner",  # response model unknown: request model
    "gemini-generate-002.json": "google/gemini-2.5-flash",
    "gemini-generate-stream-001.json": None,  # gemini-2.0-flash-exp is not priced
    "groq-chat-002.json": "groq/llama3-8b-8192",
    "groq-chat-stream-tools-001.json": "groq/openai/gpt-oss-120b",
    "mistral-chat-001.json": None,
    "mistral-chat-002.json": None,
    "mistral-chat-stream-001.json": None,
    "mistral-chat-tools-001.json": None,
    "ollama-apichat-002.json": None,  # local models are not priced
    "ollama-apichat-stream-001.json": None,
    "ollama-apigenerate-001.json": None,
    "ollama-apigenerate-stream-001.json": None,
    "openai-chat-001.json": "openai/gpt-4.1",
    "openai-chat-002.json": "openai/gpt-3.5-turbo",
    "openai-chat-004.json": "openai/gpt-4o-mini",
    "openai-chat-error-003.json": None,  # error: no usage
    "openai-chat-stream-002.json": "openai/gpt-4",
    "openai-chat-stream-003.json": None,  # no include_usage: no token counts
    "openai-chat-tools-002.json": "openai/gpt-4",
    "openai-embeddings-001.json": "openai/text-embedding-3-small",
    "openai-embeddings-002.json": "openai/text-embedding-3-small",
    "openai-embeddings-003.json": "openai/text-embedding-ada-002",
    "openai-responses-001.json": "openai/gpt-4.1",
    "openai-responses-003.json": "openai/gpt-5-nano",
    "openai-responses-stream-002.json": "openai/gpt-4o-2024-08-06",
    "openai-responses-stream-003.json": "openai/gpt-4.1-nano",
    "openai-responses-stream-tools-001.json": "openai/gpt-4o-2024-08-06",
    "openrouter-chat-error-001.json": None,  # error: no usage
    "openrouter-chat-stream-001.json": "openrouter/google/gemini-2.5-flash",
    "openrouter-chat-stream-error-001.json": None,  # minimax/minimax-m2:free is not priced
    "together-completions-001.json": None,
    "vertex-ai-generate-001.json": "google/gemini-2.5-flash",  # Vertex hosts are provider google
    "vertex-ai-generate-error-001.json": None,  # error: no usage
    "vertex-ai-generate-stream-001.json": "google/gemini-2.5-flash",
}


def _or_input(price: Dict[str, Any], key: str) -> float:
    return price[key] if price.get(key) is not None else price["input_cost_per_1k"]


def expected_cost(fx: Dict[str, Any], key: str) -> Tuple[float, float]:
    """Bundle price x raw usage from the fixture: OpenAI-style prompt tokens include cached ones,
    Anthropic's input tokens do not (cache reads/writes are priced on their own)."""
    price = BUNDLE_MODELS[key]
    expect = fx["expect"]
    extra = expect["usage_extra"]
    inp = price["input_cost_per_1k"] / 1000
    read = _or_input(price, "cache_read_cost_per_1k") / 1000
    write = _or_input(price, "cache_write_cost_per_1k") / 1000
    prompt = expect["input_tokens"] or 0
    if key.startswith("anthropic/"):
        input_cost = prompt * inp + extra.get("cache_read_input_tokens", 0) * read + extra.get("cache_creation_input_tokens", 0) * write
    else:
        cached = extra.get("cached_input_tokens", 0)
        input_cost = (prompt - cached) * inp + cached * read
    output = expect["output_tokens"] or 0
    if key.startswith("google/"):
        output += extra.get("reasoning_tokens", 0)  # Gemini bills thought tokens as output, apart from candidates
    output_cost = output * price["output_cost_per_1k"] / 1000
    return input_cost, output_cost
