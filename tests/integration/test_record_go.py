"""A Go net/http client, built here with Debian's golang-go, recorded through crypto/tls probes.

Built twice, with symbols and stripped (`-ldflags=-s -w`): both must give the ai.request /
ai.response pair of a recorded OpenAI exchange (model, usage, text), found through .gopclntab,
and `oisp-sensor tls-scan` must say so. The stripped build is also recorded with no
configuration (process discovery), with a 1 MiB answer, and over HTTP/2 (net/http's bundled
client, against the replay that offers h2 by ALPN).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import pytest

from tests.clients.client_common import OPENAI_TEST_KEY
from tests.integration.test_record_http2 import alpn_of
from tests.support import clients, go_build
from tests.support.llm_fixtures import load_fixture
from tests.support.oisp_schema import assert_valid_event

pytestmark = pytest.mark.bpf

VARIANTS = ("plain", "stripped")
FIXTURE = "openai-chat-001"


@pytest.fixture(scope="module")
def go_clients(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    from tests.integration.conftest import cannot_run

    try:
        return {v: go_build.build(v, tmp_path_factory.mktemp("go-client")) for v in VARIANTS}
    except go_build.GoMissing as exc:
        cannot_run(str(exc))
        raise


@pytest.fixture(scope="module")
def go_sensor(go_clients, tmp_path_factory: pytest.TempPathFactory):
    """A sensor told about the two binaries (binary_paths), so the test does not depend on
    process discovery reaching a short-lived client in time."""
    from tests.integration.conftest import start_sensor

    paths = ", ".join(str(p) for p in go_clients.values())
    sensor = start_sensor(tmp_path_factory.mktemp("go-sensor"), config="binary_paths: [%s]\n" % paths)
    yield sensor
    code = sensor.stop()
    log = "".join(sensor.log)
    assert code == 0 and "Traceback" not in log, log


def run_go_client(binary: Path, hosts, ca_file: Path, fixture: str, http2: bool = False):
    fx = load_fixture(fixture)
    argv = [str(binary), "-url", fx.url, "-body", fx.request_body.decode("utf-8"),
            "-header", "Authorization: Bearer " + OPENAI_TEST_KEY, "-header", "X-Fixture: " + fixture]
    argv += ["-http2"] if http2 else []
    return fx, clients.run_client(hosts, argv, env={"SSL_CERT_FILE": str(ca_file), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("variant", VARIANTS)
def test_go_client_exchange_is_recorded(variant, go_clients, go_sensor, module_hosts, test_pki):
    fx, result = run_go_client(go_clients[variant], module_hosts, test_pki.ca_file, FIXTURE)
    check_go_exchange(fx, result, go_sensor, go_clients[variant])


def test_stripped_go_client_over_http2_is_recorded(go_clients, go_sensor, h2_server, h2_hosts, test_pki):
    """The same crypto/tls probes carry net/http's HTTP/2 frames (its own HPACK, its own window
    updates) to the HTTP/2 decoder; the client exits unless the answer came in HTTP/2."""
    before = len(h2_server.requests())
    fx, result = run_go_client(go_clients["stripped"], h2_hosts, test_pki.ca_file, FIXTURE, http2=True)
    check_go_exchange(fx, result, go_sensor, go_clients["stripped"])
    assert alpn_of(h2_server, FIXTURE, before) == "h2"


def check_go_exchange(fx, result, sensor, binary: Path) -> None:
    """The client's answer, and the sensor's ai.request/ai.response pair of it: the recording's
    model, usage and text, complete, with the key left out."""
    summary = result.check()
    assert summary["status"] == 200 and summary["body"]["model"] == fx.expect["model"]
    events = sensor.wait_for_types(result.pid, ai_request=1, ai_response=1)
    requests = [e for e in events if e["event_type"] == "ai.request"]
    responses = [e for e in events if e["event_type"] == "ai.response"]
    assert len(requests) == len(responses) == 1, [e["event_type"] for e in events]
    request, response = requests[0], responses[0]
    for event in (request, response):
        assert_valid_event(event)
        assert event["process"]["exe"].endswith(binary.name)
    req, resp = request["data"], response["data"]
    assert resp["request_id"] == req["request_id"]
    assert req["provider"]["name"] == resp["provider"]["name"] == "openai"
    assert req["model"]["id"] == fx.expect["request_model"]
    assert req["messages"][-1]["content"] == fx.request_json()["messages"][-1]["content"]
    assert resp["model"]["id"] == fx.expect["model"]
    assert resp["usage"]["prompt_tokens"] == fx.expect["input_tokens"]
    assert resp["usage"]["completion_tokens"] == fx.expect["output_tokens"]
    assert resp["choices"][0]["message"]["content"][:40] == fx.expect["text_prefix"]
    assert response["confidence"]["completeness"] == "full", response["confidence"]
    assert OPENAI_TEST_KEY not in json.dumps([request, response])


def test_stripped_go_client_one_mib_answer_is_captured_byte_complete(go_clients, go_sensor, module_hosts, test_pki):
    """Many 4 KiB Reads per response, each matched to its RET by goroutine, in sequence."""
    from tests.support.synthetic_bodies import BIG_CHAT

    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "go big"}]})
    argv = [str(go_clients["stripped"]), "-url", "https://api.openai.com/v1/chat/completions", "-body", body,
            "-header", "Authorization: Bearer " + OPENAI_TEST_KEY, "-header", "X-Fixture: " + BIG_CHAT,
            "-header", "X-Replay-Response-Bytes: %d" % (1 << 20), "-header", "X-Replay-Seed: go"]
    result = clients.run_client(module_hosts, argv, env={"SSL_CERT_FILE": str(test_pki.ca_file), "PATH": "/usr/bin:/bin"})
    received = result.check()["body"]["choices"][0]["message"]["content"]
    assert len(received) == 1 << 20
    events = go_sensor.wait_for_types(result.pid, ai_request=1, ai_response=1)
    response = next(e for e in events if e["event_type"] == "ai.response")
    assert_valid_event(response)
    assert response["data"]["choices"][0]["message"]["content"] == received
    assert response["confidence"]["completeness"] == "full", response["confidence"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_tls_scan_names_go_tls_the_functions_pclntab_and_the_rets(variant, go_clients):
    done = subprocess.run([sys.executable, "-m", "oisp_daemon.cli", "tls-scan", str(go_clients[variant])],
                          cwd=str(clients.REPO_ROOT), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    rets = [a for a, m in go_build.objdump(go_clients["plain"], "crypto/tls.(*Conn).Read") if m == "RET"]
    assert "Go crypto/tls (%s)" % go_build.go_version() in out, out
    assert "crypto/tls.(*Conn).Write" in out and "crypto/tls.(*Conn).Read" in out, out
    assert "by pclntab" in out and "pclntab: section .gopclntab" in out, out
    assert "%d RET instructions" % len(rets) in out and rets, out


def test_stripped_go_client_is_recorded_with_no_configuration(sensor, go_clients, module_hosts, test_pki):
    """The session's sensor has no binary_paths: discovery finds the Go executable when it runs.
    A client done in milliseconds can finish before its first sighting is probed, so it runs once
    to be found, and the run after that (the file stays probed) is the one checked."""
    binary = go_clients["stripped"]
    run_go_client(binary, module_hosts, test_pki.ca_file, "openai-chat-002")[1].check()
    deadline = time.monotonic() + 60
    while not any("probing %s" % binary in line for line in sensor.log):
        assert time.monotonic() < deadline, "discovery never probed %s:\n%s" % (binary, "".join(sensor.log[-20:]))
        time.sleep(0.1)
    fx, result = run_go_client(binary, module_hosts, test_pki.ca_file, "openai-chat-002")
    result.check()
    events = sensor.wait_for_types(result.pid, ai_request=1, ai_response=1)
    response = next(e for e in events if e["event_type"] == "ai.response")
    assert response["data"]["model"]["id"] == fx.expect["model"]
    assert response["data"]["choices"][0]["message"]["content"][:40] == fx.expect["text_prefix"]
