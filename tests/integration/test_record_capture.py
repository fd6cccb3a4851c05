"""Capture properties under real eBPF: pairing on one event loop, byte-complete large bodies,
and silence about TLS traffic that is not AI."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest

from tests.support import clients
from tests.support.replay_process import NON_AI_HOST
from tests.support.oisp_schema import assert_valid_event

pytestmark = pytest.mark.bpf

# sha256 of deterministic_text(4 MiB, "big") and deterministic_text(1 MiB, "big-request"):
# the texts the @big-chat replay answers with and the big client sends, fixed by their seeds.
BIG_RESPONSE_SHA256 = "8fe8a643f84cb92b46fa67c80b537e0cee877a7071f611dbd2c3c0132e35042b"
BIG_REQUEST_SHA256 = "0e34e20f41e3daf032759c6bf478610fb977668f47ff427ab5d90392d62dab95"
MARK = re.compile(r"pair-[\w-]+?-\d{2}")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_twenty_concurrent_requests_on_one_event_loop_pair_correctly(sensor, module_hosts, test_pki):
    result = clients.run_client(module_hosts, clients.concurrent_client(test_pki.ca_file, count=20, run_id="conc"))
    summary = result.check()
    assert summary["threads"] == 1  # one thread, one event loop: no per-thread identity to lean on
    events = sensor.wait_for_types(result.pid, ai_request=20, ai_response=20)
    requests = {e["data"]["request_id"]: e for e in events if e["event_type"] == "ai.request"}
    responses = {e["data"]["request_id"]: e for e in events if e["event_type"] == "ai.response"}
    assert len(requests) == len(responses) == 20
    assert set(requests) == set(responses)
    marks = set()
    for request_id, request in requests.items():
        response = responses[request_id]
        assert_valid_event(request)
        assert_valid_event(response)
        sent = MARK.search(request["data"]["messages"][-1]["content"]).group(0)
        answered = MARK.search(response["data"]["choices"][0]["message"]["content"]).group(0)
        assert sent == answered, f"request {sent} paired with the response to {answered}"
        assert response["related_events"][0]["event_id"] == request["event_id"]
        marks.add(sent)
    assert marks == {f"pair-conc-{i:02d}" for i in range(20)}


def test_four_mib_response_and_one_mib_request_are_captured_byte_complete(sensor, module_hosts, test_pki):
    result = clients.run_client(module_hosts, clients.big_client(test_pki.ca_file))
    summary = result.check()
    events = sensor.wait_for_types(result.pid, ai_request=1, ai_response=1)
    request = next(e for e in events if e["event_type"] == "ai.request")
    response = next(e for e in events if e["event_type"] == "ai.response")
    sent = request["data"]["messages"][0]["content"]
    received = response["data"]["choices"][0]["message"]["content"]
    assert len(sent) == 1 << 20 and sha256(sent) == BIG_REQUEST_SHA256
    assert len(received) == 4 << 20 and sha256(received) == BIG_RESPONSE_SHA256
    assert summary["content_sha256"] == BIG_RESPONSE_SHA256  # what the client itself got
    for event in (request, response):
        assert event["confidence"]["completeness"] == "full"
        assert "redaction" not in event.get("attrs", {})
        assert_valid_event(event)


def test_plain_https_download_produces_no_ai_events(sensor, module_server, module_hosts, test_pki, tmp_path):
    url = f"https://{NON_AI_HOST}/big?bytes=2000000&seed=plain"
    result = clients.run_client(
        module_hosts, ["curl", "-sS", "--http1.1", "--cacert", str(test_pki.ca_file), "-o", str(tmp_path / "f"), url]
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "f").stat().st_size == 2000000
    # A later AI call from the same test proves the sensor had caught up when we look.
    marker = clients.run_client(module_hosts, clients.openai_client("openai-chat-001", test_pki.ca_file))
    marker.check()
    sensor.wait_for_types(marker.pid, ai_response=1)
    assert sensor.events_of(result.pid) == []


def test_non_ai_path_on_an_ai_host_produces_no_ai_events(sensor, module_hosts, test_pki, tmp_path):
    url = "https://api.openai.com/big?bytes=100000&seed=models"
    result = clients.run_client(
        module_hosts, ["curl", "-sS", "--http1.1", "--cacert", str(test_pki.ca_file), "-o", str(tmp_path / "f"), url]
    )
    assert result.returncode == 0, result.stderr
    marker = clients.run_client(module_hosts, clients.openai_client("openai-chat-002", test_pki.ca_file))
    marker.check()
    sensor.wait_for_types(marker.pid, ai_response=1)
    assert sensor.events_of(result.pid) == []


def test_python_ssl_client_of_a_non_http_protocol_is_ignored(sensor, module_server, module_hosts, test_pki):
    # Bytes that are not HTTP/1.x (here: an HTTP/2 preface) must not confuse the decoder or emit.
    code = (
        "import socket, ssl, sys\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
        "s = ctx.wrap_socket(socket.create_connection((sys.argv[2], 443)), server_hostname='api.openai.com')\n"
        "s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n' + b'\\x00' * 64)\n"
        "s.close()\n"
    )
    result = clients.run_client(module_hosts, [sys.executable, "-c", code, str(test_pki.ca_file), module_server.host])
    assert result.returncode == 0, result.stderr
    marker = clients.run_client(module_hosts, clients.openai_client("openai-embeddings-001", test_pki.ca_file))
    marker.check()
    sensor.wait_for_types(marker.pid, ai_response=1)
    assert sensor.events_of(result.pid) == []


def test_every_event_written_so_far_is_valid_oisp(sensor):
    events = sensor.events()
    assert events, "the session's sensor has written nothing"
    for event in events:
        assert_valid_event(event)
    assert len({e["event_id"] for e in events}) == len(events)


def test_record_without_root_says_what_to_do(tmp_path):
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "oisp_daemon.cli",
         "record", "--output", str(tmp_path / "x.jsonl")],
        capture_output=True, text=True, timeout=60, cwd=str(clients.REPO_ROOT),
    )
    assert proc.returncode != 0
    assert "needs root" in proc.stderr and "sudo" in proc.stderr


def test_record_with_a_bad_config_names_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("redaction:\n  mode: loose\n")
    proc = subprocess.run(
        [sys.executable, "-m", "oisp_daemon.cli", "record", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, cwd=str(clients.REPO_ROOT),
    )
    assert proc.returncode == 1
    assert f"{cfg}: redaction.mode: 'loose' is not one of" in proc.stderr


def test_sigterm_stops_record_cleanly_with_exchanges_written(tmp_path, module_hosts, test_pki):
    from tests.integration.conftest import start_sensor

    own = start_sensor(tmp_path)
    try:
        result = clients.run_client(module_hosts, clients.openai_client("openai-chat-stream-002", test_pki.ca_file))
        result.check()
        own.wait_for_types(result.pid, ai_request=1, ai_response=1)
    finally:
        own.proc.terminate()
        code = own.stop()
    assert code == 0
    assert any("stopped;" in line for line in own.log)
    written = [json.loads(line) for line in own.output.read_text().splitlines()]
    kinds = [e["event_type"] for e in written if e["process"]["pid"] == result.pid]
    # The streamed answer's chunks come between its request and its response.
    assert kinds[0] == "ai.request" and kinds[-1] == "ai.response" and set(kinds[1:-1]) == {"ai.streaming_chunk"}


def test_message_over_the_memory_bound_becomes_a_partial_event(tmp_path, module_hosts, test_pki):
    from tests.integration.conftest import start_sensor

    own = start_sensor(tmp_path, config="capture:\n  max_message_bytes: 65536\n")
    try:
        result = clients.run_client(module_hosts, clients.big_client(test_pki.ca_file))
        result.check()
        events = own.wait_for_types(result.pid, ai_request=1, ai_response=1)
    finally:
        assert own.stop() == 0
    for event in events:
        assert_valid_event(event)
        assert event["confidence"]["completeness"] == "partial"
        assert "body_limit" in event["confidence"]["limitations"]


def test_ready_is_sent_to_notify_socket_once_probes_are_attached(tmp_path):
    import socket

    from tests.integration.conftest import start_sensor

    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(30)
        own = start_sensor(tmp_path, env={"NOTIFY_SOCKET": path})
        try:
            assert notify.recv(4096) == b"READY=1"
            assert any("recording TLS traffic" in line for line in own.log)  # READY after attach
        finally:
            assert own.stop() == 0
        assert notify.recv(4096) == b"STOPPING=1"
