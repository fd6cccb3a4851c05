"""The registry of API families: one line per family. Families whose API is their provider's
own come first; the OpenAI shape, which many providers serve, is tried last."""
from __future__ import annotations

from typing import Tuple

from oisp_daemon.providers import anthropic, bedrock, cohere, gemini, grpc, huggingface, ollama, openai, replicate
from oisp_daemon.providers.family import ApiFamily

FAMILIES: Tuple[ApiFamily, ...] = (
    anthropic,
    bedrock,
    cohere,
    gemini,
    grpc,
    huggingface,
    ollama,
    replicate,
    openai,
)
