"""Real clients, real eBPF, plain HTTP: local model servers read from the socket syscalls.

A plain replay server on 127.0.0.1:11434 (Ollama's default address, in the default set) answers
the `ollama` SDK and curl with the recorded Ollama exchanges, streamed NDJSON included; another on
a destination configured under capture.plain_http (tests/integration/conftest.py) answers the
openai SDK, as vLLM or LM Studio would. The session sensor also captures the accepting end
(capture.plain_http_server). Each exchange must say what its recording's `expect` block says.
"""
from __future__ import annotations

import ipaddress
import random
import socket
import subprocess
from typing import Any, Dict, List

import pytest

from tests.clients.client_common import OPENAI_TEST_KEY
from tests.integration.conftest import PLAIN_HTTP_PORT, PLAIN_HTTP_PREFIX
from tests.integration.test_record_providers import check_against_recording, exchange
from tests.support import clients
from tests.support.llm_fixtures import Fixture, load_fixtures
from tests.support.oisp_schema import assert_valid_event
from tests.support.paths import REPO_ROOT
from tests.support.replay_process import start_replay_server

pytestmark = pytest.mark.bpf

FIXTURES: Dict[str, Fixture] = load_fixtures()
OLLAMA = sorted(name for name, fx in FIXTURES.items() if fx.provider == "ollama")
OPENAI = ["openai-chat-001", "openai-chat-stream-002", "openai-chat-tools-002"]
OLLAMA_URL = "http://127.0.0.1:11434"


def free_address(prefix: str, port: int) -> str:
    """A random address of the loopback `prefix` on which `port` is free."""
    network = ipaddress.ip_network(prefix)
    for _ in range(100):
        address = str(network[random.randint(2, network.num_addresses - 2)])
        with socket.socket() as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
        return address
    raise RuntimeError("no free address in %s for port %d" % (prefix, port))


@pytest.fixture(scope="module")
def ollama_server(sensor, test_pki, tmp_path_factory):
    """The plain replay on Ollama's own address; a machine already running Ollama cannot host it."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 11434)) == 0:
            pytest.fail("127.0.0.1:11434 is taken (a real Ollama?): the replay needs Ollama's address")
    with start_replay_server(test_pki, tmp_path_factory.mktemp("plain-ollama"), host="127.0.0.1", port=11434,
                             plain=True) as server:
        yield server


@pytest.fixture(scope="module")
def configured_server(sensor, test_pki, tmp_path_factory):
    """A plain replay on the configured capture.plain_http destination (an OpenAI-compatible server)."""
    with start_replay_server(test_pki, tmp_path_factory.mktemp("plain-openai"), plain=True,
                             host=free_address(PLAIN_HTTP_PREFIX, PLAIN_HTTP_PORT), port=PLAIN_HTTP_PORT) as server:
        yield server


def run(argv: List[str]) -> clients.ClientResult:
    """A client run outside any namespace: plain HTTP needs no host names."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               text=True, cwd=str(REPO_ROOT))
    return clients.finish_client(process)


def plain_client(mode: str, fixture: str, url: str, *extra: str) -> clients.ClientResult:
    return run(clients.python_client("plain_http_client.py", mode, "--fixture", fixture, "--url", url, *extra))


def check_plaintext(events: List[Dict[str, Any]], origin: str, fx: Fixture) -> None:
    for event in events:
        assert_valid_event(event)
        assert event["source"]["capture_method"] == "ebpf_tracepoint", event["source"]
        if "content_source" in event.get("confidence", {}):
            assert event["confidence"]["content_source"] == "plaintext_capture"
    requests = [e for e in events if e["event_type"] == "ai.request"]
    assert requests and all(e["data"]["provider"]["endpoint"] == origin + fx.path for e in requests)


@pytest.mark.parametrize("name", OLLAMA)
def test_ollama_sdk_over_plain_http_is_recorded(name, sensor, ollama_server):
    fx = FIXTURES[name]
    result = plain_client("ollama", name, OLLAMA_URL)
    summary = result.check()
    request, response, tools = exchange(sensor, result.pid, fx)
    check_against_recording(fx, request, response, tools, result.pid, credential=False)
    check_plaintext(sensor.events_of(result.pid), OLLAMA_URL, fx)
    assert response["process"]["exe"].startswith("/usr/bin/python3")
    if fx.expect["streaming"]:
        chunks = [e for e in sensor.events_of(result.pid) if e["event_type"] == "ai.streaming_chunk"]
        assert len(chunks) == summary["chunks"]


@pytest.mark.parametrize("name", OLLAMA)
def test_curl_over_plain_http_is_recorded(name, sensor, ollama_server, test_pki, tmp_path):
    fx = FIXTURES[name]
    cmd = clients.curl_command(fx, test_pki.ca_file, tmp_path, url=OLLAMA_URL + fx.path)
    result = run(cmd.argv)
    assert result.returncode == 0, result.stderr
    request, response, tools = exchange(sensor, result.pid, fx)
    check_against_recording(fx, request, response, tools, result.pid, credential=False)
    check_plaintext(sensor.events_of(result.pid), OLLAMA_URL, fx)
    assert response["process"]["exe"] == "/usr/bin/curl"


@pytest.mark.parametrize("calls", ["send", "write", "writev", "sendmsg"])
def test_every_family_of_socket_calls_is_read(calls, sensor, ollama_server):
    """send/recv, write/read, writev/readv (several buffers, an empty one among them) and
    sendmsg/recvmsg carry the same exchange."""
    fx = FIXTURES["ollama-apigenerate-001"]
    result = plain_client("syscalls", fx.name, OLLAMA_URL, "--calls", calls)
    assert result.check()["status"] == 200
    request, response, tools = exchange(sensor, result.pid, fx)
    check_against_recording(fx, request, response, tools, result.pid, credential=False)


@pytest.mark.parametrize("name", OPENAI)
def test_openai_sdk_on_a_configured_destination_is_recorded(name, sensor, configured_server):
    """An OpenAI-compatible server (vLLM, LM Studio) on a capture.plain_http destination: known by
    the shape of its requests, every field of the recording as for OpenAI itself."""
    fx = FIXTURES[name]
    origin = "http://%s:%d" % (configured_server.host, configured_server.port)
    result = plain_client("openai", name, origin)
    result.check()
    request, response, tools = exchange(sensor, result.pid, fx)
    check_plaintext(sensor.events_of(result.pid), origin, fx)
    req, resp, expect = request["data"], response["data"], fx.expect
    assert request["confidence"]["ai_detection_method"] == "payload_inspection"
    assert req["model"]["id"] == expect["request_model"] and req["streaming"] is expect["streaming"]
    assert req["auth"]["type"] == "api_key" and OPENAI_TEST_KEY not in str([request, response])
    assert resp["model"]["id"] == expect["model"] and resp["status_code"] == fx.status
    assert resp.get("usage", {}).get("completion_tokens") == expect["output_tokens"]
    assert resp["provider_finish_reason"] == expect["finish_reason"]
    assert [c["name"] for c in resp.get("tool_calls", [])] == expect["tool_calls"]
    assert [t["data"]["tool"]["name"] for t in tools] == expect["tool_calls"]
    if expect["text_prefix"] is not None:
        assert resp["choices"][0]["message"]["content"][:40] == expect["text_prefix"]
    assert response["confidence"]["completeness"] == "full"


def test_the_accepting_end_is_recorded_too(sensor, ollama_server):
    """capture.plain_http_server: the replay server's own reads and writes, as a model server in
    a container's host sees them, make the same exchange under the server's pid."""
    fx = FIXTURES["ollama-apichat-002"]
    before = len([e for e in sensor.events_of(ollama_server.pid) if e["event_type"] == "ai.response"])
    plain_client("ollama", fx.name, OLLAMA_URL).check()
    events = sensor.wait_for(lambda evs: sum(e["event_type"] == "ai.response" for e in evs) > before,
                             pid=ollama_server.pid)
    response = [e for e in events if e["event_type"] == "ai.response"][-1]
    assert_valid_event(response)
    assert response["process"]["name"] == "oisp-replay"
    assert response["data"]["model"]["id"] == fx.expect["model"]
    assert response["data"]["usage"]["completion_tokens"] == fx.expect["output_tokens"]
    assert response["confidence"]["completeness"] == "full"


def test_a_server_outside_the_set_is_not_read(sensor, ollama_server, test_pki, tmp_path):
    fx = FIXTURES["ollama-apichat-002"]
    address = free_address(PLAIN_HTTP_PREFIX, PLAIN_HTTP_PORT + 1)
    with start_replay_server(test_pki, tmp_path / "outside", plain=True, host=address,
                             port=PLAIN_HTTP_PORT + 1) as outside:
        unseen = plain_client("ollama", fx.name, "http://%s:%d" % (outside.host, outside.port))
        unseen.check()
    seen = plain_client("ollama", fx.name, OLLAMA_URL)
    exchange(sensor, seen.check()["pid"], fx)
    # records leave the ring in order: the first client's would be there by now
    assert sensor.events_of(unseen.pid) == []
    assert sensor.events_of(outside.pid) == []


def test_garbage_on_a_tracked_socket_keeps_the_pipeline_running(sensor, ollama_server):
    """Bytes that are not HTTP on a tracked connection, then a real exchange on a second one."""
    fx = FIXTURES["ollama-apigenerate-001"]
    result = plain_client("garbage", fx.name, OLLAMA_URL)
    assert result.check()["status"] == 200
    request, response, tools = exchange(sensor, result.pid, fx)
    check_against_recording(fx, request, response, tools, result.pid, credential=False)
    assert sensor.proc.poll() is None


def test_a_connection_opened_before_the_sensor_started_is_recorded(ollama_server, tmp_path):
    """A client's keep-alive connection to Ollama that is open when a sensor starts: found in
    /proc at start-up, its next exchange is recorded."""
    from tests.integration.conftest import start_sensor

    fx = FIXTURES["ollama-apichat-002"]
    client = subprocess.Popen(clients.python_client("plain_http_client.py", "keepalive", "--fixture", fx.name,
                                                    "--url", OLLAMA_URL),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=str(REPO_ROOT))
    try:
        assert client.stdout is not None and client.stdin is not None
        line = client.stdout.readline()
        assert '"connected"' in line, line + client.stderr.read()
        own = start_sensor(tmp_path)
        try:
            client.stdin.write("go\n")
            client.stdin.flush()
            result = clients.finish_client(client)
            assert result.check()["same_connection"] is True
            request, response, tools = exchange(own, client.pid, fx)
            check_against_recording(fx, request, response, tools, client.pid, credential=False)
            check_plaintext(own.events_of(client.pid), OLLAMA_URL, fx)
        finally:
            assert own.stop() == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
