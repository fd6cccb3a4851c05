"""The parsers take arbitrary captured bytes: whatever JSON (or non-JSON) arrives, they return
their result types and never raise. The family modules are called directly so that the
last-resort exception guard in providers/parse.py cannot hide a bug."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oisp_daemon.providers import anthropic, openai
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo
from tests.support.fixtures import http_request, http_response

KEYS = st.sampled_from(
    ["model", "stream", "messages", "content", "role", "choices", "delta", "index", "tool_calls", "function", "name",
     "arguments", "usage", "prompt_tokens", "input_tokens", "output_tokens", "type", "text", "error", "code", "message",
     "input", "output", "item", "response", "status", "content_block", "partial_json", "stop_reason", "finish_reason",
     "data", "embedding", "tools", "system", "instructions", "output_index", "incomplete_details", "stop"]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["text", "tool_use", "function_call", "text_delta", "input_json_delta", "message_start",
                       "content_block_start", "content_block_delta", "message_delta", "response.completed",
                       "response.output_item.added", "response.output_text.delta", "error", "user", "incomplete"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=25,
)
TARGETS = [
    (openai, "/v1/chat/completions"), (openai, "/v1/completions"), (openai, "/v1/embeddings"), (openai, "/v1/responses"),
    (anthropic, "/v1/messages"), (anthropic, "/v1/complete"),
]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sse(events):
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode()


@SETTINGS
@given(body=JSON, target=st.sampled_from(TARGETS))
def test_any_json_request_parses(body, target):
    module, path = target
    info = module.parse_request("openai", http_request(path, json.dumps(body).encode()), "api.example.com")
    assert isinstance(info, AiRequestInfo)


@SETTINGS
@given(body=st.binary(max_size=64), target=st.sampled_from(TARGETS))
def test_any_bytes_request_parses(body, target):
    module, path = target
    assert isinstance(module.parse_request("openai", http_request(path, body), "api.example.com"), AiRequestInfo)


@SETTINGS
@given(body=JSON, status=st.sampled_from([200, 400, 500]), stream=st.booleans(), target=st.sampled_from(TARGETS))
def test_any_json_response_parses(body, status, stream, target):
    module, path = target
    info = module.parse_request("openai", http_request(path, {"model": "m", "stream": stream}), "api.example.com")
    data = _sse(body if isinstance(body, list) else [body]) if stream else json.dumps(body).encode()
    out = module.parse_response(info, http_response(data, status=status, content_type="text/event-stream" if stream else "application/json"))
    assert isinstance(out, AiResponseInfo)
    assert all(isinstance(call.name, str) for call in out.tool_calls)
    assert out.text is None or isinstance(out.text, str)


@SETTINGS
@given(body=st.binary(max_size=128), stream=st.booleans(), target=st.sampled_from(TARGETS))
def test_any_bytes_response_parses(body, stream, target):
    module, path = target
    info = module.parse_request("openai", http_request(path, {"model": "m"}), "api.example.com")
    out = module.parse_response(info, http_response(body, content_type="text/event-stream" if stream else "application/json"))
    assert isinstance(out, AiResponseInfo)
