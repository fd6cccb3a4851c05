"""Bun and Claude Code (a Bun executable): BoringSSL built in, no SSL_* symbols. With no
configuration the sensor finds SSL_read/SSL_write by signature and records their AI traffic;
`oisp-sensor tls-scan` says what it found and how."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List
from urllib.parse import urlsplit

import pytest

from tests.support.bun import bun, claude
from tests.support.llm_fixtures import Fixture, load_fixtures
from tests.support.oisp_schema import assert_valid_event
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.bpf

FIXTURES: Dict[str, Fixture] = load_fixtures()
BUN_FIXTURE = "openai-chat-001"
SIGNATURE_ID = "boringssl-ssl_lib-error-sites"
TEST_KEY = "sk-ant-oisp-test-0000"

FETCH_JS = """\
const [url, bodyFile, fixture] = process.argv.slice(2);
const response = await fetch(url, {
  method: "POST",
  headers: {"content-type": "application/json", "authorization": "Bearer " + process.env.OPENAI_API_KEY,
            "x-fixture": fixture},
  body: await Bun.file(bodyFile).text(),
});
console.log(response.status, (await response.text()).length);
"""


def pair_of(sensor, pid: int, path: str) -> List[Dict[str, Any]]:
    """The pid's ai.request to `path` and the ai.response that answers it."""
    def pairs(events: List[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
        responses = {e["data"]["request_id"]: e for e in events if e["event_type"] == "ai.response"}
        return [[e, responses[e["data"]["request_id"]]] for e in events
                if e["event_type"] == "ai.request" and e["data"]["request_id"] in responses
                and urlsplit(e["data"]["provider"]["endpoint"]).path == path]

    found = pairs(sensor.wait_for(lambda events: bool(pairs(events)), pid=pid, timeout=60))
    assert len(found) == 1, found
    return found[0]


def check_pair(request: Dict[str, Any], response: Dict[str, Any], fx: Fixture, pid: int, sent_model: str) -> None:
    """The request names the model the client sent; model, usage and text of the response are
    what the recording says."""
    for event in (request, response):
        assert_valid_event(event)
        assert event["process"]["pid"] == pid
    req, resp = request["data"], response["data"]
    expect = fx.expect
    assert req["model"]["id"] == sent_model
    assert resp["model"]["id"] == expect["model"]
    assert resp["usage"]["prompt_tokens"] == expect["input_tokens"]
    assert resp["usage"]["completion_tokens"] == expect["output_tokens"]
    assert resp["choices"][0]["message"]["content"].startswith(expect["text_prefix"])
    assert response["confidence"]["completeness"] == "full", response["confidence"]


def test_bun_fetch_is_recorded(sensor, module_server, module_hosts, test_pki, tmp_path):
    fx = FIXTURES[BUN_FIXTURE]
    script, body = tmp_path / "fetch.mjs", tmp_path / "body.json"
    script.write_text(FETCH_JS)
    body.write_bytes(fx.request_body)
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(test_pki.ca_file), OPENAI_API_KEY="sk-oisp-test")
    # The first Bun ever seen is probed about a second after its exec (the signature search), and
    # a fetch this short is over by then: that run gets the binary found; the next is captured
    # from its first call. (Claude Code starts slower than the search, below.)
    if not any("bun.exe (BoringSSL" in line for line in sensor.log):
        warm = module_hosts.run([bun(), str(script), fx.url, str(body), fx.name], env=env, timeout=120)
        assert warm.returncode == 0, warm.stderr
        sensor.wait_for(lambda _: any("bun.exe (BoringSSL" in line for line in sensor.log), timeout=60)
    done = module_hosts.run([bun(), str(script), fx.url, str(body), fx.name], env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith(b"200 "), done.stderr
    check_pair(*pair_of(sensor, done.pid, fx.path), fx, done.pid, fx.expect["request_model"])


def test_claude_code_messages_are_recorded(sensor, module_server, module_hosts, test_pki, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(HOME=str(home), NODE_EXTRA_CA_CERTS=str(test_pki.ca_file), ANTHROPIC_API_KEY=TEST_KEY,
               DISABLE_TELEMETRY="1", DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
    done = module_hosts.run([claude(), "-p", "say hi"], env=env, timeout=180, cwd=str(tmp_path))
    assert done.returncode == 0, (done.stdout, done.stderr)
    # Which recording answered Claude Code's /v1/messages is the replay server's choice (its
    # matching rules): the log names it.
    served = [r for r in module_server.requests() if r["path"] == "/v1/messages" and r["status"] == 200
              and r["host"] == "api.anthropic.com"]
    assert served, module_server.requests()
    fx = FIXTURES[served[-1]["fixture"]]
    assert fx.expect["streaming"] and fx.expect["text_prefix"] in done.stdout.decode()
    request, response = pair_of(sensor, done.pid, "/v1/messages")
    sent = json.loads(served[-1]["body_text"])  # what Claude Code asked for
    assert sent["stream"] is True
    check_pair(request, response, fx, done.pid, sent["model"])
    assert request["data"]["provider"]["name"] == "anthropic"


@pytest.mark.parametrize("which", ["bun", "claude"])
def test_tls_scan_names_boringssl_and_the_signature(which):
    path = {"bun": bun, "claude": claude}[which]()
    done = subprocess.run([sys.executable, "-m", "oisp_daemon.cli", "tls-scan", path], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "BoringSSL" in out and SIGNATURE_ID in out, out
    assert "SSL_read" in out and "SSL_write" in out, out
