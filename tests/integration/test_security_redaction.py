"""Issue 6, "no keys in clear": an unprivileged user's command line carries keys in every form a
person types them, while the real sensor records in its default (safe) mode. Group members tail
every user's events, so none of those keys may appear anywhere in what the sensor writes.

The attacker's view is the JSONL file: the whole file is searched for each key. Each key is
fresh per run and shaped like no vendor's (Azure and gateway keys), so only the rules that look
at where a value stands (header, URL parameter, JSON member, option, assignment) can catch it.

Also the configuration side of issue 6: a custom pattern that would freeze the pipeline and a
YAML alias bomb are refused by the real commands with short errors.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.support import clients
from tests.support.oisp_schema import assert_valid_event

pytestmark = pytest.mark.bpf

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
FIXTURE = "openai-chat-001"
URL = "https://api.openai.com/v1/chat/completions"


def fresh_keys(*names: str) -> Dict[str, str]:
    """A vendor-less key per form: 28 characters of hex and letters, unique to this run."""
    return {name: "gw" + secrets.token_hex(10) + "Zq" + name[:4].replace("-", "x") for name in names}


@pytest.fixture
def public_ca(test_pki) -> Iterator[Path]:
    """The test CA where uid 65534 can read it (pytest's tmp dirs are root's 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="oisp-redact-ca-"))
    try:
        directory.chmod(0o755)
        ca = directory / "ca.pem"
        shutil.copyfile(test_pki.ca_file, ca)
        ca.chmod(0o644)
        yield ca
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def whole_file(sensor) -> str:
    return sensor.output.read_text(encoding="utf-8")


@pytest.fixture
def caught_up(sensor, module_hosts, test_pki):
    """The session sensor, once it has caught up with what earlier tests made it capture (a
    flood of 4 MiB prompts leaves minutes of backlog on a small VM): a canary request's events
    must be out. A client gone before the sensor reached its exec has no command line to show,
    so these tests start on a sensor that is not behind."""
    result = clients.run_client(module_hosts, clients.openai_client("openai-chat-001", test_pki.ca_file))
    result.check()
    sensor.wait_for(lambda events: sum(e["event_type"] == "ai.response" for e in events) >= 1, pid=result.pid, timeout=300)
    return sensor


def ai_events(sensor, pid: int) -> List[dict]:
    events = sensor.wait_for_types(pid, ai_request=1, ai_response=1)
    for event in events:
        assert_valid_event(event)
        assert event["actor"]["uid"] == 65534
    return [e for e in events if e["event_type"] in ("ai.request", "ai.response")]


def test_keys_in_a_users_curl_command_line_never_reach_the_jsonl(caught_up, module_hosts, public_ca):
    sensor = caught_up
    keys = fresh_keys("bearer", "api-key", "x-api-key", "apim", "cookie-b", "cookie-h", "json-api_key",
                      "json-token", "json-password", "json-secret", "query-api_key", "query-token",
                      "query-key", "user")
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                       "api_key": keys["json-api_key"], "token": keys["json-token"],
                       "password": keys["json-password"] + " and more", "secret": keys["json-secret"]})
    argv = NOBODY + [
        "curl", "-sS", "--http1.1", "--cacert", str(public_ca), "-o", "/dev/null", "-w", "%{http_code}",
        "-H", "Authorization: Bearer " + keys["bearer"],
        "-H", "api-key: " + keys["api-key"],
        "-H", "x-api-key: " + keys["x-api-key"],
        "-H", "Ocp-Apim-Subscription-Key: " + keys["apim"],
        "-b", "session=%s; theme=dark" % keys["cookie-b"],
        "-H", "Cookie: lang=en; sid=" + keys["cookie-h"],
        "-H", "X-Fixture: " + FIXTURE,
        "-H", "Content-Type: application/json",
        "-u", "alice:" + keys["user"],
        "-d", body,
        "%s?api_key=%s&token=%s&key=%s" % (URL, keys["query-api_key"], keys["query-token"], keys["query-key"]),
    ]
    result = clients.run_client(module_hosts, argv)
    assert result.returncode == 0 and result.stdout == "200", (result.stdout, result.stderr)

    events = ai_events(sensor, result.pid)
    request = next(e for e in events if e["event_type"] == "ai.request")
    # The sensor did see the keys: the request's credential is the bearer key, by its hash.
    assert request["data"]["auth"]["key_hash"] == "sha256:" + hashlib.sha256(keys["bearer"].encode()).hexdigest()[:16]
    cmdline = request["process"]["cmdline"]
    assert cmdline.startswith("curl -sS --http1.1 --cacert ")
    assert "'Authorization: Bearer [REDACTED:named_secret]'" in cmdline
    assert "?api_key=[REDACTED:named_secret]&token=[REDACTED:named_secret]&key=[REDACTED:named_secret]" in cmdline
    assert '"model": "gpt-4o-mini"' in cmdline  # what is not secret stays readable

    text = whole_file(sensor)
    leaked = [form for form, key in keys.items() if key in text]
    assert leaked == [], "keys in clear in the JSONL: %s" % leaked
    assert keys["json-password"] + " and more" not in text


CODE = (
    "import http.client, ssl, sys\n"
    "ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
    "c = http.client.HTTPSConnection('api.openai.com', 443, context=ctx)\n"
    "body = b'{\"model\": \"gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'\n"
    "c.request('POST', '/v1/chat/completions', body, {'Content-Type': 'application/json',\n"
    "          'X-Fixture': sys.argv[2], 'Authorization': 'Bearer sk-replay-test-curl-0123456789'})\n"
    "r = c.getresponse(); r.read(); print(r.status)\n"
)


def test_keys_as_options_assignments_and_urls_in_a_users_argv_never_reach_the_jsonl(caught_up, module_hosts, public_ca):
    sensor = caught_up
    keys = fresh_keys("api-key-opt", "token-eq", "password", "user", "openai-env", "azure-env", "bearer-arg",
                      "query", "json", "oauth2", "url-password", "env-var")
    argv = NOBODY + [
        "/usr/bin/python3", "-c", CODE, str(public_ca), FIXTURE,
        "--api-key", keys["api-key-opt"],
        "--token=" + keys["token-eq"],
        "--password", keys["password"] + " two words",
        "-u", "bob:" + keys["user"],
        "OPENAI_API_KEY=" + keys["openai-env"],
        "AZURE_OPENAI_KEY=" + keys["azure-env"],
        "-H", "Authorization: Bearer " + keys["bearer-arg"],
        "https://gw.example/v1?model=m&api_key=" + keys["query"],
        "-d", json.dumps({"api_key": keys["json"]}),
        "--oauth2-bearer", keys["oauth2"],
        "https://bob:%s@git.example/repo.git" % keys["url-password"],
    ]
    env = dict(os.environ, OPENAI_API_KEY=keys["env-var"], AZURE_OPENAI_API_KEY=keys["env-var"])
    result = clients.run_client(module_hosts, argv, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "200", (result.stdout, result.stderr)

    events = ai_events(sensor, result.pid)
    cmdline = events[0]["process"]["cmdline"]
    assert cmdline.startswith("/usr/bin/python3 -c ") and "--api-key [REDACTED:named_secret]" in cmdline
    assert "AZURE_OPENAI_KEY=[REDACTED:named_secret]" in cmdline and "-u bob:[REDACTED:named_secret]" in cmdline

    text = whole_file(sensor)
    leaked = [form for form, key in keys.items() if key in text]
    assert leaked == [], "keys in clear in the JSONL: %s" % leaked
    assert "two words" not in text  # a password's words after the first, whole argument redacted
    assert sensor.proc.poll() is None  # the sensor is still recording



# --- configuration that would freeze or flood the sensor ----------------------------------------


def run_cli(*args: str):
    return subprocess.run([sys.executable, "-m", "oisp_daemon.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=str(clients.REPO_ROOT))


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(\w+\s?)+!", r"(x|xy)*z"])
def test_a_catastrophic_custom_pattern_never_reaches_the_pipeline(tmp_path, pattern):
    """`(a+)+$` passed check-config and reload, then 'a'*28+'!' froze the daemon: now both
    check-config and record refuse it, naming the file, the key and the pattern."""
    cfg = tmp_path / "patterns.yaml"
    cfg.write_text("redaction:\n  custom_patterns:\n    - {name: slow, regex: '%s'}\n" % pattern)
    for proc in (run_cli("check-config", str(cfg)), run_cli("record", "--config", str(cfg), "--output", str(tmp_path / "x"))):
        assert proc.returncode == 1
        assert f"{cfg}: redaction.custom_patterns: custom redaction pattern 'slow': regex {pattern!r}" in proc.stderr
        assert "exponential time" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_an_alias_bomb_gives_a_small_error(tmp_path):
    lines = ['a0: &a0 ["%s"]' % ("x" * 40)] + ["a%d: &a%d [%s]" % (i, i, ",".join(["*a%d" % (i - 1)] * 9)) for i in range(1, 10)]
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("\n".join(lines) + "\nsessions: *a9\n")
    assert cfg.stat().st_size < 600
    for proc in (run_cli("check-config", str(cfg)), run_cli("record", "--config", str(cfg))):
        assert proc.returncode == 1 and "YAML aliases (*a0) are not allowed" in proc.stderr
        assert len(proc.stderr) < 1024
