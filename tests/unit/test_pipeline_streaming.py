"""Streams decoded as they arrive: `ai.streaming_chunk` events out of a real Pipeline.

Capture records are synthesised one per TLS call (as in test_pipeline_pairing.py) and fed to a
real Pipeline; the chunk events must come out while the body arrives (before the ai.response),
in order, indexed from 0, each stamped with the kernel time of the read that completed its event.
The decode layer hands out only the new bytes of each read, and nothing for exchanges nobody
marked as streaming.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from oisp_daemon.config import load as config_load
from oisp_daemon.config.load import ConfigError
from oisp_daemon.decode.connection import ConnectionTracker
from oisp_daemon.decode.protocol import ResponseDone, ResponseProgress
from oisp_daemon.events.context import HostContext, ProcessCache
from oisp_daemon.events.streaming import ChunkTimings
from oisp_daemon.pipeline import Pipeline
from oisp_daemon.providers.registry import detect_provider
from oisp_daemon.redact import Redactor
from tests.support import synthetic_bodies as synth
from tests.support.fixtures import fixture_host, fixture_paths, fixture_request, fixture_response, load_fixture
from tests.support.oisp_schema import assert_valid_event
from tests.unit.test_pipeline_pairing import KEY, Capture, chat_request, stream_events, stream_head

STREAMS = [p for p in fixture_paths("*.json") if load_fixture(str(p))["expect"].get("streaming")]
MS = 10**6  # ns
MARK = "tell me a streamed story"
SECRET = "sk-proj-" + "Xq7Lm2Pz9Rt4Vb8Nc1Kd6Hf3Jg5Ws0Ea" * 3  # assembled: no scanner flags this file


def make_pipeline(events: List[Dict[str, Any]], tmp_path, streaming_chunks: bool = True) -> Pipeline:
    host = HostContext(hostname="test", os="linux", arch="x86_64", kernel_version="6.18")
    return Pipeline(emit=events.append, provider_hosts={}, max_message_bytes=1 << 20, idle_timeout_s=30,
                    ignore_connection=lambda pid, ssl: None, host=host,
                    processes=ProcessCache(proc_root=str(tmp_path)), streaming_chunks=streaming_chunks)


@pytest.fixture
def events() -> List[Dict[str, Any]]:
    return []


@pytest.fixture
def capture(events, tmp_path) -> Capture:
    return Capture(make_pipeline(events, tmp_path))


def of_type(events: List[Dict[str, Any]], event_type: str) -> List[Dict[str, Any]]:
    return [e for e in events if e["event_type"] == event_type]


def start_stream(capture: Capture, mark: str = MARK) -> List[bytes]:
    """The request and the response head; returns the chunked SSE events still to be read."""
    capture.write(chat_request(mark, stream=True))
    capture.read(stream_head())
    return stream_events(mark)


def test_chunks_arrive_before_the_response_in_order_at_their_reads_time(capture, events):
    chunks = start_stream(capture)
    read_ts = []
    for chunk in chunks:
        before = len(of_type(events, "ai.streaming_chunk"))
        capture.read(chunk)
        read_ts.append(capture.ts)
        assert not of_type(events, "ai.response"), "the response is not over yet"
        if b"[DONE]" not in chunk:
            assert len(of_type(events, "ai.streaming_chunk")) == before + 1, "each event is emitted on its read"
    capture.read(b"0\r\n\r\n")
    for event in events:
        assert_valid_event(event)
    (request,) = of_type(events, "ai.request")
    (response,) = of_type(events, "ai.response")
    streamed = of_type(events, "ai.streaming_chunk")
    assert events.index(response) > max(events.index(c) for c in streamed)
    assert [c["data"]["chunk_index"] for c in streamed] == list(range(len(streamed)))
    assert [c["ts_mono"] for c in streamed] == read_ts[: len(streamed)]  # the [DONE] read has none
    assert all(c["data"]["request_id"] == request["data"]["request_id"] for c in streamed)
    assert all(c["related_events"] == [{"event_id": request["event_id"], "relationship": "parent"}] for c in streamed)
    assert all(c["process"] == request["process"] and c["host"] == request["host"] for c in streamed)
    assert streamed[0]["data"]["delta"] == {"role": "assistant"}
    text = "".join(c["data"]["delta"].get("content", "") for c in streamed)
    assert text == synth.ECHO_PREFIX + MARK == response["data"]["choices"][0]["message"]["content"]
    assert streamed[-1]["data"]["finish_reason"] == "stop"
    assert response["attrs"]["stream_chunks"] == len(streamed)


def test_an_event_split_over_reads_gets_the_time_of_the_read_that_completed_it(capture, events):
    first, second = start_stream(capture)[:2]
    capture.read(first)
    capture.read(second[:20])
    assert len(of_type(events, "ai.streaming_chunk")) == 1  # half an event is no chunk yet
    capture.read(second[20:])
    completed_at = capture.ts
    assert of_type(events, "ai.streaming_chunk")[1]["ts_mono"] == completed_at


def test_events_of_one_read_share_its_time_and_the_final_read_is_decoded_live(capture, events):
    chunks = start_stream(capture)
    capture.read(b"".join(chunks[:3]))
    together = capture.ts
    capture.read(b"".join(chunks[3:]) + b"0\r\n\r\n")  # the read that also completes the response
    last = capture.ts
    streamed = of_type(events, "ai.streaming_chunk")
    assert [c["ts_mono"] for c in streamed[:3]] == [together] * 3
    assert all(c["ts_mono"] == last for c in streamed[3:]) and len(streamed) == len(chunks) - 1
    assert events[-1]["event_type"] == "ai.response"


def test_inter_chunk_latency_p50_and_max_come_from_the_reads_kernel_times(capture, events):
    chunks = start_stream(capture, "one two three four")  # role, echo:, one, two, three, four, stop
    gaps_ms = [5, 1, 3, 2, 8, 4]
    capture.read(chunks[0])
    for chunk, gap in zip(chunks[1:], gaps_ms):
        capture.tick(gap * MS - 1000)  # each read adds 1000 ns of its own
        capture.read(chunk)
    capture.read(b"".join(chunks[len(gaps_ms) + 1:]) + b"0\r\n\r\n")
    (response,) = of_type(events, "ai.response")
    assert response["attrs"]["inter_chunk_latency_max_ms"] == 8.0
    assert response["attrs"]["inter_chunk_latency_p50_ms"] == 3.5  # median of 1 2 3 4 5 8
    assert response["attrs"]["stream_chunks"] == 7
    assert response["data"]["time_to_first_token_ms"] == 5  # "echo:" came with the second read


def test_off_switch_emits_no_chunks_but_keeps_ttft_and_timing(events, tmp_path):
    capture = Capture(make_pipeline(events, tmp_path, streaming_chunks=False))
    chunks = start_stream(capture)
    for chunk in chunks:
        capture.tick(2 * MS)
        capture.read(chunk)
    capture.read(b"0\r\n\r\n")
    assert [e["event_type"] for e in events] == ["ai.request", "ai.response"]
    response = events[1]
    assert response["data"]["time_to_first_token_ms"] == 4
    assert response["attrs"]["inter_chunk_latency_p50_ms"] == 2.001
    assert response["confidence"]["completeness"] == "full"


@pytest.mark.parametrize("end", ["close", "exit"])
def test_client_abandoning_a_stream_is_client_abort(capture, events, end):
    chunks = start_stream(capture)
    for chunk in chunks[:3]:
        capture.read(chunk)
    capture.free() if end == "close" else capture.exit()
    (response,) = of_type(events, "ai.response")
    assert_valid_event(response)
    cause = "connection_closed" if end == "close" else "process_exit"
    assert response["confidence"]["completeness"] == "partial"
    assert response["confidence"]["limitations"] == ["client_abort", cause]
    assert response["data"]["choices"][0]["message"]["content"] == "echo: tell"
    assert len(of_type(events, "ai.streaming_chunk")) == 3


def test_a_stream_closed_after_its_end_marker_is_no_abort(capture, events):
    for chunk in start_stream(capture):
        capture.read(chunk)
    capture.free()  # as the OpenAI SDK does: right after [DONE], before the chunked terminator
    (response,) = of_type(events, "ai.response")
    assert response["confidence"]["completeness"] == "full"
    assert "limitations" not in response["confidence"]


def test_a_non_stream_closed_mid_body_is_no_client_abort(capture, events):
    capture.write(chat_request("not streamed"))
    body = synth.echo_chat_response(json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "not streamed"}]}).encode())
    capture.read(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body[:-5]))
    capture.free()
    (response,) = of_type(events, "ai.response")
    assert response["confidence"]["limitations"][0] == "connection_closed"
    assert "client_abort" not in response["confidence"]["limitations"]
    assert not of_type(events, "ai.streaming_chunk")


@pytest.mark.parametrize("mode", ["safe", "minimal"])
def test_chunk_content_is_redacted_like_the_response_content(capture, events, mode):
    for chunk in start_stream(capture, "my key is %s ok" % SECRET):
        capture.read(chunk)
    capture.read(b"0\r\n\r\n")
    redactor = Redactor(mode)
    out = [redactor.redact_event(e) for e in events]
    for event in out:
        assert_valid_event(event)
    text = json.dumps(out)
    assert SECRET not in text and SECRET[:20] not in text
    (secret_chunk,) = [e for e, raw in zip(out, events) if SECRET in json.dumps(raw.get("data", {}).get("delta"))]
    redacted = secret_chunk["data"]["delta"]["content"]
    response_content = of_type(out, "ai.response")[0]["data"]["choices"][0]["message"]["content"]
    if mode == "safe":
        assert redacted == " [REDACTED:openai_key]" and redacted.strip() in response_content
    else:  # minimal: no content at all, only its length and hash (delta.content stays a string)
        assert response_content["$redacted"]["redaction_profile"] == "minimal"
        words = [e["data"]["delta"]["content"] for e in of_type(out, "ai.streaming_chunk") if e["data"]["delta"].get("content")]
        assert words and all(w.startswith("[REDACTED:policy original_length=") for w in words)


def test_decoder_hands_out_only_new_bytes_and_nothing_for_non_streaming_exchanges():
    tracker = ConnectionTracker(max_body_bytes=1 << 20, idle_timeout_s=30)
    steps = tracker.on_data(KEY, "write", chat_request(MARK, stream=True), 1)
    (exchange,) = [s.exchange for s in steps]
    chunks = stream_events(MARK)
    assert tracker.on_data(KEY, "read", stream_head() + chunks[0], 2) == []  # not marked streaming
    exchange.streaming = True
    progress: List[ResponseProgress] = []
    for ts, chunk in enumerate(chunks[1:] + [b"0\r\n\r\n"], start=3):
        for step in tracker.on_data(KEY, "read", chunk, ts):
            assert isinstance(step, (ResponseProgress, ResponseDone))
            if isinstance(step, ResponseProgress):
                progress.append(step)
    body = exchange.response.body
    assert progress[0].offset == 0 and progress[0].marks[0] == (0, 2)  # the first read's bytes first
    assert b"".join(p.data for p in progress) == body  # each byte handed out once
    assert all(p.offset == q.offset + len(q.data) for q, p in zip(progress, progress[1:]))
    assert [p.marks[-1][1] for p in progress] == list(range(3, 2 + len(chunks)))  # one per read


def test_chunk_timings_memory_is_bounded():
    timings = ChunkTimings(max_samples=100)
    for i in range(10_000):
        timings.add(i * MS + (50 * MS if i == 5000 else 0))
    assert len(timings._gaps) == 100 and timings.count == 10_000
    attrs = timings.attrs()
    assert attrs["inter_chunk_latency_max_ms"] == 51.0 and attrs["inter_chunk_latency_p50_ms"] == 1.0


@pytest.mark.parametrize("text,expected", [("", True), ("capture:\n  streaming_chunks: off\n", False),
                                           ("capture:\n  streaming_chunks: on\n", True)])
def test_capture_streaming_chunks_config_is_on_by_default_and_takes_on_off(tmp_path, text, expected):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert config_load.load([str(path)], environ={})["capture"]["streaming_chunks"] is expected


def test_capture_streaming_chunks_config_refuses_other_values(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("capture:\n  streaming_chunks: sometimes\n")
    with pytest.raises(ConfigError, match="streaming_chunks"):
        config_load.load([str(path)], environ={})


def _wire(method_line: str, headers, body: bytes, chunked: bool) -> bytes:
    skip = {"content-length", "transfer-encoding", "content-encoding", "connection"}
    lines = [method_line] + ["%s: %s" % (k, v) for k, v in headers if k.lower() not in skip]
    lines.append("Transfer-Encoding: chunked" if chunked else "Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if chunked else body)


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_every_recorded_stream_is_emitted_live_and_adds_up_to_its_response(path, tmp_path):
    fx = load_fixture(str(path))
    req, resp = fixture_request(fx), fixture_response(fx)
    events: List[Dict[str, Any]] = []
    pipeline = make_pipeline(events, tmp_path)
    if detect_provider(fixture_host(fx), None) is None:  # openrouter, cerebras: not in the bundle
        pipeline.provider_hosts = {fixture_host(fx): fx["provider"]}
    capture = Capture(pipeline)
    headers = list(req.headers)
    if req.header("host") is None:  # some cassettes kept no Host header
        headers.append(("Host", fixture_host(fx)))
    capture.write(_wire("%s %s HTTP/1.1" % (req.method, req.target), headers, req.body, chunked=False))
    capture.read(_wire("HTTP/1.1 %d OK" % resp.status, resp.headers, b"", chunked=True))
    body = resp.body
    cuts = list(range(0, len(body), 97)) + [len(body)]  # pieces that split events anywhere
    for start, end in zip(cuts, cuts[1:]):
        capture.read(b"%x\r\n%s\r\n" % (end - start, body[start:end]))
    capture.read(b"0\r\n\r\n")
    for event in events:
        assert_valid_event(event)
    kinds = [e["event_type"] for e in events]
    assert kinds[0] == "ai.request" and "ai.response" in kinds
    streamed = of_type(events, "ai.streaming_chunk")
    assert streamed and kinds.index("ai.response") > kinds.index("ai.streaming_chunk")
    assert [c["data"]["chunk_index"] for c in streamed] == list(range(len(streamed)))
    response = of_type(events, "ai.response")[0]
    text = "".join(c["data"]["delta"].get("content", "") for c in streamed if not c.get("attrs", {}).get("choice_index"))
    choices = response["data"].get("choices") or [{}]
    assert text == (choices[0].get("message", {}).get("content") or "")
    assert response["attrs"]["stream_chunks"] == len(streamed)
