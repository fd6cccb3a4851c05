"""Agent loops through a real Pipeline: tool calls in a response, their results in the next request.

Capture records are synthesised as the BPF side writes them (one DataChunk per TLS call) for each
API family's tool loop. A result must come out as one `agent.tool_result` linked to the
`agent.tool_call` it answers, however often the history resends it; the requests of one loop
share a trace id and two conversations do not; OpenAI-shaped traffic to a host no table knows is
`openai_compatible`, and other JSON POSTs to such hosts are ignored after their first request.
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

from oisp_daemon.capture import records as rec
from oisp_daemon.events.context import HostContext, ProcessCache
from oisp_daemon.events.correlation import Correlator
from oisp_daemon.pipeline import Pipeline
from tests.support.oisp_schema import assert_valid_event

PID = 5151
SSL = 0x7F00BEEF0000


def http_request(host: str, path: str, body: Any, headers: str = "") -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer sk-test-0123456789\r\n%s"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), host.encode(), headers.encode(), len(raw), raw))


def http_response(body: Any, status: int = 200) -> bytes:
    raw = json.dumps(body).encode()
    return b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (status, len(raw), raw)


class Capture:
    """Feeds a pipeline one record per TLS call, on connections of its own (pid, SSL pointer)s."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.seq: Dict[Tuple[int, int], int] = {}
        self.ts = time.monotonic_ns()

    def call(self, direction: str, data: bytes, key: Tuple[int, int]) -> None:
        seq = self.seq.get(key, -1) + 1
        self.seq[key] = seq
        self.ts += 1000
        self.pipeline.handle(rec.DataChunk(
            direction=direction, pid=key[0], tid=key[0], uid=1000, ssl=key[1], seq=seq, total=len(data),
            offset=0, ts_ns=self.ts, comm="agent", data=data, read_failed=False))

    def exchange(self, host: str, path: str, body: Any, answer: Any, key=(PID, SSL), headers: str = "") -> None:
        self.call("write", http_request(host, path, body, headers), key)
        if answer is not None:
            self.call("read", http_response(answer), key)


@pytest.fixture
def events() -> List[Dict[str, Any]]:
    return []


@pytest.fixture
def ignored() -> List[Tuple[int, int]]:
    return []


@pytest.fixture
def capture(events, ignored, tmp_path) -> Capture:
    host = HostContext(hostname="test", os="linux", arch="x86_64", kernel_version="6.18")
    pipeline = Pipeline(emit=events.append, provider_hosts={}, max_message_bytes=1 << 20, idle_timeout_s=30,
                        ignore_connection=lambda pid, ssl: ignored.append((pid, ssl)), host=host,
                        processes=ProcessCache(proc_root=str(tmp_path)))
    return Capture(pipeline)


def of_type(events: List[Dict[str, Any]], event_type: str) -> List[Dict[str, Any]]:
    return [e for e in events if e["event_type"] == event_type]


def trace_of(event: Dict[str, Any]) -> str:
    return event["trace_context"]["trace_id"]


def parent_of(event: Dict[str, Any]) -> Optional[str]:
    return next((r["event_id"] for r in event.get("related_events", []) if r["relationship"] == "parent"), None)


# -- OpenAI chat ---------------------------------------------------------------------------------

OPENAI = "api.openai.com"
CHAT = "/v1/chat/completions"
SYSTEM = {"role": "system", "content": "You are a weather agent."}
ASK = {"role": "user", "content": "Weather in Paris and Oslo?"}


def chat_answer(calls: List[Tuple[str, str, Dict[str, Any]]] = (), text: Optional[str] = None) -> Dict[str, Any]:
    message: Dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                                 for cid, name, args in calls]
    return {"id": "chatcmpl-1", "model": "gpt-4o-mini", "choices": [{"index": 0, "message": message,
            "finish_reason": "tool_calls" if calls else "stop"}], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}


def assistant_calls(*calls: Tuple[str, str, Dict[str, Any]]) -> Dict[str, Any]:
    return chat_answer(list(calls))["choices"][0]["message"]


def tool_message(call_id: str, content: str) -> Dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def openai_loop(capture: Capture, ask=ASK, prefix: str = "call") -> None:
    """Three requests of one loop: a call, its result plus a second call, both results resent."""
    first = (prefix + "_1", "get_weather", {"city": "Paris"})
    second = (prefix + "_2", "get_weather", {"city": "Oslo"})
    history = [SYSTEM, ask]
    capture.exchange(OPENAI, CHAT, {"model": "gpt-4o-mini", "messages": history}, chat_answer([first]))
    history += [assistant_calls(first), tool_message(first[0], '{"temp_c": 21}')]
    capture.exchange(OPENAI, CHAT, {"model": "gpt-4o-mini", "messages": history}, chat_answer([second]))
    history += [assistant_calls(second), tool_message(second[0], "4 degrees and snow")]
    capture.exchange(OPENAI, CHAT, {"model": "gpt-4o-mini", "messages": history}, chat_answer(text="Paris is warmer."))


def test_tool_result_is_linked_to_the_call_it_answers(capture, events):
    openai_loop(capture)
    calls = {e["data"]["call_id"]: e for e in of_type(events, "agent.tool_call")}
    results = of_type(events, "agent.tool_result")
    assert [r["data"]["call_id"] for r in results] == ["call_1", "call_2"]
    first, second = results
    assert parent_of(first) == calls["call_1"]["event_id"]
    assert parent_of(second) == calls["call_2"]["event_id"]
    assert first["data"]["result"] == {"temp_c": 21} and first["data"]["success"] is True
    assert second["data"]["result"] == "4 degrees and snow"
    assert first["data"]["tool"] == {"name": "get_weather"}
    assert first["data"]["result_hash"].startswith("sha256:") and first["data"]["result_size_bytes"] == len('{"temp_c": 21}')
    # The result is seen in the second request: its time, process, and a link to that request.
    requests = of_type(events, "ai.request")
    assert first["ts_mono"] == requests[1]["ts_mono"]
    assert {"event_id": requests[1]["event_id"], "relationship": "related"} in first["related_events"]
    assert first["confidence"]["completeness"] == "full"
    for event in events:
        assert_valid_event(event)


def test_results_resent_with_the_history_are_reported_once(capture, events):
    openai_loop(capture)
    # The third request resent call_1's result with call_2's: still one event per result.
    assert len(of_type(events, "ai.request")) == 3
    assert sorted(r["data"]["call_id"] for r in of_type(events, "agent.tool_result")) == ["call_1", "call_2"]


def test_requests_of_one_loop_share_a_trace_and_two_conversations_do_not(capture, events):
    openai_loop(capture)
    one = list(events)
    events.clear()
    openai_loop(capture, ask={"role": "user", "content": "Is it raining in Rome?"}, prefix="other")
    two = list(events)
    assert len({trace_of(e) for e in one}) == 1
    assert len({trace_of(e) for e in two}) == 1
    assert trace_of(one[0]) != trace_of(two[0])
    # Each request is a span: its response and the tool events it carries share it.
    spans = {e["data"]["request_id"]: e["trace_context"]["span_id"] for e in of_type(one, "ai.request")}
    for event in one:
        assert event["trace_context"]["span_id"] == spans[event["data"]["request_id"]]
    assert len(set(spans.values())) == 3


def test_a_result_whose_call_was_not_seen_is_reported_unlinked(capture, events):
    history = [ASK, assistant_calls(("call_x", "lookup", {})), tool_message("call_x", "found")]
    capture.exchange(OPENAI, CHAT, {"model": "gpt-4o-mini", "messages": history}, chat_answer(text="ok"))
    (result,) = of_type(events, "agent.tool_result")
    assert result["data"]["call_id"] == "call_x" and parent_of(result) is None
    assert "tool_call_not_seen" in result["confidence"]["limitations"]
    assert_valid_event(result)


def test_the_same_call_id_in_two_processes_is_two_results(capture, events):
    history = [ASK, assistant_calls(("call_1", "lookup", {})), tool_message("call_1", "found")]
    body = {"model": "gpt-4o-mini", "messages": history}
    capture.exchange(OPENAI, CHAT, body, chat_answer(text="ok"), key=(PID, SSL))
    capture.exchange(OPENAI, CHAT, body, chat_answer(text="ok"), key=(PID + 1, SSL))
    assert [r["process"]["pid"] for r in of_type(events, "agent.tool_result")] == [PID, PID + 1]


# -- OpenAI Responses ----------------------------------------------------------------------------

def test_responses_function_call_output_links_across_previous_response_id(capture, events):
    """The second request carries only the output (the server keeps the history): the call id
    still puts it in the first request's trace."""
    answer = {"id": "resp_1", "object": "response", "model": "gpt-4o-mini", "status": "completed",
              "output": [{"type": "function_call", "id": "fc_1", "call_id": "call_r1", "name": "search",
                          "arguments": '{"q": "oisp"}'}]}
    capture.exchange(OPENAI, "/v1/responses", {"model": "gpt-4o-mini", "input": "Find OISP"}, answer)
    follow = {"model": "gpt-4o-mini", "previous_response_id": "resp_1",
              "input": [{"type": "function_call_output", "call_id": "call_r1",
                         "output": [{"type": "input_text", "text": "3 hits"}]}]}
    done = {"id": "resp_2", "object": "response", "model": "gpt-4o-mini", "status": "completed",
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done"}]}]}
    capture.exchange(OPENAI, "/v1/responses", follow, done)
    (call,) = of_type(events, "agent.tool_call")
    (result,) = of_type(events, "agent.tool_result")
    assert result["data"]["call_id"] == "call_r1" and result["data"]["result"] == "3 hits"
    assert parent_of(result) == call["event_id"] and result["data"]["tool"] == {"name": "search"}
    assert len({trace_of(e) for e in events}) == 1


# -- Anthropic -----------------------------------------------------------------------------------

def test_anthropic_tool_result_blocks_with_is_error(capture, events):
    ask = {"role": "user", "content": "Read /etc/motd"}
    use = {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "/etc/motd"}}
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
              "content": [use], "stop_reason": "tool_use", "usage": {"input_tokens": 9, "output_tokens": 4}}
    headers = "anthropic-version: 2023-06-01\r\n"
    capture.exchange("api.anthropic.com", "/v1/messages",
                     {"model": "claude-sonnet-4-5", "max_tokens": 64, "system": "agent", "messages": [ask]}, answer,
                     headers=headers)
    history = [ask, {"role": "assistant", "content": [use]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                                             "content": [{"type": "text", "text": "permission denied"}]}]}]
    final = dict(answer, content=[{"type": "text", "text": "I cannot."}], stop_reason="end_turn")
    capture.exchange("api.anthropic.com", "/v1/messages",
                     {"model": "claude-sonnet-4-5", "max_tokens": 64, "system": "agent", "messages": history}, final,
                     headers=headers)
    (call,) = of_type(events, "agent.tool_call")
    (result,) = of_type(events, "agent.tool_result")
    assert parent_of(result) == call["event_id"]
    assert result["data"]["success"] is False and result["data"]["error"] == {"type": "tool_error"}
    assert result["data"]["result"] == "permission denied"
    assert len({trace_of(e) for e in events}) == 1
    assert_valid_event(result)


# -- Gemini: results by name ---------------------------------------------------------------------

GEMINI = "generativelanguage.googleapis.com"
GEN = "/v1beta/models/gemini-2.5-flash:generateContent"


def gemini_call(name: str, args: Dict[str, Any]) -> Dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": name, "args": args}}]},
                            "finishReason": "STOP"}], "modelVersion": "gemini-2.5-flash"}


def test_gemini_function_response_without_id_answers_the_latest_call_of_its_name(capture, events):
    ask = {"role": "user", "parts": [{"text": "Weather in Paris, then in Oslo"}]}
    call_part = lambda city: {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": city}}}]}  # noqa: E731
    reply = lambda temp: {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": temp}}}]}  # noqa: E731
    contents = [ask]
    capture.exchange(GEMINI, GEN, {"contents": contents}, gemini_call("get_weather", {"city": "Paris"}))
    contents += [call_part("Paris"), reply(21)]
    capture.exchange(GEMINI, GEN, {"contents": contents}, gemini_call("get_weather", {"city": "Oslo"}))
    contents += [call_part("Oslo"), reply(4)]
    final = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Paris."}]}, "finishReason": "STOP"}]}
    capture.exchange(GEMINI, GEN, {"contents": contents}, final)
    calls = of_type(events, "agent.tool_call")
    results = of_type(events, "agent.tool_result")
    assert [r["data"]["result"] for r in results] == [{"temp": 21}, {"temp": 4}]
    assert [parent_of(r) for r in results] == [c["event_id"] for c in calls]
    # No ids in this API: the call_id names the tool_call event answered.
    assert [r["data"]["call_id"] for r in results] == [c["event_id"] for c in calls]
    assert len({trace_of(e) for e in events}) == 1
    for event in results:
        assert_valid_event(event)


# -- Bedrock Converse ----------------------------------------------------------------------------

def test_bedrock_tool_result_status_error(capture, events):
    host = "bedrock-runtime.us-east-1.amazonaws.com"
    path = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
    ask = {"role": "user", "content": [{"text": "Run ls"}]}
    use = {"toolUse": {"toolUseId": "tooluse_1", "name": "shell", "input": {"cmd": "ls"}}}
    answer = {"output": {"message": {"role": "assistant", "content": [use]}}, "stopReason": "tool_use",
              "usage": {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8}}
    capture.exchange(host, path, {"messages": [ask]}, answer)
    result_block = {"toolResult": {"toolUseId": "tooluse_1", "status": "error", "content": [{"json": {"exit": 2}}]}}
    history = [ask, {"role": "assistant", "content": [use]}, {"role": "user", "content": [result_block]}]
    final = {"output": {"message": {"role": "assistant", "content": [{"text": "failed"}]}}, "stopReason": "end_turn"}
    capture.exchange(host, path, {"messages": history}, final)
    (call,) = of_type(events, "agent.tool_call")
    (result,) = of_type(events, "agent.tool_result")
    assert parent_of(result) == call["event_id"] and result["data"]["call_id"] == "tooluse_1"
    assert result["data"]["success"] is False and result["data"]["result"] == {"exit": 2}


# -- Cohere v2 -----------------------------------------------------------------------------------

def test_cohere_v2_document_results(capture, events):
    body = {"model": "command-r-plus", "messages": [
        {"role": "user", "content": "Price of AAPL?"},
        {"role": "assistant", "tool_calls": [{"id": "q1", "type": "function",
                                              "function": {"name": "quote", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "q1", "content": [{"type": "document", "document": {"data": "{\"p\": 190}"}}]}]}
    answer = {"id": "c1", "finish_reason": "COMPLETE", "message": {"role": "assistant", "content": [{"type": "text", "text": "190"}]}}
    capture.exchange("api.cohere.com", "/v2/chat", body, answer)
    (result,) = of_type(events, "agent.tool_result")
    assert result["data"]["call_id"] == "q1" and result["data"]["result"] == {"data": "{\"p\": 190}"}


# -- OpenAI-compatible hosts ---------------------------------------------------------------------

def test_openai_shaped_traffic_on_an_unknown_host_is_openai_compatible(capture, events, ignored):
    body = {"model": "llama-3.1-70b", "messages": [ASK]}
    capture.exchange("llm-gateway.corp.example", "/v1/chat/completions", body, chat_answer(text="Sunny."))
    capture.exchange("llm-gateway.corp.example", "/v1/chat/completions", body, chat_answer(text="Still sunny."))
    assert not ignored
    requests = of_type(events, "ai.request")
    assert len(requests) == 2 and len(of_type(events, "ai.response")) == 2
    provider = requests[0]["data"]["provider"]
    assert provider == {"name": "other", "id": "openai_compatible",
                        "endpoint": "https://llm-gateway.corp.example/v1/chat/completions"}
    # Recognised by its shape, not its host: the events say so.
    for event in requests + of_type(events, "ai.response"):
        assert event["confidence"]["ai_detection_method"] == "payload_inspection"
        assert "payload_inspection" in event["confidence"]["reasons"]
    for event in events:
        assert_valid_event(event)


NOT_AI = [
    ("/v1/chat/completions", {"messages": [ASK]}),  # no model
    ("/v1/chat/completions", {"model": "", "messages": [ASK]}),  # empty model
    ("/v1/chat/completions", {"model": "x", "messages": []}),  # nothing asked
    ("/v1/completions", {"model": "x", "messages": "not a list"}),
    ("/v1/embeddings", {"model": 3, "input": "x"}),
    ("/api/events", {"model": "x", "messages": [ASK]}),  # AI-looking body, other path
    ("/hooks/completions/notify", {"model": "x", "prompt": "y"}),  # path ends alike, not an API root
    ("/v1/responses", b"model=x&input=y"),  # a form, not JSON
    ("/v1/responses", [{"model": "x", "input": "y"}]),  # JSON, not an object
    ("/v1/chat/completions", {"data": {"model": "x", "messages": [ASK]}}),  # nested
]


@pytest.mark.parametrize("path,body", NOT_AI, ids=[str(i) for i in range(len(NOT_AI))])
def test_other_json_posts_on_unknown_hosts_are_ignored(capture, events, ignored, path, body):
    key = (PID, SSL)
    capture.exchange("api.example.net", path, body, {"ok": True}, key=key)
    # A later OpenAI-shaped request on the same connection is not looked at: it was decided.
    capture.exchange("api.example.net", CHAT, {"model": "x", "messages": [ASK]}, chat_answer(text="hi"), key=key)
    assert events == [] and ignored == [key]


# -- bounded memory ------------------------------------------------------------------------------

def test_correlation_memory_is_bounded(capture, events):
    correlator = Correlator(max_calls=8, max_named=4, max_reported=16)
    capture.pipeline.correlation = correlator
    for n in range(40):
        history = [{"role": "user", "content": "task %d" % n}]
        call = ("c%d" % n, "tool%d" % n, {})
        capture.exchange(OPENAI, CHAT, {"model": "gpt-4o-mini", "messages": history}, chat_answer([call]))
        history += [assistant_calls(call), tool_message(call[0], "r")]
        capture.exchange(OPENAI, CHAT, {"model": "gpt-4o-mini", "messages": history}, chat_answer(text="ok"))
    assert len(correlator._calls) <= 8 and len(correlator._unanswered) <= 4 and len(correlator._reported) <= 16
    results = of_type(events, "agent.tool_result")
    assert len(results) == 40 and all(parent_of(r) is not None for r in results)


def test_streamed_chunks_are_in_their_request_trace(capture, events):
    from tests.support import synthetic_bodies as synth

    body = {"model": "gpt-4o-mini", "stream": True, "messages": [ASK]}
    capture.call("write", http_request(OPENAI, CHAT, body), (PID, SSL))
    capture.call("read", b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n", (PID, SSL))
    for chunk in synth.echo_chat_stream_events(json.dumps(body).encode()):
        capture.call("read", b"%x\r\n%s\r\n" % (len(chunk), chunk), (PID, SSL))
    capture.call("read", b"0\r\n\r\n", (PID, SSL))
    chunks = of_type(events, "ai.streaming_chunk")
    assert chunks and len(of_type(events, "ai.response")) == 1
    assert {e["confidence"]["ai_detection_method"] for e in events} == {"known_endpoint"}
    assert {json.dumps(e["trace_context"]) for e in events} == {json.dumps(events[0]["trace_context"])}
