"""OpenAI-shape parser beyond the recorded fixtures: stream assembly, odd and broken bodies."""
from __future__ import annotations

import base64
import struct

import pytest

from oisp_daemon.providers.parse import parse_request, parse_response
from tests.support.fixtures import http_request, http_response, sse_body

HOST = "api.openai.com"
SSE = "text/event-stream"


def chat(body, headers=()):
    info = parse_request("openai", http_request("/v1/chat/completions", body, headers), HOST)
    assert info is not None
    return info


def chunk(choices=None, **extra):
    return {"id": "chatcmpl-1", "model": "gpt-4o-mini-2024-07-18", "choices": choices or [], **extra}


def tool_delta(index, tool_index, name=None, args=None, call_id=None):
    call = {"index": tool_index, "function": {}}
    if name:
        call.update(id=call_id or f"call_{index}_{tool_index}", type="function")
        call["function"]["name"] = name
    if args is not None:
        call["function"]["arguments"] = args
    return {"index": index, "delta": {"tool_calls": [call]}, "finish_reason": None}


@pytest.mark.parametrize("method, target", [("GET", "/v1/models"), ("GET", "/v1/chat/completions"), ("POST", "/v1/files"),
                                            ("POST", "/v1/responses/resp_1/cancel"), ("POST", "/api/embeddings")])
def test_non_ai_calls_are_declined(method, target):
    assert parse_request("openai", http_request(target, {}, method=method), HOST) is None


def test_request_fields():
    info = chat(
        {
            "model": "gpt-4o",
            "stream": True,
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:,"}}]},
                {"role": "tool", "content": "42", "tool_call_id": "call_1"},
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up"}}],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "temperature": 0.2,
            "max_completion_tokens": 50,
            "stop": "END",
            "top_p": "high",
        },
        headers=[("Authorization", "Bearer sk-proj-abc123"), ("OpenAI-Organization", "org-1"), ("OpenAI-Project", "proj_1")],
    )
    assert (info.model, info.streaming, info.request_type, info.endpoint) == ("gpt-4o", True, "chat", "https://api.openai.com/v1/chat/completions")
    assert [m.role for m in info.messages] == ["system", "user", "tool"]
    assert info.system_prompt == "Be brief."
    assert (info.messages[1].content, info.messages[1].image_count, info.messages[1].has_images) == ("What is this?", 1, True)
    assert info.messages[2].tool_call_id == "call_1"
    assert [(t.name, t.description) for t in info.tools] == [("lookup", "Look up")]
    assert info.tool_choice == "specific"
    assert info.parameters == {"temperature": 0.2, "max_tokens": 50, "stop": ["END"]}
    assert (info.api_key, info.organization_id, info.project_id) == ("sk-proj-abc123", "org-1", "proj_1")


def test_azure_deployment_is_the_model_when_the_body_has_none():
    req = http_request("/openai/deployments/my-gpt/chat/completions?api-version=2024-02-01", {"messages": []}, [("api-key", "azkey")])
    info = parse_request("azure_openai", req, "res.openai.azure.com")
    assert (info.model, info.api_key, info.endpoint) == ("my-gpt", "azkey", "https://res.openai.azure.com/openai/deployments/my-gpt/chat/completions")


def test_streamed_tool_call_arguments_are_joined_per_choice_and_tool_index():
    body = sse_body(
        chunk([{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]),
        chunk([tool_delta(0, 0, "get_weather")]),
        chunk([tool_delta(1, 0, "get_time")]),
        chunk([tool_delta(0, 1, "get_news")]),
        chunk([tool_delta(0, 0, args='{"city": ')]),
        chunk([tool_delta(1, 0, args='{"tz": "UTC"}')]),
        chunk([tool_delta(0, 1, args="{}")]),
        chunk([tool_delta(0, 0, args='"Paris"}')]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}, {"index": 1, "delta": {}, "finish_reason": "tool_calls"}]),
        "[DONE]",
    )
    out = parse_response(chat({"model": "gpt-4o-mini", "stream": True}), http_response(body, content_type=SSE))
    assert [(c.name, c.id, c.arguments) for c in out.tool_calls] == [
        ("get_weather", "call_0_0", '{"city": "Paris"}'),
        ("get_news", "call_0_1", "{}"),
        ("get_time", "call_1_0", '{"tz": "UTC"}'),
    ]
    assert out.choice_finish_reasons == ["tool_calls", "tool_calls"]
    assert out.text is None
    assert out.first_token_offset == body.index(b"get_weather") + body[body.index(b"get_weather"):].index(b"\n\n") + 2


def test_streamed_legacy_function_call():
    body = sse_body(
        chunk([{"index": 0, "delta": {"role": "assistant", "content": None, "function_call": {"name": "get_current_weather", "arguments": ""}}}]),
        chunk([{"index": 0, "delta": {"function_call": {"arguments": '{"location"'}}}]),
        chunk([{"index": 0, "delta": {"function_call": {"arguments": ': "Boston"}'}}}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "function_call"}]),
        "[DONE]",
    )
    out = parse_response(chat({"model": "gpt-4", "stream": True}), http_response(body, content_type=SSE))
    assert [(c.name, c.arguments) for c in out.tool_calls] == [("get_current_weather", '{"location": "Boston"}')]
    assert out.finish_reason == "function_call"


def test_first_token_is_the_first_event_with_text_not_the_role_chunk():
    body = sse_body(
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}]),
        chunk([{"index": 0, "delta": {"content": "Hi"}}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    )
    out = parse_response(chat({"model": "m", "stream": True}), http_response(body, content_type=SSE))
    second_event_end = body.index(b"\n\n", body.index(b"Hi")) + 2
    assert out.first_token_offset == second_event_end
    assert (out.text, out.finish_reason) == ("Hi", "stop")


def test_truncated_stream_keeps_what_arrived():
    body = sse_body(chunk([{"index": 0, "delta": {"content": "Once upon"}}]), chunk([{"index": 0, "delta": {"content": " a time"}}]))
    resp = http_response(body[:-20], content_type=SSE)
    resp.mark_partial("gap")
    out = parse_response(chat({"model": "m", "stream": True}), resp)
    assert out.text == "Once upon"
    assert out.finish_reason is None
    assert out.parse_error == "1 stream event(s) without a JSON object"


def test_error_chunk_in_a_200_stream():
    body = sse_body(chunk([{"index": 0, "delta": {"content": "par"}}]), {"error": {"message": "overloaded", "type": "server_error"}})
    out = parse_response(chat({"model": "m", "stream": True}), http_response(body, content_type=SSE))
    assert (out.success, out.status_code, out.error_type, out.error_message, out.text) == (False, 200, "server_error", "overloaded", "par")


def test_error_chunk_without_a_type_is_a_stream_error():
    body = sse_body({"error": {"code": 502, "message": "upstream"}})
    out = parse_response(chat({"model": "m", "stream": True}), http_response(body, content_type=SSE))
    assert (out.error_type, out.error_code) == ("stream_error", "502")


@pytest.mark.parametrize(
    "status, body, headers, expected",
    [
        (429, {"error": {"type": "rate_limit_exceeded", "message": "slow down", "code": "rate_limit"}}, (), ("rate_limit_exceeded", "slow down", "rate_limit")),
        (404, {"error": {"code": "DeploymentNotFound", "message": "no"}}, (), ("DeploymentNotFound", "no", "DeploymentNotFound")),
        (400, {"error": {"status": "INVALID_ARGUMENT"}}, (), ("INVALID_ARGUMENT", None, None)),
        (401, {"error": {"code": "401", "message": "denied"}}, (), ("http_401", "denied", "401")),
        (403, {"message": "forbidden"}, [("x-amzn-ErrorType", "AccessDeniedException:http://internal.amazon.com/")], ("AccessDeniedException", None, None)),
        (502, b"<html>Bad gateway</html>", (), ("http_502", None, None)),
        (500, {"error": "boom"}, (), ("http_500", "boom", None)),
    ],
)
def test_http_errors(status, body, headers, expected):
    out = parse_response(chat({"model": "gpt-4o"}), http_response(body, status=status, headers=headers))
    assert (out.error_type, out.error_message, out.error_code) == expected
    assert out.success is False and out.status_code == status
    assert out.model == "gpt-4o"  # from the request
    assert out.parse_error is None


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"choices": "nope", "usage": {"prompt_tokens": "12"}}', b'{"choices": [null, 3, {"message": "x"}]}', b"[" * 100000])
def test_broken_plain_bodies_never_raise(body):
    out = parse_response(chat({"model": "gpt-4o"}), http_response(body))
    assert out.status_code == 200
    assert out.model == "gpt-4o"
    assert out.usage.prompt_tokens is None
    assert out.text is None


def test_wrong_types_in_chunks_are_ignored():
    body = sse_body(
        chunk([{"index": "zero", "delta": {"content": 5, "tool_calls": "x"}, "finish_reason": 3}], usage="many"),
        chunk([{"index": 0, "delta": {"content": "ok"}}], usage={"prompt_tokens": 3.0, "completion_tokens": True}),
        "not json at all",
    )
    out = parse_response(chat({"model": "m", "stream": True}), http_response(body, content_type=SSE))
    assert out.text == "ok"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (3, None)
    assert out.parse_error is not None


def test_request_body_cut_by_body_limit_still_yields_model_and_stream():
    body = b'{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "' + b"x" * 1000
    info = chat(body)
    assert (info.model, info.streaming) == ("gpt-4o", True)
    assert info.parse_error.startswith("invalid JSON")


@pytest.mark.parametrize("body", [b"", b"nope", b"[]", b'{"model": 7, "messages": "hi", "tools": [1, {"function": 2}], "stop": [1]}'])
def test_broken_request_bodies_never_raise(body):
    info = chat(body)
    assert info.api == "openai.chat_completions"
    assert info.model is None and info.messages == [] and info.tools == []


def test_embeddings_request_counts_inputs():
    for data, count in (("a", 1), (["a", "b", "c"], 3), ([1, 2, 3], 1), ([[1, 2], [3]], 2)):
        info = parse_request("openai", http_request("/v1/embeddings", {"model": "text-embedding-3-small", "input": data}), HOST)
        assert (info.request_type, info.input_count) == ("embedding", count)


def test_embedding_dimensions_from_float_lists_and_base64():
    info = parse_request("openai", http_request("/v1/embeddings", {"model": "e", "input": ["a", "b"], "dimensions": 3}), HOST)
    assert info.parameters == {"dimensions": 3}
    floats = {"data": [{"embedding": [0.1, 0.2, 0.3]}, {"embedding": [0.4, 0.5, 0.6]}], "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    out = parse_response(info, http_response(floats))
    assert (out.embedding_count, out.embedding_dimensions, out.usage.prompt_tokens) == (2, 3, 2)
    packed = base64.b64encode(struct.pack("<5f", *range(5))).decode()
    out = parse_response(info, http_response({"data": [{"embedding": packed}]}))
    assert (out.embedding_count, out.embedding_dimensions) == (1, 5)


def test_legacy_completions():
    info = parse_request("together", http_request("/v1/completions", {"model": "m", "prompt": "Say hi", "max_tokens": 5}), "api.together.xyz")
    assert (info.api, info.request_type, info.messages[0].content, info.parameters) == ("openai.completions", "completion", "Say hi", {"max_tokens": 5})
    out = parse_response(info, http_response({"id": "cmpl-1", "model": "m", "choices": [{"index": 0, "text": " hi", "finish_reason": "length"}]}))
    assert (out.text, out.finish_reason, out.provider_request_id) == (" hi", "length", "cmpl-1")


def responses_request(body):
    return parse_request("openai", http_request("/v1/responses", body), HOST)


def test_responses_request_fields():
    info = responses_request(
        {
            "model": "gpt-4.1",
            "instructions": "Be kind.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hello"}, {"type": "input_image", "image_url": "x"}]},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "done"},
            ],
            "tools": [{"type": "function", "name": "f", "description": "does f"}, {"type": "file_search"}, {"type": "web_search_preview"}],
            "max_output_tokens": 100,
        }
    )
    assert [(m.role, m.content) for m in info.messages] == [("system", "Be kind."), ("user", "hello"), ("assistant", None), ("tool", "done")]
    assert info.messages[1].image_count == 1 and info.messages[3].tool_call_id == "call_1"
    assert [(t.name, t.type) for t in info.tools] == [("f", "function"), ("file_search", "file_search"), ("web_search_preview", "other")]
    assert info.parameters == {"max_tokens": 100}
    assert info.system_prompt == "Be kind."


def test_responses_incomplete_status_is_kept_with_its_reason():
    body = {"id": "resp_1", "model": "gpt-4.1", "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "Partial"}]}], "usage": {"input_tokens": 3, "output_tokens": 16}}
    out = parse_response(responses_request({"model": "gpt-4.1", "input": "x"}), http_response(body))
    assert (out.finish_reason, out.text, out.usage.completion_tokens) == ("incomplete:max_output_tokens", "Partial", 16)


def test_responses_stream_error_event_and_failed_response():
    info = responses_request({"model": "gpt-4.1", "input": "x", "stream": True})
    body = sse_body(("error", {"type": "error", "code": "server_error", "message": "oops", "sequence_number": 1}))
    out = parse_response(info, http_response(body, content_type=SSE))
    assert (out.success, out.error_type, out.error_message) == (False, "server_error", "oops")
    failed = {"type": "response.failed", "response": {"id": "resp_2", "status": "failed", "error": {"code": "rate_limit_exceeded", "message": "slow"}}}
    out = parse_response(info, http_response(sse_body(("response.failed", failed)), content_type=SSE))
    assert (out.success, out.error_type, out.finish_reason, out.provider_request_id) == (False, "rate_limit_exceeded", "failed", "resp_2")


def test_responses_stream_without_deltas_uses_the_final_output():
    done = {"type": "response.completed", "response": {"id": "resp_3", "model": "gpt-4.1", "status": "completed",
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "All at once"}]},
                       {"type": "function_call", "name": "f", "call_id": "c1", "arguments": "{\"a\":1}"}]}}
    out = parse_response(responses_request({"model": "gpt-4.1", "input": "x", "stream": True}), http_response(sse_body(done), content_type=SSE))
    assert (out.text, [(c.name, c.id, c.arguments) for c in out.tool_calls]) == ("All at once", [("f", "c1", '{"a":1}')])


def test_azure_deployment_and_api_version_are_attributed():
    req = http_request("/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21", {"messages": []})
    info = parse_request("azure_openai", req, "acme.openai.azure.com")
    assert info.model == "prod-gpt4o"
    assert info.attribution == {"azure_deployment": "prod-gpt4o", "api_version": "2024-10-21"}
