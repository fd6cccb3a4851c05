"""Provider finish reasons -> OISP's enum (stop, length, tool_calls, content_filter, error, other).

Events carry the raw value beside it (data.provider_finish_reason), so nothing is lost.
"""
from __future__ import annotations

from typing import Optional

_MAP = {
    # OpenAI and compatible
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
    # Anthropic
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    # Gemini / Vertex (upper case on the wire), Bedrock, Cohere
    "finish_reason_unspecified": "other",
    "safety": "content_filter",
    "recitation": "content_filter",
    "blocklist": "content_filter",
    "prohibited_content": "content_filter",
    "spii": "content_filter",
    "malformed_function_call": "error",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "complete": "stop",
    "max_output_tokens": "length",
    "tool_call": "tool_calls",  # Cohere
    "finish": "stop",  # Titan
    "content_filtered_by_model": "content_filter",
    "image_safety": "content_filter",
    "language": "other",
    "unexpected_tool_call": "error",
    "model_length": "length",  # Mistral
    "insufficient_system_resource": "error",  # DeepSeek
    # Together, Hugging Face TGI, llama.cpp
    "eos": "stop",
    "eos_token": "stop",
    "end_of_text": "stop",
    "stop_sequence_reached": "stop",
    # OpenAI Responses API statuses ("incomplete:<reason>" is split below)
    "completed": "stop",
    "failed": "error",
}


def normalise_finish_reason(raw: Optional[str], has_tool_calls: bool = False) -> Optional[str]:
    """OISP finish reason for a raw provider value; None when there is none.

    The Responses API reports a status, not a reason: a "completed" response that called tools
    stopped to let them run, which OISP calls tool_calls.
    """
    if raw is None or raw == "":
        return None
    value = raw.strip().lower()
    if value.startswith("incomplete:"):
        value = value.split(":", 1)[1]  # max_output_tokens, content_filter
    if value == "completed" and has_tool_calls:
        return "tool_calls"
    return _MAP.get(value, "other")

