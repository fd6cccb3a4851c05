"""WebSocket connections after their HTTP/1.1 upgrade: the tracker hands over at the 101, each
response.create up to the end of its response is one exchange, and the OpenAI Responses and
Realtime APIs come out of a real Pipeline as ai.request / ai.streaming_chunk / ai.response."""
from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from oisp_daemon.decode.connection import ConnectionTracker
from oisp_daemon.decode.http1 import MAX_PENDING_RESPONSES
from oisp_daemon.decode.protocol import GAP, TOO_MANY_PENDING, RequestDone, ResponseDone, ResponseProgress, Stopped
from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.decode.protocol import DecodeStats
from oisp_daemon.decode.websocket import after_connect
from oisp_daemon.decode.websocket import (
    DEFLATE_CONTEXT_LOST, JSON_SEQ, WEBSOCKET_CLOSE, WEBSOCKET_ERROR, WEBSOCKET_METHOD, WebSocketDecoder, deflate_params,
)
from oisp_daemon.providers import parse_request, parse_response
from oisp_daemon.providers.stream import JsonSeq
from tests.support.llm_fixtures import load_fixture
from tests.support.oisp_schema import assert_valid_event
from tests.support.ws_replay import (
    Deflater, dumps, frame, message, response_create, server_events, upgrade_request, upgrade_response,
)
from tests.unit.test_pipeline_pairing import KEY, Capture
from tests.unit.test_pipeline_streaming import make_pipeline, of_type

MASK = b"\x01\x02\x03\x04"
RESPONSES = ["openai-responses-stream-002", "openai-responses-stream-003", "openai-responses-stream-tools-001"]
DEFLATE = "permessage-deflate; client_no_context_takeover"


def tracker() -> ConnectionTracker:
    return ConnectionTracker(max_body_bytes=1 << 20, idle_timeout_s=10)


def small_conversation(deflate: bool):
    """(client bytes, server bytes) after the upgrade: two exchanges, a ping, session chatter."""
    client = Deflater(takeover=False) if deflate else None
    server = Deflater(takeover=True) if deflate else None
    writes = [
        message(dumps({"type": "response.create", "model": "gpt-4o", "input": "hi"}), MASK, client, fragments=2),
        frame(b"", 0xA, mask=MASK),
        message(dumps({"type": "response.create", "model": "gpt-4o", "input": "again"}), MASK, client),
    ]
    events = [{"type": "response.created", "response": {"id": "r1"}},
              {"type": "response.output_text.delta", "delta": "Hel"},
              {"type": "response.output_text.delta", "delta": "lo"},
              {"type": "response.completed", "response": {"id": "r1", "status": "completed", "model": "gpt-4o",
                                                          "usage": {"input_tokens": 3, "output_tokens": 2}}}]
    reads = [message(dumps({"type": "rate_limits.updated"}), None, server)]
    reads += [message(dumps(e), None, server, fragments=2 if i == 1 else 1) for i, e in enumerate(events)]
    second = [dict(e, response=dict(e["response"], id="r2")) if "response" in e else e for e in events]
    return writes, reads, [message(dumps(e), None, server) for e in second]


def summary(steps) -> List[Any]:
    out = []
    for step in steps:
        if isinstance(step, (RequestDone, ResponseDone)) and step.exchange.request.method != WEBSOCKET_METHOD:
            continue  # the upgrade's own exchange
        if isinstance(step, RequestDone):
            out.append(("request", step.exchange.request.method, step.exchange.request.body.count(b"\x1e")))
        elif isinstance(step, ResponseDone):
            resp = step.exchange.response
            types = [e.data["type"] for e in JsonSeq().feed(resp.body)] if resp else None
            out.append(("response", types, step.exchange.ended))
        elif isinstance(step, Stopped):
            out.append(("stopped", step.reason))
    return out


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
def test_every_split_point_of_the_server_stream(deflate):
    """The 101 and a message before any request cut anywhere, then the answer cut anywhere."""
    writes, reads, second = small_conversation(deflate)
    head = upgrade_response(DEFLATE if deflate else None) + reads[0]
    answer = b"".join(reads[1:])
    types = ["response.created", "response.output_text.delta", "response.output_text.delta", "response.completed"]
    expected = [("request", WEBSOCKET_METHOD, 1), ("response", types, None),
                ("request", WEBSOCKET_METHOD, 1), ("response", types, None)]
    for cut in range(len(head) + len(answer) + 1):
        t = tracker()
        steps = t.on_data(KEY, "write", upgrade_request(deflate=deflate), 1)
        if cut <= len(head):
            steps += t.on_data(KEY, "read", head[:cut], 2) + t.on_data(KEY, "read", head[cut:], 3)
            steps += t.on_data(KEY, "write", writes[0], 4) + t.on_data(KEY, "read", answer, 5)
        else:
            at = cut - len(head)
            steps += t.on_data(KEY, "read", head, 2) + t.on_data(KEY, "write", writes[0], 3)
            steps += t.on_data(KEY, "read", answer[:at], 4) + t.on_data(KEY, "read", answer[at:], 5)
        steps += t.on_data(KEY, "write", writes[1] + writes[2], 6)
        steps += t.on_data(KEY, "read", b"".join(second), 7)
        assert summary(steps) == expected, cut
        assert t._conns[KEY].decoder.dropped_messages == 1


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
def test_every_split_point_of_the_client_stream(deflate):
    writes, reads, second = small_conversation(deflate)
    client = b"".join(writes)
    for cut in range(len(client) + 1):
        t = tracker()
        t.on_data(KEY, "write", upgrade_request(deflate=deflate), 1)
        t.on_data(KEY, "read", upgrade_response(DEFLATE if deflate else None), 2)
        steps = t.on_data(KEY, "write", client[:cut], 3) + t.on_data(KEY, "write", client[cut:], 4)
        requests = [s.exchange.request for s in steps if isinstance(s, RequestDone)]
        bodies = [json.loads(r.body.strip(b"\x1e\n"))["input"] for r in requests]
        assert bodies == ["hi", "again"], cut


def test_server_frames_in_the_same_read_as_the_101_are_decoded():
    writes, reads, _ = small_conversation(False)
    t = tracker()
    t.on_data(KEY, "write", upgrade_request() + writes[0], 1)  # a client that does not wait
    steps = t.on_data(KEY, "read", upgrade_response() + b"".join(reads), 2)
    # The client's frame went out with the upgrade request, before the 101: it was HTTP/1.1 bytes
    # then, so only the server's side of that first exchange is seen (and dropped, unpaired).
    assert [type(s).__name__ for s in steps] == ["ResponseDone"]
    done = [s for s in steps if isinstance(s, ResponseDone)]
    assert done[0].exchange.request.method == "GET" and done[0].exchange.response.status == 101
    assert done[0].exchange.response.partial_reasons == ["upgrade"]
    assert not any(isinstance(s, Stopped) for s in steps)


def test_writes_before_the_101_are_http_not_websocket():
    # The client's frame was written before the 101 was read: the HTTP/1.1 request parser saw
    # it; the WebSocket decoder starts at the 101, so that exchange is lost, never invented.
    writes, reads, _ = small_conversation(False)
    t = tracker()
    t.on_data(KEY, "write", upgrade_request(), 1)
    t.on_data(KEY, "write", writes[0], 2)
    steps = t.on_data(KEY, "read", upgrade_response() + b"".join(reads), 3)
    assert not [s for s in steps if isinstance(s, RequestDone) and s.exchange.request.method == WEBSOCKET_METHOD]
    assert t.connection_count() == 1


def test_a_101_that_is_not_a_websocket_stops_decoding():
    t = tracker()
    t.on_data(KEY, "write", b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", 1)
    steps = t.on_data(KEY, "read", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", 2)
    assert isinstance(steps[-1], Stopped) and steps[-1].reason == "upgrade"


def upgraded(deflate: str = None) -> ConnectionTracker:
    t = tracker()
    t.on_data(KEY, "write", upgrade_request(), 1)
    t.on_data(KEY, "read", upgrade_response(deflate), 2)
    return t


def create(text: str = "hi") -> bytes:
    return message(dumps({"type": "response.create", "model": "gpt-4o", "input": text}), MASK)


def test_a_gap_ends_the_open_exchange_and_stops_decoding():
    t = upgraded()
    t.on_data(KEY, "write", create(), 3)
    t.on_data(KEY, "read", message(dumps({"type": "response.created"})), 4)
    steps = t.on_gap(KEY, 5)
    (done,) = [s for s in steps if isinstance(s, ResponseDone)]
    assert done.exchange.ended == GAP and done.exchange.response.partial_reasons == [GAP]
    steps = t.on_data(KEY, "read", message(b"{}"), 6)
    assert steps == [Stopped(KEY, "websocket_gap")]


@pytest.mark.parametrize("bad", [
    bytes([0x81, 127]) + (1 << 63).to_bytes(8, "big"),  # a frame claiming 2^63 bytes
    frame(b"x", 1, rsv_bits=0x20),
    frame(b"x", 5),
    frame(b"p" * 126, 0x9),
    frame(b"\x00\x00garbage-not-deflate", 1, rsv1=True),  # RSV1 when deflate was not negotiated
])
def test_a_forbidden_frame_ends_the_exchange_partial_and_stops(bad):
    t = upgraded()
    t.on_data(KEY, "write", create(), 3)
    t.on_data(KEY, "read", message(dumps({"type": "response.created"})), 4)
    steps = t.on_data(KEY, "read", bad + message(b"{}"), 5)
    done = [s for s in steps if isinstance(s, ResponseDone)]
    assert [d.exchange.ended for d in done] == [WEBSOCKET_ERROR]
    assert steps[-1] == Stopped(KEY, WEBSOCKET_ERROR)
    assert t.on_data(KEY, "read", message(b"{}"), 6) == []


def test_invalid_deflate_data_without_takeover_keeps_the_connection():
    t = upgraded("permessage-deflate; server_no_context_takeover")
    t.on_data(KEY, "write", create(), 3)
    steps = t.on_data(KEY, "read", frame(b"\xff\xfe\xfd not deflate", 1, rsv1=True), 4)
    assert steps == [] and t.connection_count() == 1
    done = message(dumps({"type": "response.completed", "response": {}}), deflater=Deflater(takeover=False))
    (step,) = t.on_data(KEY, "read", done, 5)
    assert step.exchange.response.partial_reasons == ["bad_deflate"] and step.exchange.ended is None


def test_invalid_deflate_data_with_takeover_ends_decoding():
    t = upgraded("permessage-deflate")
    t.on_data(KEY, "write", create(), 3)
    steps = t.on_data(KEY, "read", frame(b"\xff\xfe\xfd not deflate", 1, rsv1=True), 4)
    done, stopped = steps
    assert done.exchange.response.partial_reasons == ["bad_deflate", DEFLATE_CONTEXT_LOST]
    assert stopped == Stopped(KEY, DEFLATE_CONTEXT_LOST)


def test_a_close_frame_ends_what_is_open():
    t = upgraded()
    t.on_data(KEY, "write", create(), 3)
    t.on_data(KEY, "read", message(dumps({"type": "response.created"})), 4)
    steps = t.on_data(KEY, "read", frame(b"\x03\xe9", 0x8), 5)
    (done,) = steps
    assert done.exchange.ended == WEBSOCKET_CLOSE
    assert t.on_close(KEY, 6) == []


def test_an_error_before_the_response_begins_ends_the_exchange():
    t = upgraded()
    t.on_data(KEY, "write", create(), 3)
    (done,) = t.on_data(KEY, "read", message(dumps({"type": "error", "error": {"type": "invalid_request_error"}})), 4)
    assert done.exchange.ended is None and done.exchange.response.complete


def test_closing_the_connection_ends_an_unanswered_exchange():
    t = upgraded()
    t.on_data(KEY, "write", create(), 3)
    (done,) = t.on_close(KEY, 4)
    assert done.exchange.response is None and done.exchange.ended == "connection_closed"


def test_the_response_body_is_bounded():
    t = ConnectionTracker(max_body_bytes=4096, idle_timeout_s=10)
    t.on_data(KEY, "write", upgrade_request(), 1)
    t.on_data(KEY, "read", upgrade_response(), 2)
    t.on_data(KEY, "write", create(), 3)
    delta = message(dumps({"type": "response.output_text.delta", "delta": "x" * 1000}))
    for i in range(20):
        t.on_data(KEY, "read", delta, 4 + i)
    (done,) = t.on_data(KEY, "read", message(dumps({"type": "response.completed", "response": {}})), 30)
    response = done.exchange.response
    assert len(response.body) <= 4096 and "body_limit" in response.partial_reasons


def test_the_request_body_is_bounded():
    t = ConnectionTracker(max_body_bytes=4096, idle_timeout_s=10)
    t.on_data(KEY, "write", upgrade_request(), 1)
    t.on_data(KEY, "read", upgrade_response(), 2)
    t.on_data(KEY, "write", message(dumps({"type": "session.update", "session": {"instructions": "x" * 5000}}), MASK), 3)
    (step,) = t.on_data(KEY, "write", create(), 4)
    assert step.exchange.request.partial_reasons == ["body_limit"]
    assert [e.data["type"] for e in JsonSeq().feed(step.exchange.request.body)] == ["response.create"]
    (step,) = t.on_data(KEY, "write", create(), 5)  # the next exchange starts afresh
    assert step.exchange.request.complete


def test_requests_never_answered_do_not_pile_up():
    t = upgraded()
    steps = []
    for i in range(MAX_PENDING_RESPONSES + 5):
        steps += t.on_data(KEY, "write", create(str(i)), 3 + i)
    ended = [s.exchange for s in steps if isinstance(s, ResponseDone)]
    assert [e.ended for e in ended] == [TOO_MANY_PENDING] * 5
    assert len(t._conns[KEY].decoder.open_exchanges()) == MAX_PENDING_RESPONSES


def test_progress_steps_carry_whole_messages_of_streaming_exchanges():
    t = upgraded()
    (req,) = t.on_data(KEY, "write", create(), 3)
    req.exchange.streaming = True
    steps = t.on_data(KEY, "read", message(dumps({"type": "response.created"})) + message(b'{"type":"x"}'), 4)
    (progress,) = steps
    assert isinstance(progress, ResponseProgress) and progress.offset == 0
    assert [e.data["type"] for e in JsonSeq().feed(progress.data)] == ["response.created", "x"]
    (progress,) = t.on_data(KEY, "read", message(b'{"type":"y"}'), 5)
    assert progress.offset == len(b'\x1e{"type":"response.created"}\n\x1e{"type":"x"}\n')
    assert progress.marks == ((progress.offset, 5),)


def h2_connect(protocol: str = "websocket", status: int = 200):
    """An RFC 8441 extended CONNECT and its answer, as decode/http2.py hands them out."""
    request = HttpRequest(headers=[("host", "api.openai.com"), ("authorization", "Bearer sk-test"),
                                   (":protocol", protocol)], body=b"", ts_start_ns=1, ts_end_ns=1,
                          method="CONNECT", target="/v1/responses", version="HTTP/2")
    response = HttpResponse(headers=[("sec-websocket-extensions", "permessage-deflate")], body=b"",
                            ts_start_ns=2, ts_end_ns=2, status=status, version="HTTP/2")
    return request, response


def test_an_http2_extended_connect_stream_is_a_websocket():
    assert after_connect(KEY, DecodeStats(), 1 << 20, *h2_connect("connect-udp")) is None
    assert after_connect(KEY, DecodeStats(), 1 << 20, *h2_connect(status=404)) is None
    decoder = after_connect(KEY, DecodeStats(), 1 << 20, *h2_connect())
    out: List[Any] = []
    decoder.feed("write", create(), 3, out)  # the stream's DATA, in either direction
    decoder.feed("read", message(dumps({"type": "response.completed", "response": {}}), deflater=Deflater()), 4, out)
    request, done = out
    assert request.exchange.request.method == WEBSOCKET_METHOD and request.exchange.request.target == "/v1/responses"
    assert request.exchange.request.header("host") == "api.openai.com"
    assert request.exchange.request.header(":protocol") is None
    assert done.exchange.response.status == 200 and done.exchange.response.complete


def test_deflate_parameters():
    assert deflate_params(None) is None and deflate_params("x-webkit-deflate-frame") is None
    params = deflate_params('permessage-deflate; server_no_context_takeover; client_max_window_bits="10"')
    assert not params.server_takeover and params.client_takeover and params.client_max_window_bits == 10


# -- through the providers and a real pipeline ----------------------------------------------------


def connection(capture: Capture, fx_names: List[str], deflate: bool, target: str = "/v1/responses") -> None:
    """Upgrade, then each fixture's response.create and its recorded events as frames."""
    capture.write(upgrade_request(target, deflate=deflate))
    capture.read(upgrade_response("permessage-deflate" if deflate else None))
    client, server = (Deflater(), Deflater()) if deflate else (None, None)
    for name in fx_names:
        fx = load_fixture(name)
        capture.write(message(dumps(response_create(fx)), MASK, client))
        for data in server_events(fx):
            capture.read(message(data, None, server))
    capture.free()


def check_expect(fx, request: Dict[str, Any], response: Dict[str, Any]) -> None:
    expect = fx.expect
    req, resp = request["data"], response["data"]
    assert req["model"]["id"] == expect["request_model"] and req["streaming"] is True
    assert req["api"] == resp["api"] == expect["api"]
    assert resp["model"]["id"] == expect["model"]
    assert resp["usage"]["prompt_tokens"] == expect["input_tokens"]
    assert resp["usage"]["completion_tokens"] == expect["output_tokens"]
    assert resp["provider_finish_reason"] == expect["finish_reason"]
    assert [c["name"] for c in resp.get("tool_calls", [])] == expect["tool_calls"]
    if expect["text_prefix"] is not None:
        assert resp["choices"][0]["message"]["content"][:40] == expect["text_prefix"]
    assert resp["success"] is True and resp["status_code"] == 101
    assert req["auth"]["type"] == "api_key"
    assert response["confidence"]["completeness"] == "full", response["confidence"]
    assert 0 <= resp["time_to_first_token_ms"] <= resp["latency_ms"]


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
def test_responses_api_over_websocket_matches_the_recordings(deflate, tmp_path):
    events: List[Dict[str, Any]] = []
    connection(Capture(make_pipeline(events, tmp_path)), RESPONSES, deflate)
    for event in events:
        assert_valid_event(event)
    requests, responses = of_type(events, "ai.request"), of_type(events, "ai.response")
    assert len(requests) == len(responses) == len(RESPONSES)
    for name, request, response in zip(RESPONSES, requests, responses):
        check_expect(load_fixture(name), request, response)
        chunks = [e for e in of_type(events, "ai.streaming_chunk") if e["data"]["request_id"] == request["data"]["request_id"]]
        assert chunks, name
        assert events.index(response) > max(events.index(c) for c in chunks)  # live, before the response


def test_the_request_body_is_the_json_seq_of_client_messages():
    t = upgraded()
    t.on_data(KEY, "write", message(dumps({"type": "session.update", "session": {"instructions": "be brief"}}), MASK), 3)
    t.on_data(KEY, "write", message(dumps({"type": "input_audio_buffer.append", "audio": "AAAA"}), MASK), 4)
    (step,) = t.on_data(KEY, "write", create(), 5)
    request = step.exchange.request
    assert request.header("content-type") == JSON_SEQ and request.header("authorization").startswith("Bearer ")
    assert [e.data["type"] for e in JsonSeq().feed(request.body)] == ["session.update", "response.create"]
    assert request.ts_start_ns == 5


REALTIME_SERVER = [
    {"type": "session.created", "session": {"id": "sess_1"}},
    {"type": "response.created", "response": {"id": "resp_rt1", "status": "in_progress"}},
    {"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "role": "assistant"}},
    {"type": "response.audio_transcript.delta", "output_index": 0, "delta": "Bonjour"},
    {"type": "response.audio.delta", "output_index": 0, "delta": "UklGRg=="},
    {"type": "response.audio_transcript.delta", "output_index": 0, "delta": " !"},
    {"type": "response.output_item.added", "output_index": 1,
     "item": {"type": "function_call", "name": "get_weather", "call_id": "call_1"}},
    {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{\"city\":"},
    {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "\"Paris\"}"},
    {"type": "response.done", "response": {
        "id": "resp_rt1", "status": "completed",
        "output": [{"type": "message", "content": [{"type": "audio", "transcript": "Bonjour !"}]}],
        "usage": {"total_tokens": 120, "input_tokens": 100, "output_tokens": 20,
                  "input_token_details": {"cached_tokens": 64, "text_tokens": 40, "audio_tokens": 60}}}},
]


def test_realtime_api_becomes_ai_events(tmp_path):
    events: List[Dict[str, Any]] = []
    capture = Capture(make_pipeline(events, tmp_path))
    capture.write(upgrade_request("/v1/realtime?model=gpt-realtime"))
    capture.read(upgrade_response())
    capture.read(message(dumps(REALTIME_SERVER[0])))  # before any request: dropped
    for client in ({"type": "session.update", "session": {"instructions": "Answer in French.",
                                                          "tools": [{"type": "function", "name": "get_weather"}]}},
                   {"type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}},
                   {"type": "response.create", "response": {"modalities": ["audio", "text"]}}):
        capture.write(message(dumps(client), MASK))
    for server in REALTIME_SERVER[1:]:
        capture.read(message(dumps(server)))
    for event in events:
        assert_valid_event(event)
    (request,) = of_type(events, "ai.request")
    (response,) = of_type(events, "ai.response")
    req, resp = request["data"], response["data"]
    assert req["api"] == "openai.realtime" and req["model"]["id"] == "gpt-realtime" and req["streaming"] is True
    assert req["messages_count"] == 2
    assert resp["choices"][0]["message"]["content"] == "Bonjour !"
    assert [c["name"] for c in resp["tool_calls"]] == ["get_weather"]
    assert resp["usage"]["prompt_tokens"] == 100 and resp["usage"]["completion_tokens"] == 20
    assert resp["provider_request_id"] == "resp_rt1" and resp["provider_finish_reason"] == "completed"
    chunks = of_type(events, "ai.streaming_chunk")
    assert len(chunks) >= 2 and events.index(response) > events.index(chunks[-1])


def test_realtime_request_and_response_parsers_directly():
    t = upgraded()
    t.on_data(KEY, "write", message(dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}}), MASK), 3)
    (step,) = t.on_data(KEY, "write", message(dumps({"type": "response.create", "response": {
        "instructions": "Be short", "model": "gpt-realtime-mini"}}), MASK), 4)
    step.exchange.request.target = "/v1/realtime"
    info = parse_request("openai", step.exchange.request, "api.openai.com")
    assert info.api == "openai.realtime" and info.model == "gpt-realtime-mini"
    assert [(m.role, m.content) for m in info.messages] == [("system", "Be short"), ("user", "Hi")]
    (done,) = t.on_data(KEY, "read", message(dumps({"type": "response.done", "response": {
        "status": "failed", "status_details": {"type": "failed", "error": {"type": "server_error", "message": "x"}}}})), 5)
    out = parse_response(info, done.exchange.response)
    assert out.success is False and out.error_type == "server_error" and out.finish_reason == "failed"


def test_other_websocket_apis_give_no_events(tmp_path):
    events: List[Dict[str, Any]] = []
    capture = Capture(make_pipeline(events, tmp_path))
    capture.write(upgrade_request("/v1/chat/stream"))
    capture.read(upgrade_response())
    capture.write(message(dumps({"type": "response.create"}), MASK))
    capture.read(message(dumps({"type": "response.completed", "response": {}})))
    capture.free()
    assert events == []


def test_decoder_counts_messages_outside_exchanges():
    t = upgraded()
    t.on_data(KEY, "read", message(b'{"type":"session.created"}') + message(b"\x00", opcode=2), 3)
    decoder = t._conns[KEY].decoder
    assert isinstance(decoder, WebSocketDecoder) and decoder.dropped_messages == 2
    assert t.counters()["ignored_bytes"] == len(b'{"type":"session.created"}') + 1
