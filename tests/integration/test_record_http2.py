"""Real clients over HTTP/2, real eBPF: a replay that offers h2 and http/1.1 by ALPN (as the
providers' front ends do), and the events must say what the recordings say.

- every OpenAI and Anthropic fixture through curl (HTTP/2 by default once h2 is offered) and
  through the SDKs with ``http2=True``, streaming included, each matching its `expect` block;
- two streamed calls multiplexed on one connection, decoded separately, each with its own time to
  first token;
- a long keep-alive connection whose HPACK dynamic tables evict entries;
- h2c (prior knowledge) on a plain-HTTP destination, read from the socket syscalls.
"""
from __future__ import annotations

import json
import subprocess
from typing import Dict

import pytest

from tests.integration.conftest import PLAIN_HTTP_PORT, PLAIN_HTTP_PREFIX
from tests.integration.test_record_providers import check_against_recording, exchange
from tests.support import clients
from tests.support.llm_fixtures import Fixture, load_fixtures

pytestmark = pytest.mark.bpf

FIXTURES: Dict[str, Fixture] = {name: fx for name, fx in load_fixtures().items() if fx.provider in ("openai", "anthropic")}
KEEPALIVE_CALLS = 40
PLAIN_MODEL = load_fixtures()["openai-chat-001"].expect["model"]  # what the keep-alive calls get


def alpn_of(server, fixture: str, before: int) -> str:
    """The ALPN the client's request came in with (the server logs every request)."""
    (record,) = [r for r in server.requests()[before:] if r["fixture"] == fixture]
    return record["alpn"]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_curl_over_http2_is_recorded(name, sensor, h2_server, h2_hosts, test_pki, tmp_path):
    fx = FIXTURES[name]
    cmd = clients.curl_command(fx, test_pki.ca_file, tmp_path)
    argv = [arg for arg in cmd.argv if arg != "--http1.1"]  # curl's default: h2 when offered
    before = len(h2_server.requests())
    result = clients.run_client(h2_hosts, argv)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["response_code"] == fx.status and report["http_version"] == "2"
    assert alpn_of(h2_server, fx.name, before) == "h2"
    request, response, tools = exchange(sensor, result.pid, fx)
    credential = any(v == "REDACTED" for k, v in fx.request_headers.items()
                     if k.lower() in ("authorization", "x-api-key", "api-key", "x-goog-api-key"))
    check_against_recording(fx, request, response, tools, result.pid, credential)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_sdk_over_http2_is_recorded(name, sensor, h2_server, h2_hosts, test_pki):
    fx = FIXTURES[name]
    build = clients.anthropic_client if fx.provider == "anthropic" else clients.openai_client
    before = len(h2_server.requests())
    result = clients.run_client(h2_hosts, build(name, test_pki.ca_file, http2=True))
    result.check()
    assert alpn_of(h2_server, fx.name, before) == "h2"
    request, response, tools = exchange(sensor, result.pid, fx)
    check_against_recording(fx, request, response, tools, result.pid, credential=True, abort_on_stream_error=True)


def test_two_multiplexed_streams_are_decoded_separately(sensor, h2_server, h2_hosts, test_pki):
    before = len(h2_server.requests())
    result = clients.run_client(h2_hosts, clients.python_client("h2_client.py", "--ca", test_pki.ca_file, "--mode", "multiplex"))
    calls = result.check()["calls"]
    assert [c["http_version"] for c in calls] == ["HTTP/2", "HTTP/2"] and [c["status"] for c in calls] == [200, 200]
    logged = h2_server.requests()[before:]
    assert len({r["conn"] for r in logged}) == 1 and {r["alpn"] for r in logged} == {"h2"}
    events = sensor.wait_for_types(result.pid, ai_request=2, ai_response=2)
    requests = [e for e in events if e["event_type"] == "ai.request"]
    responses = {e["data"]["request_id"]: e for e in events if e["event_type"] == "ai.response"}
    chunks = [e for e in events if e["event_type"] == "ai.streaming_chunk"]
    assert len(responses) == 2
    ttft = []
    for request in requests:
        response = responses[request["data"]["request_id"]]
        assert response["confidence"]["completeness"] == "full", response["confidence"]
        own = [c for c in chunks if c["data"]["request_id"] == request["data"]["request_id"]]
        assert own and [c["data"]["chunk_index"] for c in own] == list(range(len(own)))
        data = response["data"]
        assert 0 <= data["time_to_first_token_ms"] <= data["latency_ms"]
        ttft.append(data["time_to_first_token_ms"])
    # One call's answer was held back 400 ms by the server, the other's not: on one connection,
    # each stream has its own time to first token.
    assert min(ttft) < 400 <= max(ttft), ttft


def test_a_long_keepalive_connection_evicts_hpack_entries(sensor, h2_server, h2_hosts, test_pki):
    before = len(h2_server.requests())
    argv = clients.python_client("h2_client.py", "--ca", test_pki.ca_file, "--mode", "keepalive",
                                 "--count", KEEPALIVE_CALLS)
    result = clients.run_client(h2_hosts, argv)
    calls = result.check()["calls"]
    assert {c["http_version"] for c in calls} == {"HTTP/2"} and {c["status"] for c in calls} == {200}
    logged = h2_server.requests()[before:]
    assert len(logged) == KEEPALIVE_CALLS and len({r["conn"] for r in logged}) == 1
    # Each call adds a distinct ~240-byte X-Request-Tag entry: 40 of them overflow a 4 KiB table.
    assert sum(len(dict(r["headers"]).get("x-request-tag", "")) + 45 for r in logged) > 2 * 4096
    events = sensor.wait_for_types(result.pid, ai_request=KEEPALIVE_CALLS, ai_response=KEEPALIVE_CALLS)
    responses = [e for e in events if e["event_type"] == "ai.response"]
    assert all(r["confidence"]["completeness"] == "full" for r in responses), [r["confidence"] for r in responses]
    assert {r["data"]["model"]["id"] for r in responses} == {PLAIN_MODEL}


@pytest.fixture(scope="module")
def h2c_server(sensor, test_pki, tmp_path_factory):
    """h2c (HTTP/2 over plain TCP, prior knowledge) on a capture.plain_http destination."""
    from tests.integration.test_record_plain_http import free_address
    from tests.support.replay_process import start_replay_server

    with start_replay_server(test_pki, tmp_path_factory.mktemp("h2c-replay"), plain=True,
                             host=free_address(PLAIN_HTTP_PREFIX, PLAIN_HTTP_PORT), port=PLAIN_HTTP_PORT,
                             module="tests.support.h2_replay_server") as server:
        yield server


@pytest.mark.parametrize("name", ["openai-chat-001", "openai-chat-stream-002"])
def test_curl_over_h2c_is_recorded(name, sensor, h2c_server, test_pki, tmp_path):
    """The same decoder reads HTTP/2 from the socket syscalls: an OpenAI-compatible server on a
    configured destination spoken to over h2c, known by the shape of its requests."""
    fx = FIXTURES[name]
    origin = "http://%s:%d" % (h2c_server.host, h2c_server.port)
    cmd = clients.curl_command(fx, test_pki.ca_file, tmp_path, url=origin + fx.path)
    argv = [arg for arg in cmd.argv if arg != "--http1.1"] + ["--http2-prior-knowledge"]
    before = len(h2c_server.requests())
    result = clients.finish_client(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                    stdin=subprocess.DEVNULL, text=True))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["http_version"] == "2"
    assert [r["fixture"] for r in h2c_server.requests()[before:]] == [name]
    request, response, tools = exchange(sensor, result.pid, fx)
    req, resp, expect = request["data"], response["data"], fx.expect
    assert req["model"]["id"] == expect["request_model"] and req["streaming"] is expect["streaming"]
    assert resp["model"]["id"] == expect["model"] and resp["status_code"] == fx.status
    assert resp.get("usage", {}).get("completion_tokens") == expect["output_tokens"]
    if expect["text_prefix"] is not None:
        assert resp["choices"][0]["message"]["content"][:40] == expect["text_prefix"]
    assert response["confidence"]["completeness"] == "full", response["confidence"]
