"""HTTP/2 through a real Pipeline: two streamed chat calls multiplexed on one connection become two
ai.request/ai.response pairs, each with its own chunks and its own time to first token."""
from __future__ import annotations

import json
from typing import Any, Dict, List

from h2.config import H2Configuration
from h2.connection import H2Connection

from oisp_daemon.pipeline import Pipeline
from tests.support import synthetic_bodies as synth
from tests.support.oisp_schema import assert_valid_event
from tests.unit.test_pipeline_pairing import Capture
from tests.unit.test_pipeline_streaming import make_pipeline, of_type


def chat(mark: str) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": mark}]}).encode()


class H2Capture:
    """A real h2 client and server whose bytes go to the pipeline as the client's TLS calls."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.capture = Capture(pipeline)
        self.client = H2Connection(H2Configuration(client_side=True))
        self.server = H2Connection(H2Configuration(client_side=False))
        self.client.initiate_connection()
        self.server.initiate_connection()
        self.flush()

    def flush(self) -> None:
        while True:
            sent = self.client.data_to_send()
            if sent:
                self.capture.write(sent)
                self.server.receive_data(sent)
            got = self.server.data_to_send()
            if got:
                self.capture.read(got)
                self.client.receive_data(got)
            if not sent and not got:
                return


def test_two_multiplexed_streams_are_two_calls_with_their_own_ttft(tmp_path):
    events: List[Dict[str, Any]] = []
    wire = H2Capture(make_pipeline(events, tmp_path))
    streams = {}
    for mark in ("first question", "second question"):
        sid = wire.client.get_next_available_stream_id()
        body = chat(mark)
        wire.client.send_headers(sid, [(":method", "POST"), (":path", "/v1/chat/completions"), (":scheme", "https"),
                                       (":authority", "api.openai.com"), ("authorization", "Bearer sk-test-0123456789"),
                                       ("content-type", "application/json")])
        wire.client.send_data(sid, body, end_stream=True)
        wire.flush()
        streams[sid] = synth.echo_chat_stream_events(body)
    for sid in streams:
        wire.server.send_headers(sid, [(":status", "200"), ("content-type", "text/event-stream")])
    wire.flush()
    later = sorted(streams, reverse=True)  # the second stream answers first
    for index in range(max(len(e) for e in streams.values())):
        for sid in later:
            if index < len(streams[sid]):
                wire.capture.tick(10 * 10**6)  # 10 ms between the server's events
                wire.server.send_data(sid, streams[sid][index], end_stream=index == len(streams[sid]) - 1)
                wire.flush()
    for event in events:
        assert_valid_event(event)
    requests, responses = of_type(events, "ai.request"), of_type(events, "ai.response")
    assert len(requests) == 2 and len(responses) == 2
    by_request = {r["data"]["request_id"]: r for r in responses}
    chunks = of_type(events, "ai.streaming_chunk")
    for request in requests:
        response = by_request[request["data"]["request_id"]]
        assert response["confidence"]["completeness"] == "full"
        own = [c for c in chunks if c["data"]["request_id"] == request["data"]["request_id"]]
        assert own and [c["data"]["chunk_index"] for c in own] == list(range(len(own)))
    # The second request was sent later but answered first: its TTFT is the shorter one.
    first, second = (by_request[r["data"]["request_id"]] for r in requests)
    assert 0 < second["data"]["time_to_first_token_ms"] < first["data"]["time_to_first_token_ms"]
    assert [r["data"]["choices"][0]["message"]["content"] for r in (first, second)] == [
        "".join(c["data"]["delta"].get("content", "") for c in chunks if c["data"]["request_id"] == r["data"]["request_id"])
        for r in requests]
