"""Anthropic parser beyond the recorded fixtures: content block kinds, errors, broken bodies."""
from __future__ import annotations

import json

import pytest

from oisp_daemon.providers.parse import parse_request, parse_response
from tests.support.fixtures import http_request, http_response, sse_body

HOST = "api.anthropic.com"
SSE = "text/event-stream"


def messages(body, headers=()):
    info = parse_request("anthropic", http_request("/v1/messages", body, headers), HOST)
    assert info is not None
    return info


@pytest.mark.parametrize("method, target", [("POST", "/v1/messages/count_tokens"), ("POST", "/v1/messages/batches"), ("GET", "/v1/models"), ("GET", "/v1/messages")])
def test_non_generation_calls_are_declined(method, target):
    assert parse_request("anthropic", http_request(target, {}, method=method), HOST) is None


def test_openai_compatibility_endpoint_uses_the_openai_parser():
    info = parse_request("anthropic", http_request("/v1/chat/completions", {"model": "claude-sonnet-4-5"}), HOST)
    assert (info.provider, info.api) == ("anthropic", "openai.chat_completions")


def test_request_fields():
    info = messages(
        {
            "model": "claude-sonnet-4-5",
            "system": [{"type": "text", "text": "You are terse."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image", "source": {}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Sunny"}]}]},
            ],
            "tools": [
                {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"},
                {"type": "computer_20250124", "name": "computer", "display_width_px": 1},
            ],
            "tool_choice": {"type": "any"},
            "max_tokens": 256,
            "stop_sequences": ["\n\nHuman:"],
            "temperature": 1,
        },
        headers=[("x-api-key", "sk-ant-api03-secret"), ("anthropic-version", "2023-06-01")],
    )
    assert [(m.role, m.content) for m in info.messages] == [
        ("system", "You are terse."),
        ("user", "Weather?"),
        ("assistant", None),
        ("tool", "Sunny"),
    ]
    assert info.messages[1].image_count == 1 and info.messages[3].tool_call_id == "toolu_1"
    assert info.system_prompt == "You are terse."
    assert [(t.name, t.type) for t in info.tools] == [("get_weather", "function"), ("web_search", "other"), ("computer", "computer_use")]
    assert info.tool_choice == "required"
    assert info.parameters == {"temperature": 1, "max_tokens": 256, "stop": ["\n\nHuman:"]}
    assert info.api_key == "sk-ant-api03-secret"


def test_plain_message_with_thinking_server_tool_and_tool_use():
    body = {
        "id": "msg_1",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "Let me think", "signature": "sig"},
            {"type": "redacted_thinking", "data": "xx"},
            {"type": "text", "text": "Searching"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "weather"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": " then calling."},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {"tz": "UTC"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 7},
    }
    out = parse_response(messages({"model": "claude-sonnet-4-5"}), http_response(body))
    assert out.text == "Searching then calling."
    assert [(c.name, c.type, json.loads(c.arguments)) for c in out.tool_calls] == [
        ("web_search", "server_tool_use", {"query": "weather"}),
        ("get_time", "function", {"tz": "UTC"}),
    ]
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.cached_tokens, out.usage.cache_creation_tokens) == (10, 20, 5, 7)
    assert (out.provider_request_id, out.finish_reason) == ("msg_1", "tool_use")


def _stream(*events):
    return sse_body(*[(e["type"], e) for e in events])


def test_stream_thinking_is_not_text_and_does_not_start_the_first_token():
    body = _stream(
        {"type": "message_start", "message": {"id": "msg_2", "model": "claude-3-7-sonnet-20250219", "usage": {"input_tokens": 4, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Three."}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    )
    out = parse_response(messages({"model": "claude-3-7-sonnet-20250219", "stream": True}), http_response(body, content_type=SSE))
    assert (out.text, out.finish_reason, out.usage.prompt_tokens, out.usage.completion_tokens) == ("Three.", "end_turn", 4, 9)
    assert out.first_token_offset == body.index(b"\n\n", body.index(b"Three.")) + 2


def test_stream_server_tool_use_and_streamed_input():
    body = _stream(
        {"type": "message_start", "message": {"id": "msg_3", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 4}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"query": '}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '"x"}'}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "noop", "input": {}}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30, "input_tokens": 6}},
    )
    out = parse_response(messages({"model": "claude-sonnet-4-5", "stream": True}), http_response(body, content_type=SSE))
    assert [(c.name, c.type, c.arguments) for c in out.tool_calls] == [("web_search", "server_tool_use", '{"query": "x"}'), ("noop", "function", "{}")]
    assert out.usage.prompt_tokens == 6  # message_delta's input_tokens overrides message_start's
    assert out.text is None
    assert out.first_token_offset == body.index(b"\n\n", body.index(b"srvtoolu_1")) + 2


def test_stream_error_event():
    body = _stream(
        {"type": "message_start", "message": {"id": "msg_4", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 4}}},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    out = parse_response(messages({"model": "claude-sonnet-4-5", "stream": True}), http_response(body, content_type=SSE))
    assert (out.success, out.status_code, out.error_type, out.error_message) == (False, 200, "overloaded_error", "Overloaded")


def test_http_error_body():
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    out = parse_response(messages({"model": "claude-sonnet-4-5"}), http_response(body, status=529, headers=[("request-id", "req_1")]))
    assert (out.success, out.error_type, out.provider_request_id, out.model) == (False, "overloaded_error", "req_1", "claude-sonnet-4-5")


@pytest.mark.parametrize("body", [b"", b"<html>", b"[]", b'{"content": "text", "usage": [], "stop_reason": 1}', b'{"content": [null, {"type": "text", "text": 3}]}'])
def test_broken_bodies_never_raise(body):
    out = parse_response(messages({"model": "claude-sonnet-4-5"}), http_response(body))
    assert (out.text, out.tool_calls, out.model) == (None, [], "claude-sonnet-4-5")


def test_broken_stream_events_are_skipped():
    body = b"event: message_start\ndata: {oops\n\n" + _stream(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "orphan"}},
        {"type": "content_block_start", "index": "0", "content_block": "text"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}},
    )
    out = parse_response(messages({"model": "m", "stream": True}), http_response(body, content_type=SSE))
    assert out.parse_error == "1 stream event(s) without a JSON object"
    assert out.text is None


def test_legacy_complete_stream():
    info = parse_request("anthropic", http_request("/v1/complete", {"model": "claude-2.1", "prompt": "\n\nHuman: hi\n\nAssistant:", "stream": True, "max_tokens_to_sample": 9}), HOST)
    assert (info.api, info.request_type, info.parameters) == ("anthropic.complete", "completion", {"max_tokens": 9})
    body = sse_body(
        ("completion", {"type": "completion", "id": "compl_1", "completion": " Hel", "stop_reason": None, "model": "claude-2.1"}),
        ("ping", {"type": "ping"}),
        ("completion", {"type": "completion", "id": "compl_1", "completion": "lo", "stop_reason": "stop_sequence", "model": "claude-2.1"}),
    )
    out = parse_response(info, http_response(body, content_type=SSE))
    assert (out.text, out.finish_reason, out.model, out.provider_request_id) == (" Hello", "stop_sequence", "claude-2.1", "compl_1")


def test_claude_on_vertex_ai_takes_model_project_and_region_from_the_path():
    path = "/v1/projects/acme/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
    body = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "Hi"}]}
    info = parse_request("google", http_request(path, body), "us-east5-aiplatform.googleapis.com")
    assert (info.api, info.model, info.project_id, info.region, info.streaming) == (
        "anthropic.messages", "claude-sonnet-4@20250514", "acme", "us-east5", True)
    stream = sse_body(("message_start", {"type": "message_start", "message": {"id": "msg_v", "model": "claude-sonnet-4", "usage": {"input_tokens": 5}}}),
                      ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                      ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
                      ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
                      ("message_stop", {"type": "message_stop"}))
    out = parse_response(info, http_response(stream, content_type="text/event-stream"))
    assert (out.text, out.finish_reason, out.usage.prompt_tokens, out.usage.completion_tokens) == ("Hello", "end_turn", 5, 2)


def test_beta_features_and_api_version_are_attributed():
    req = http_request("/v1/messages", {"model": "claude-sonnet-4", "messages": []},
                       headers=[("anthropic-beta", "prompt-caching-2024-07-31,files-api-2025-04-14"), ("anthropic-version", "2023-06-01")])
    info = parse_request("anthropic", req, "api.anthropic.com")
    assert info.attribution == {"anthropic_beta": "prompt-caching-2024-07-31,files-api-2025-04-14", "anthropic_version": "2023-06-01"}
