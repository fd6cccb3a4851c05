"""A gateway serving an OpenAI-shaped API over TLS, named in capture.tls_servers (the session
sensor's config): its inbound exchange is decoded and the provider call it made to serve it
points back to it."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.support import clients
from tests.support.llm_fixtures import load_fixtures
from tests.support.oisp_schema import assert_valid_event
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.bpf

FIXTURE = load_fixtures()["openai-chat-001"]


@pytest.fixture
def gateway(module_hosts, test_pki):
    proc = module_hosts.popen(
        [str(clients.VENV_PYTHON), str(REPO_ROOT / "tests" / "clients" / "tls_gateway.py"), str(test_pki.cert_file),
         str(test_pki.key_file), str(test_pki.ca_file), "https://api.openai.com/v1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield proc, json.loads(line)["port"]
    finally:
        proc.kill()
        proc.wait()


def test_a_gateways_inbound_exchange_is_decoded_and_its_provider_call_linked(sensor, module_hosts, test_pki,
                                                                             gateway, tmp_path):
    proc, port = gateway
    body = tmp_path / "body.json"
    body.write_bytes(FIXTURE.request_body)
    curl = ["curl", "-sS", "--http1.1", "--cacert", str(test_pki.ca_file), "-o", str(tmp_path / "out"),
            "-w", "%{http_code}", "-H", "Content-Type: application/json", "-H", f"X-Fixture: {FIXTURE.name}",
            "-H", "Authorization: Bearer sk-replay-test-0123456789abcdef", "--data-binary", f"@{body}",
            f"https://localhost:{port}/v1/chat/completions"]
    client = clients.run_client(module_hosts, curl)
    assert client.stdout == "200", client.stderr
    events = sensor.wait_for_types(proc.pid, ai_request=2, ai_response=2)
    requests = [e for e in events if e["event_type"] == "ai.request"]
    inbound = [e for e in requests if e.get("attrs", {}).get("exchange_side") == "server"]
    outbound = [e for e in requests if e not in inbound]
    assert len(inbound) == len(outbound) == 1
    assert inbound[0]["data"]["model"]["id"] == FIXTURE.expect["request_model"]
    assert outbound[0]["data"]["provider"]["name"] == "openai"
    assert {"event_id": inbound[0]["event_id"], "relationship": "caused_by"} in outbound[0]["related_events"]
    assert outbound[0]["attrs"]["served_request_id"] == inbound[0]["data"]["request_id"]
    for response in (e for e in events if e["event_type"] == "ai.response"):
        assert response["data"]["model"]["id"] == FIXTURE.expect["model"]
        assert response["data"]["usage"]["completion_tokens"] == FIXTURE.expect["output_tokens"]
    for event in events:
        assert_valid_event(event)
    # the client (curl) made its own request too, to a host no table knows: OpenAI-shaped
    own = sensor.wait_for_types(client.pid, ai_request=1, ai_response=1)
    assert all(e.get("attrs", {}).get("exchange_side") != "server" for e in own)
