"""Real eBPF, a real WebSocket client: the openai SDK's Responses API WebSocket mode
(`client.responses.connect()`, websockets over Python's libssl) sends the recorded requests as
`response.create` messages on one connection, a replay (aiohttp) streams the recorded events
back as text frames, uncompressed and with permessage-deflate (with and without context
takeover), and the events out of
`oisp-sensor record` must say what the recordings' `expect` blocks say. The same over HTTP/2: an
h2 client opens the WebSocket with an extended CONNECT (RFC 8441) to an h2-only replay.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from tests.clients.client_common import OPENAI_TEST_KEY
from tests.support import clients
from tests.support.llm_fixtures import load_fixture
from tests.support.oisp_schema import assert_valid_event
from tests.support.ws_replay_server import start_ws_replay

pytestmark = pytest.mark.bpf

# Every streaming Responses API recording, all on one connection.
FIXTURES = ["openai-responses-stream-002", "openai-responses-stream-003", "openai-responses-stream-tools-001"]


# How the client sets the connection up: its flags, and what it offers the replay.
MODES = {"plain": ([], None), "deflate": (["--deflate"], "permessage-deflate; client_max_window_bits"),
         "deflate_no_takeover": (["--deflate", "--no-takeover"], "permessage-deflate; server_no_context_takeover; "
                                 "client_no_context_takeover; client_max_window_bits")}


@pytest.fixture(scope="module")
def ws_replay(test_pki, tmp_path_factory):
    """The replay, and a hosts namespace whose api.openai.com is it."""
    server = start_ws_replay(test_pki, tmp_path_factory.mktemp("ws-replay"))
    try:
        yield server, server.hosts_namespace(tmp_path_factory.mktemp("ws-hosts"))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def h2_replay(test_pki, tmp_path_factory):
    server = start_ws_replay(test_pki, tmp_path_factory.mktemp("ws-h2-replay"), h2=True)
    try:
        yield server, server.hosts_namespace(tmp_path_factory.mktemp("ws-h2-hosts"))
    finally:
        server.stop()


def check(fx, request: Dict[str, Any], response: Dict[str, Any], chunks: List[Dict[str, Any]], pid: int,
          status: int) -> None:
    expect = fx.expect
    for event in [request, response] + chunks:
        assert_valid_event(event)
        assert event["process"]["pid"] == pid
    req, resp = request["data"], response["data"]
    assert req["provider"]["name"] == resp["provider"]["name"] == "openai"
    assert req["api"] == resp["api"] == expect["api"]
    assert req["model"]["id"] == expect["request_model"]
    assert req["streaming"] is True and resp["streaming"] is True
    assert req["auth"]["type"] == "api_key" and req["auth"]["key_hash"].startswith("sha256:")
    assert resp["request_id"] == req["request_id"]
    assert response["related_events"] == [{"event_id": request["event_id"], "relationship": "parent"}]
    assert resp["status_code"] == status and resp["success"] is True
    assert resp["model"]["id"] == expect["model"]
    assert resp["usage"]["prompt_tokens"] == expect["input_tokens"]
    assert resp["usage"]["completion_tokens"] == expect["output_tokens"]
    assert resp["provider_finish_reason"] == expect["finish_reason"]
    assert [c["name"] for c in resp.get("tool_calls", [])] == expect["tool_calls"]
    if expect["text_prefix"] is not None:
        assert resp["choices"][0]["message"]["content"][:40] == expect["text_prefix"]
        streamed = "".join(c["data"].get("delta", {}).get("content") or "" for c in chunks)
        assert streamed.startswith(expect["text_prefix"])
    assert "error" not in resp
    assert response["confidence"]["completeness"] == "full", response["confidence"]
    assert request["ts_mono"] <= response["ts_mono"]
    assert 0 <= resp["time_to_first_token_ms"] <= resp["latency_ms"]
    assert chunks and all(c["ts_mono"] <= response["ts_mono"] for c in chunks)
    assert OPENAI_TEST_KEY not in json.dumps([request, response] + chunks)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_responses_api_over_websocket_is_recorded(mode, ws_replay, sensor, test_pki):
    server, hosts = ws_replay
    flags, offer = MODES[mode]
    before = len(server.requests())
    argv = clients.python_client("openai_websocket_client.py", "--ca", test_pki.ca_file,
                                 *[arg for name in FIXTURES for arg in ("--fixture", name)], *flags)
    result = clients.run_client(hosts, argv)
    summary = result.check()
    assert [a["fixture"] for a in summary["answers"]] == FIXTURES
    # What was negotiated: what the client offered, and the replay accepted it.
    (upgrade,) = [r for r in server.requests()[before:] if r["kind"] == "upgrade"]
    assert upgrade["offered"] == offer and upgrade["deflate"] is (offer is not None)
    check_recorded(sensor, result.pid, status=101)


def test_responses_api_over_http2_extended_connect_is_recorded(h2_replay, sensor, test_pki):
    server, hosts = h2_replay
    argv = clients.python_client("h2_websocket_client.py", "--ca", test_pki.ca_file,
                                 *[arg for name in FIXTURES for arg in ("--fixture", name)])
    result = clients.run_client(hosts, argv)
    assert [a["fixture"] for a in result.check()["answers"]] == FIXTURES
    assert [r for r in server.requests() if r["kind"] == "upgrade"] == [
        {"kind": "upgrade", "path": "/v1/responses", "h2": True, "accepted": True}]
    check_recorded(sensor, result.pid, status=200)


def check_recorded(sensor, pid: int, status: int) -> None:
    """The client's exchanges, one per fixture, in order, each as its recording says."""
    count = len(FIXTURES)
    events = sensor.wait_for_types(pid, ai_request=count, ai_response=count, agent_tool_call=1)
    requests = [e for e in events if e["event_type"] == "ai.request"]
    responses = [e for e in events if e["event_type"] == "ai.response"]
    assert len(requests) == len(responses) == count, [e["event_type"] for e in events]
    for name, request, response in zip(FIXTURES, requests, responses):
        chunks = [e for e in events if e["event_type"] == "ai.streaming_chunk"
                  and e["data"]["request_id"] == request["data"]["request_id"]]
        check(load_fixture(name), request, response, chunks, pid, status)
