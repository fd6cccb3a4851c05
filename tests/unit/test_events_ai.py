"""ai.request / ai.response / agent.tool_call events built from every parsed fixture, checked
against the OISP schema and the fixture's expectations; then the edge cases one by one."""
from __future__ import annotations

import json

import pytest

from oisp_daemon.events.ai import auth_info, build_ai_request, build_ai_response, build_tool_call_events, short_hash
from oisp_daemon.events.context import HostContext
from oisp_daemon.events.envelope import Clock
from oisp_daemon.events.finish_reason import normalise_finish_reason
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo, Message, ToolCall
from oisp_daemon.providers.parse import parse_request, parse_response
from oisp_daemon.providers.registry import detect_provider
from tests.support.fixtures import (
    CHUNK_INTERVAL_NS,
    REQUEST_TS,
    RESPONSE_DELAY_NS,
    fixture_host,
    fixture_paths,
    fixture_request,
    fixture_response,
    http_request,
    http_response,
    load_fixture,
    sse_body,
    stream_event_ends,
)
from tests.support.oisp_schema import assert_valid_event

FIXTURES = fixture_paths("*.json")  # every provider's recordings
OISP_FINISH = {"stop", "length", "tool_calls", "content_filter", "error", "other"}
CTX = dict(
    clock=Clock(offset_ns=1_700_000_000_000_000_000),
    host={"hostname": "box", "os": "linux", "arch": "x86_64"},
    process={"pid": 4242, "ppid": 1, "name": "python3"},
    actor={"uid": 1000, "user": "alice"},
)


def build(fx):
    host = fixture_host(fx)
    req, resp = fixture_request(fx), fixture_response(fx)
    info = parse_request(detect_provider(host, None) or fx["provider"], req, host)
    out = parse_response(info, resp)
    request = build_ai_request(info, req, **CTX)
    response = build_ai_response(info, out, req, resp, request_event=request, **CTX)
    return info, out, req, resp, request, response, build_tool_call_events(out, response)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture_events_are_valid_oisp(path):
    *_, request, response, tools = build(load_fixture(str(path)))
    for event in [request, response] + tools:
        assert_valid_event(event)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture_events_match_expectations(path):
    fx = load_fixture(str(path))
    expect = fx["expect"]
    info, out, req, resp, request, response, tools = build(fx)
    rq, rs = request["data"], response["data"]
    assert rq["request_id"].startswith("req_") and rs["request_id"] == rq["request_id"]
    assert response["related_events"] == [{"event_id": request["event_id"], "relationship": "parent"}]
    assert (request["ts_mono"], response["ts_mono"]) == (req.ts_start_ns, resp.ts_end_ns)
    assert rq.get("model", {}).get("id") == expect["request_model"]
    assert rs["model"]["id"] == expect["model"]
    assert rq["streaming"] == expect["streaming"] and rs["streaming"] == expect["streaming"]
    assert rs["success"] == (expect["error_type"] is None)
    assert rs.get("error", {}).get("type") == expect["error_type"]
    assert rs.get("provider_finish_reason") == expect["finish_reason"]
    if expect["finish_reason"] is None and rs["success"]:
        assert "finish_reason" not in rs
    else:
        assert rs["finish_reason"] in OISP_FINISH
    assert rs.get("usage", {}).get("prompt_tokens") == expect["input_tokens"]
    assert rs.get("usage", {}).get("completion_tokens") == expect["output_tokens"]
    assert [c["name"] for c in rs.get("tool_calls", [])] == expect["tool_calls"]
    assert rs["tool_calls_count"] == len(expect["tool_calls"])
    text = rs["choices"][0]["message"].get("content") if rs.get("choices") else None
    assert (text[:40] if text else None) == expect["text_prefix"]
    assert [t["data"]["tool"]["name"] for t in tools] == expect["tool_calls"]
    assert rs["latency_ms"] == (resp.ts_end_ns - REQUEST_TS) // 1_000_000


@pytest.mark.parametrize("path", [p for p in FIXTURES if load_fixture(str(p))["expect"]["streaming"]], ids=lambda p: p.name)
def test_time_to_first_token_is_the_arrival_of_the_first_output_event(path):
    fx = load_fixture(str(path))
    _, out, req, resp, _, response, _ = build(fx)
    if out.first_token_offset is None:
        assert "time_to_first_token_ms" not in response["data"]
        return
    # fixture_response delivers streamed event k (0-based) at RESPONSE_DELAY_NS + k * CHUNK_INTERVAL_NS
    ends = stream_event_ends(resp.body, resp.header("Content-Type") or "")
    index = sum(1 for end in ends if end < out.first_token_offset)
    expected_ns = RESPONSE_DELAY_NS + index * CHUNK_INTERVAL_NS
    assert response["data"]["time_to_first_token_ms"] == expected_ns // 1_000_000
    assert response["data"]["time_to_first_token_ms"] <= response["data"]["latency_ms"]


def test_tool_call_events_link_and_carry_arguments():
    _, out, _, _, request, response, tools = build(load_fixture("anthropic-messages-stream-tools-002.json"))
    assert [t["data"]["arguments"] for t in tools] == [{"location": "San Francisco, CA", "unit": "celsius"}, {"timezone": "America/Los_Angeles"}]
    for event, call in zip(tools, out.tool_calls):
        assert event["event_type"] == "agent.tool_call"
        assert event["related_events"] == [{"event_id": response["event_id"], "relationship": "caused_by"}]
        assert event["data"]["call_id"] == call.id and event["data"]["triggered_by"] == "llm_decision"
        assert event["data"]["request_id"] == request["data"]["request_id"]
        assert event["data"]["arguments_hash"] == short_hash(call.arguments)
        assert "attrs" not in event
        assert (event["ts"], event["ts_mono"]) == (response["ts"], response["ts_mono"])
        assert (event["host"], event["actor"], event["process"]) == (response["host"], response["actor"], response["process"])
        assert event["process"] is not response["process"]


def test_openai_function_call_arguments_become_an_object():
    *_, tools = build(load_fixture("openai-chat-tools-002.json"))
    assert tools[0]["data"]["arguments"] == {"location": "Boston"}
    assert "call_id" not in tools[0]["data"]  # legacy function_call has no id


def response_info(**values):
    base = dict(status_code=200, success=True)
    base.update(values)
    return AiResponseInfo(**base)


def request_info(**values):
    base = dict(provider="openai", api="openai.chat_completions", request_type="chat", endpoint="https://api.openai.com/v1/chat/completions", model="gpt-4o")
    base.update(values)
    return AiRequestInfo(**base)


def events_for(info, out, resp=None, req=None):
    req = req or http_request("/v1/chat/completions", {})
    resp = resp or http_response({})
    request = build_ai_request(info, req, **CTX)
    response = build_ai_response(info, out, req, resp, request_event=request, **CTX)
    tools = build_tool_call_events(out, response)
    for event in [request, response] + tools:
        assert_valid_event(event)
    return request, response, tools


@pytest.mark.parametrize("arguments", ['{"path": "/etc/pass', "[1, 2]", '"just a string"', "not json"])
def test_tool_arguments_that_are_not_an_object_stay_raw_in_attrs(arguments):
    out = response_info(tool_calls=[ToolCall(name="read_file", id="call_1", arguments=arguments)], finish_reason="tool_calls")
    _, _, (tool,) = events_for(request_info(), out)
    assert "arguments" not in tool["data"]
    assert tool["data"]["arguments_hash"] == short_hash(arguments)
    assert tool["attrs"]["arguments_raw"] == arguments


def test_server_tool_type_is_noted():
    out = response_info(tool_calls=[ToolCall(name="web_search", id="srvtoolu_1", type="server_tool_use", arguments="{}")])
    _, response, (tool,) = events_for(request_info(provider="anthropic", api="anthropic.messages"), out)
    assert tool["attrs"] == {"tool_call_type": "server_tool_use"}
    assert response["data"]["tool_calls"][0]["type"] == "server_tool_use"


def test_api_key_never_enters_an_event():
    key = "sk-proj-" + "A1b2C3d4" * 6
    info = request_info(api_key=key, organization_id="org-1", project_id="proj_1")
    request, response, _ = events_for(info, response_info())
    assert key not in json.dumps(request) and key not in json.dumps(response)
    assert request["data"]["auth"] == {"type": "api_key", "key_prefix": "sk-proj-", "key_hash": short_hash(key)}
    assert short_hash(key).startswith("sha256:") and len(short_hash(key)) == len("sha256:") + 16
    assert request["data"]["provider"]["organization_id"] == "org-1" and request["data"]["provider"]["project_id"] == "proj_1"


@pytest.mark.parametrize(
    "key, expected",
    [
        ("sk-ant-api03-" + "x" * 80, {"type": "api_key", "key_prefix": "sk-ant-a"}),
        ("shortkey12", {"type": "api_key", "key_prefix": "sh"}),
        ("abc", {"type": "api_key"}),
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", {"type": "oauth", "key_prefix": "eyJh"}),
        ("sk-" + "a" * 48, {"type": "api_key", "key_prefix": "sk-"}),
        ("AIzaSy" + "c" * 33, {"type": "api_key", "key_prefix": "AIza"}),
        (None, None),
    ],
)
def test_auth_info(key, expected):
    got = auth_info(key)
    if expected is None:
        assert got is None
    else:
        assert {k: v for k, v in got.items() if k != "key_hash"} == expected
        assert got["key_hash"] == short_hash(key)


def test_request_event_fields():
    info = request_info(
        messages=[Message(role="system", content="Be brief."), Message(role="user", content="Look", has_images=True, image_count=2)],
        system_prompt="Be brief.",
        tool_choice="auto",
        parameters={"temperature": 0.5, "max_tokens": 10, "stop": ["x"]},
        streaming=True,
    )
    request, _, _ = events_for(info, response_info())
    data = request["data"]
    assert data["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Look", "has_images": True, "image_count": 2}]
    assert (data["messages_count"], data["has_system_prompt"], data["system_prompt_hash"]) == (2, True, short_hash("Be brief."))
    assert (data["has_images"], data["image_count"], data["tools_count"], data["tool_choice"]) == (True, 2, 0, "auto")
    assert data["parameters"] == {"temperature": 0.5, "max_tokens": 10, "stop": ["x"]}
    assert request["source"]["capture_point"] == "ssl_write" and request["source"]["capture_method"] == "tls_boundary"
    assert request["process"] == CTX["process"] and request["actor"] == CTX["actor"] and request["host"] == CTX["host"]


def test_provider_outside_the_oisp_enum_is_other_with_its_id():
    request, response, _ = events_for(request_info(provider="deepseek", endpoint="https://api.deepseek.com/chat/completions"), response_info())
    assert request["data"]["provider"]["name"] == "other" and request["data"]["provider"]["id"] == "deepseek"
    assert response["data"]["provider"] == {"name": "other", "id": "deepseek", "endpoint": "https://api.deepseek.com/chat/completions"}


def test_partial_response_is_marked_with_reasons():
    resp = http_response(sse_body({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}), content_type="text/event-stream")
    resp.mark_partial("gap")
    resp.mark_partial("body_limit")
    out = response_info(text="Hi", choice_texts=["Hi"], streaming=True, first_token_offset=len(resp.body))
    _, response, _ = events_for(request_info(streaming=True), out, resp=resp)
    confidence = response["confidence"]
    assert confidence["completeness"] == "partial"
    assert confidence["limitations"] == ["gap", "body_limit"]
    assert "message_incomplete" in confidence["reasons"]


def test_parse_error_makes_the_event_partial():
    req = http_request("/v1/chat/completions", b"{not json")
    info = parse_request("openai", req, "api.openai.com")
    request, _, _ = events_for(info, response_info(), req=req)
    assert request["confidence"]["completeness"] == "partial"
    assert request["confidence"]["limitations"] == ["parse_error"]
    assert request["attrs"]["parse_error"].startswith("invalid JSON")


def test_complete_exchange_is_full():
    request, response, _ = events_for(request_info(), response_info(finish_reason="stop", choice_finish_reasons=["stop"]))
    assert request["confidence"]["completeness"] == response["confidence"]["completeness"] == "full"
    assert "limitations" not in response["confidence"]


def test_failed_response_finish_reason_is_error():
    out = response_info(success=False, status_code=429, error_type="rate_limit_exceeded", error_message="slow down")
    _, response, _ = events_for(request_info(), out, resp=http_response({}, status=429))
    assert response["data"]["finish_reason"] == "error"
    assert response["data"]["error"] == {"type": "rate_limit_exceeded", "message": "slow down"}
    assert "provider_finish_reason" not in response["data"] and "usage" not in response["data"]


def test_embeddings_response_carries_input_count_and_dimensions():
    fx = load_fixture("azure-openai-embeddings-001.json")
    info, _, _, _, request, response, _ = build(fx)
    assert request["data"]["request_type"] == "embedding"
    assert (response["data"]["input_count"], response["data"]["dimensions"]) == (1, 3072)
    assert "choices" not in response["data"] and "finish_reason" not in response["data"]


def test_anthropic_total_tokens_include_cache_tokens():
    _, _, _, _, _, response, _ = build(load_fixture("anthropic-messages-003.json"))
    usage = response["data"]["usage"]
    assert (usage["prompt_tokens"], usage["cached_tokens"], usage["cache_creation_tokens"]) == (4, 1163, 0)
    assert usage["total_tokens"] == 4 + 202 + 1163


@pytest.mark.parametrize(
    "raw, tools, expected",
    [
        ("stop", False, "stop"), ("end_turn", False, "stop"), ("stop_sequence", False, "stop"),
        ("length", False, "length"), ("max_tokens", False, "length"), ("MAX_TOKENS", False, "length"),
        ("tool_calls", False, "tool_calls"), ("tool_use", False, "tool_calls"), ("function_call", False, "tool_calls"),
        ("content_filter", False, "content_filter"), ("refusal", False, "content_filter"), ("SAFETY", False, "content_filter"),
        ("completed", False, "stop"), ("completed", True, "tool_calls"), ("incomplete:max_output_tokens", False, "length"),
        ("incomplete:content_filter", False, "content_filter"), ("failed", False, "error"), ("pause_turn", False, "other"),
        ("1", False, "other"), (None, False, None), ("", False, None),
    ],
)
def test_normalise_finish_reason(raw, tools, expected):
    assert normalise_finish_reason(raw, tools) == expected


def test_host_may_be_given_as_a_host_context():
    host = HostContext(hostname="box", os="linux", arch="x86_64", kernel_version="6.1.0", os_version="Debian GNU/Linux 12 (bookworm)")
    event = build_ai_request(request_info(), http_request("/v1/chat/completions", {}), clock=CTX["clock"], host=host)
    assert event["host"] == host.as_dict()
    assert_valid_event(event)


@pytest.mark.parametrize("finished,completeness", [(True, "full"), (False, "partial")])
def test_stream_closed_after_its_end_marker_is_whole(finished, completeness):
    # The OpenAI SDK closes the connection right after "[DONE]", before the chunked terminator:
    # the HTTP layer sees a body cut by the close, but the stream itself ended.
    resp = http_response(sse_body({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}), content_type="text/event-stream")
    resp.mark_partial("connection_closed")
    out = response_info(text="Hi", choice_texts=["Hi"], streaming=True, stream_finished=finished)
    _, response, _ = events_for(request_info(streaming=True), out, resp=resp)
    assert response["confidence"]["completeness"] == completeness


def test_end_marker_does_not_hide_lost_bytes():
    resp = http_response(sse_body({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}), content_type="text/event-stream")
    resp.mark_partial("gap")
    resp.mark_partial("connection_closed")
    out = response_info(text="Hi", choice_texts=["Hi"], streaming=True, stream_finished=True)
    _, response, _ = events_for(request_info(streaming=True), out, resp=resp)
    assert response["confidence"]["completeness"] == "partial"
    assert response["confidence"]["limitations"] == ["gap", "connection_closed"]


@pytest.mark.parametrize(
    "name,finished",
    [("openai-chat-stream-002.json", True), ("anthropic-messages-stream-001.json", True), ("openai-responses-stream-002.json", True)],
)
def test_parsers_see_the_stream_end_marker(name, finished):
    info, out, *_ = build(load_fixture(name))
    assert out.stream_finished is finished


def test_stream_cut_before_its_end_marker_is_not_finished():
    fx = load_fixture("openai-chat-stream-002.json")
    resp = fixture_response(fx)
    resp.body = resp.body[: resp.body.index(b"[DONE]")]
    info = parse_request("openai", fixture_request(fx), "api.openai.com")
    assert parse_response(info, resp).stream_finished is False


def test_an_integer_finish_reason_is_normalised_by_its_familys_name():
    path = "/v1/projects/p/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent"
    req = http_request(path, {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})
    resp = http_response({"candidates": [{"content": {"parts": [{"text": "Hello"}]}, "finishReason": 1}]})
    info = parse_request("google", req, "europe-west4-aiplatform.googleapis.com")
    event = build_ai_response(info, parse_response(info, resp), req, resp, request_event=build_ai_request(info, req, **CTX), **CTX)
    assert event["data"]["finish_reason"] == "stop" and event["data"]["choices"][0]["finish_reason"] == "stop"
    assert_valid_event(event)
