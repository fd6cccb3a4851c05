"""The pipeline pairs each ai.request with its own ai.response, whatever ends an exchange early.

Capture records are synthesised as the BPF side writes them (one DataChunk per TLS call, with its
per-connection call sequence), and fed to a real Pipeline. Each cause of a dropped exchange
(decoder failure, garbage, upgrade, process exit, idle release, close, gap) must give the request
its ai.request plus a partial ai.response naming the reason, and a later exchange on a connection
with the same (pid, SSL pointer) must pair with its own response only.
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

from oisp_daemon.capture import records as rec
from oisp_daemon.decode import http1
from oisp_daemon.events.context import HostContext, ProcessCache
from oisp_daemon.pipeline import Pipeline
from tests.support import synthetic_bodies as synth
from tests.support.oisp_schema import assert_valid_event

PID = 4242
SSL = 0x7F00DEAD0000
KEY = (PID, SSL)
SECOND = 10**9  # ns


def chat_request(mark: str, stream: bool = False, target: str = "/v1/chat/completions") -> bytes:
    body = json.dumps({"model": "gpt-4o-mini", "stream": stream,
                       "messages": [{"role": "user", "content": mark}]}).encode()
    return (b"POST %s HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-test-0123456789\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (target.encode(), len(body), body))


def chat_response(mark: str) -> bytes:
    body = synth.echo_chat_response(json.dumps({"model": "gpt-4o-mini",
                                                "messages": [{"role": "user", "content": mark}]}).encode())
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def stream_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def stream_events(mark: str) -> List[bytes]:
    events = synth.echo_chat_stream_events(json.dumps({"model": "gpt-4o-mini", "stream": True,
                                                       "messages": [{"role": "user", "content": mark}]}).encode())
    return [b"%x\r\n%s\r\n" % (len(e), e) for e in events]


class Capture:
    """Feeds a pipeline records as the kernel side writes them, one per TLS call."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.seq: Dict[Tuple[int, int], int] = {}
        self.ts = time.monotonic_ns()  # the kernel stamps records with CLOCK_MONOTONIC

    def tick(self, ns: int = 1000) -> int:
        self.ts += ns
        return self.ts

    def call(self, direction: str, data: bytes, key=KEY, lose: bool = False) -> None:
        """One SSL_write/SSL_read; `lose` drops its record (as a full ring does): a gap."""
        seq = self.seq.get(key, -1) + 1
        self.seq[key] = seq
        if lose:
            return
        self.pipeline.handle(rec.DataChunk(
            direction=direction, pid=key[0], tid=key[0], uid=1000, ssl=key[1], seq=seq, total=len(data),
            offset=0, ts_ns=self.tick(), comm="client", data=data, read_failed=False))

    def write(self, data: bytes, key=KEY, lose: bool = False) -> None:
        self.call("write", data, key, lose)

    def read(self, data: bytes, key=KEY, lose: bool = False) -> None:
        self.call("read", data, key, lose)

    def free(self, key=KEY) -> None:
        self.seq.pop(key, None)
        self.pipeline.handle(rec.ConnEnd(key[0], key[1], self.tick()))

    def exit(self, pid: int = PID) -> None:
        for key in [k for k in self.seq if k[0] == pid]:
            del self.seq[key]
        self.pipeline.handle(rec.Exit(pid, self.tick()))

    def exchange(self, mark: str, key=KEY) -> None:
        self.write(chat_request(mark), key)
        self.read(chat_response(mark), key)


@pytest.fixture
def events() -> List[Dict[str, Any]]:
    return []


@pytest.fixture
def ignored() -> List[Tuple[int, int]]:
    return []


@pytest.fixture
def pipeline(events, ignored, tmp_path) -> Pipeline:
    host = HostContext(hostname="test", os="linux", arch="x86_64", kernel_version="6.18")
    return Pipeline(emit=events.append, provider_hosts={}, max_message_bytes=1 << 20, idle_timeout_s=30,
                    ignore_connection=lambda pid, ssl: ignored.append((pid, ssl)), host=host,
                    processes=ProcessCache(proc_root=str(tmp_path)))


@pytest.fixture
def capture(pipeline) -> Capture:
    return Capture(pipeline)


def ai_pairs(events: List[Dict[str, Any]]) -> List[Tuple[str, Optional[str], Dict[str, Any]]]:
    """(request's mark, response's answer or None, response event) per request, in request order;
    every request has exactly one response and every response its request."""
    for event in events:
        assert_valid_event(event)
    requests = [e for e in events if e["event_type"] == "ai.request"]
    responses = {}
    for event in events:
        if event["event_type"] == "ai.response":
            assert event["data"]["request_id"] not in responses, "two responses for one request"
            responses[event["data"]["request_id"]] = event
    assert sorted(responses) == sorted(r["data"]["request_id"] for r in requests)
    out = []
    for request in requests:
        response = responses[request["data"]["request_id"]]
        assert response["related_events"][0]["event_id"] == request["event_id"]
        choices = response["data"].get("choices") or [{}]
        answer = choices[0].get("message", {}).get("content")
        out.append((request["data"]["messages"][0]["content"], answer, response))
    return out


def assert_no_response(response: Dict[str, Any], why: str) -> None:
    confidence = response["confidence"]
    assert confidence["completeness"] == "partial"
    assert confidence["limitations"] == ["no_response", why]
    assert confidence["missing"] == ["response"]
    assert response["data"]["success"] is False and "status_code" not in response["data"]
    assert response["data"]["error"]["type"] == "no_response"


def assert_own_pairs_after(events, marks: List[str]) -> None:
    """The last len(marks) pairs are these marks, each answered with its own echo."""
    tail = ai_pairs(events)[-len(marks):]
    assert [(m, a) for m, a, _ in tail] == [(m, synth.ECHO_PREFIX + m) for m in marks]
    assert all(r["confidence"]["completeness"] == "full" for _, _, r in tail)


# -- each cause of a dropped exchange ---------------------------------------------------------


def test_garbage_response_gives_a_partial_pair_and_stops_the_capture(capture, events, ignored):
    capture.write(chat_request("garbled"))
    capture.read(b"\x17\x03\x03 this is not HTTP at all\r\n\r\n")
    ((mark, answer, response),) = ai_pairs(events)
    assert (mark, answer) == ("garbled", None)
    assert_no_response(response, "not_http1")
    assert ignored == [KEY]
    capture.read(chat_response("garbled"))  # whatever comes later on it is not decoded
    capture.free()
    capture.exchange("after")
    assert_own_pairs_after(events, ["after"])
    assert len(ai_pairs(events)) == 2


def test_decoder_failure_gives_a_partial_pair(capture, events, ignored, monkeypatch):
    capture.write(chat_request("bug"))

    def broken(self, data, ts_ns):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(http1.Http1Parser, "feed", broken)
    capture.read(chat_response("bug"))
    monkeypatch.undo()
    ((_, answer, response),) = ai_pairs(events)
    assert answer is None
    assert_no_response(response, "decode_error")
    assert ignored == [KEY] and capture.pipeline.counters()["decode_failures"] == 1
    capture.free()
    capture.exchange("after-bug")
    assert_own_pairs_after(events, ["after-bug"])


def test_upgrade_marks_the_response_partial_and_stops_the_capture(capture, events, ignored):
    capture.write(chat_request("upgrade"))
    # (A WebSocket upgrade is handed to the WebSocket decoder instead: tests/unit/test_websocket.py.)
    capture.read(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
    capture.write(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00")  # another protocol: not decoded, not emitted
    ((_, answer, response),) = ai_pairs(events)
    assert response["data"]["status_code"] == 101
    assert response["confidence"]["completeness"] == "partial"
    assert "upgrade" in response["confidence"]["limitations"]
    assert ignored == [KEY]
    capture.free()
    capture.exchange("after-upgrade")
    assert_own_pairs_after(events, ["after-upgrade"])


def test_process_exit_before_the_answer(capture, events):
    capture.write(chat_request("killed"))
    capture.exit()
    ((_, answer, response),) = ai_pairs(events)
    assert answer is None
    assert_no_response(response, "process_exit")
    assert response["ts_mono"] == capture.ts  # when the process exited, not when we noticed
    # The pid and the SSL pointer are reused by a new process: it pairs with its own answers.
    capture.exchange("reborn")
    assert_own_pairs_after(events, ["reborn"])


def test_process_exit_mid_stream_keeps_what_was_streamed(capture, events):
    capture.write(chat_request("streaming words here", stream=True))
    capture.read(stream_head())
    chunks = stream_events("streaming words here")
    for chunk in chunks[:3]:
        capture.read(chunk)
    capture.exit()
    ((_, answer, response),) = ai_pairs(events)
    assert response["confidence"]["completeness"] == "partial"
    assert response["confidence"]["limitations"] == ["client_abort", "process_exit"]  # abandoned mid-stream
    assert response["data"]["status_code"] == 200 and response["data"]["streaming"] is True
    assert answer == "echo: streaming"  # the words that arrived before the exit
    capture.exchange("reborn")
    assert_own_pairs_after(events, ["reborn"])


def test_idle_release_then_a_late_answer_pairs_with_nothing(capture, events, pipeline):
    capture.write(chat_request("hung"))
    released_at = capture.tick(31 * SECOND)
    pipeline.tick(released_at)
    ((_, answer, response),) = ai_pairs(events)
    assert_no_response(response, "idle_timeout")
    assert response["ts_mono"] == released_at
    capture.read(chat_response("hung"))  # the late answer: no request of its own any more
    capture.exchange("next")
    assert_own_pairs_after(events, ["next"])
    assert len(ai_pairs(events)) == 2
    # released, the connection is new to the tracker: its late answer is skipped as if joined mid-way
    assert pipeline.counters()["http1_joined_midway"] == 1


def test_close_before_the_answer(capture, events):
    capture.write(chat_request("closed"))
    capture.free()
    ((_, answer, response),) = ai_pairs(events)
    assert_no_response(response, "connection_closed")
    capture.exchange("new-connection")  # a new SSL object at the same address
    assert_own_pairs_after(events, ["new-connection"])


def test_close_mid_body_keeps_what_arrived(capture, events):
    capture.write(chat_request("cut"))
    whole = chat_response("cut")
    capture.read(whole[: len(whole) - 10])
    capture.free()
    ((_, _, response),) = ai_pairs(events)
    assert response["confidence"]["completeness"] == "partial"
    assert "connection_closed" in response["confidence"]["limitations"]
    assert response["data"]["status_code"] == 200


def test_gap_losing_the_whole_answer(capture, events):
    capture.write(chat_request("lost"))
    capture.read(chat_response("lost"), lose=True)
    capture.write(chat_request("found"))
    capture.read(chat_response("found"))
    (lost, found) = ai_pairs(events)
    assert lost[1] is None
    assert_no_response(lost[2], "gap")
    assert found[:2] == ("found", synth.ECHO_PREFIX + "found")


def test_gap_losing_the_head_of_the_answer(capture, events):
    capture.write(chat_request("headless"))
    whole = chat_response("headless")
    capture.read(whole[:40], lose=True)
    capture.read(whole[40:])  # the body without its head: skipped, never someone else's answer
    capture.exchange("next")
    (headless, nxt) = ai_pairs(events)
    assert_no_response(headless[2], "gap")
    assert nxt[:2] == ("next", synth.ECHO_PREFIX + "next")


def test_gap_in_the_middle_of_the_answer(capture, events):
    capture.write(chat_request("holed", stream=True))
    capture.read(stream_head())
    chunks = stream_events("holed words")
    capture.read(chunks[0])
    capture.read(chunks[1], lose=True)
    capture.read(chunks[2])
    capture.exchange("next")
    (holed, nxt) = ai_pairs(events)
    assert holed[2]["confidence"]["completeness"] == "partial"
    assert "gap" in holed[2]["confidence"]["limitations"]
    assert nxt[:2] == ("next", synth.ECHO_PREFIX + "next")


# -- pairing ----------------------------------------------------------------------------------


def test_interleaved_connections_each_pair_their_own(capture, events):
    other = (PID, SSL + 0x1000)
    capture.write(chat_request("one"))
    capture.write(chat_request("two"), key=other)
    capture.read(chat_response("two"), key=other)
    capture.read(chat_response("one"))
    assert sorted((m, a) for m, a, _ in ai_pairs(events)) == [
        ("one", synth.ECHO_PREFIX + "one"), ("two", synth.ECHO_PREFIX + "two")]


def test_non_ai_call_between_ai_calls_gets_no_ai_response(capture, events):
    capture.write(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
    capture.read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    capture.exchange("chat")
    assert [(m, a) for m, a, _ in ai_pairs(events)] == [("chat", synth.ECHO_PREFIX + "chat")]


def test_non_ai_connection_is_ignored_without_events(capture, events, ignored):
    capture.write(b"GET /file HTTP/1.1\r\nHost: downloads.example.test\r\n\r\n")
    capture.read(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfile")
    assert events == [] and ignored == [KEY]


def test_ai_request_pipelined_behind_a_non_ai_one_is_not_left_without_a_response(capture, events, ignored):
    # The first request decides the connection (not AI: ignored, its exchanges ended at once), so
    # a request pipelined behind it in the same call must not produce an ai.request either.
    capture.write(b"GET /file HTTP/1.1\r\nHost: downloads.example.test\r\n\r\n" + chat_request("behind"))
    capture.read(chat_response("behind"))
    assert events == [] and ignored == [KEY]


def test_counters_name_every_pipeline_and_decoder_count(capture, pipeline):
    capture.write(chat_request("counted"))
    capture.exit()
    counters = pipeline.counters()
    assert counters["ai_requests"] == counters["ai_responses"] == counters["partial_responses"] == 1
    assert counters["unanswered_requests"] == 1 and counters["connections"] == 0
    assert set(counters) >= {"records", "bytes", "gaps", "events", "emit_errors", "pipeline_errors",
                             "orphan_responses", "decode_failures", "resyncs", "skipped_bytes",
                             "ignored_bytes", "expired_connections", "stopped_connections"}
