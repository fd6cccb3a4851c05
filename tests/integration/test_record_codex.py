"""Codex 0.171 (a stripped static Rust binary, rustls on aws-lc) with no configuration, and the
processes whose TLS the sensor cannot see.

Codex runs `codex exec` against the replay server with api.openai.com mapped to it in a private
mount namespace and the test CA in SSL_CERT_FILE. It first tries a WebSocket to /v1/responses;
the replay refuses the upgrade (404), so it falls back to HTTPS POST /v1/responses, whose
exchange must come out as events with the recording's model, usage and text.

The blind-spot side runs on a real daemon (`oisp-ctl status` and `doctor`): a copy of Codex whose
aws-lc cannot be located (one source-file name changed) is listed as unseen with library
"rustls, static: not supported", as is a process that connects to port 443 with no TLS library
at all; curl through the system libssl, which is probed, is not listed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests.integration.daemon import DaemonProcess, running_daemon
from tests.support.llm_fixtures import load_fixtures
from tests.support.oisp_schema import assert_valid_event
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.bpf

CODEX = REPO_ROOT / ".venv/npm/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
RUSTLS_UNSUPPORTED = "rustls, static: not supported"
AEAD_C = b"crypto/fipsmodule/cipher/aead.c\0"
CODEX_TIMEOUT_S = 240  # five WebSocket attempts with back-off before the HTTPS fallback


def codex_env(home: Path, ca_file: Path) -> Dict[str, str]:
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    return dict(os.environ, HOME=str(home), CODEX_HOME=str(home / ".codex"), OPENAI_API_KEY="sk-oisp-test",
                SSL_CERT_FILE=str(ca_file), NO_COLOR="1")


def run_codex(hosts, binary: Path, home: Path, ca_file: Path):
    done = hosts.run([str(binary), "exec", "--skip-git-repo-check", "say hi"], env=codex_env(home, ca_file),
                     timeout=CODEX_TIMEOUT_S, cwd=str(home))
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return done


def responses_fixture(server) -> str:
    """The fixture the replay answered Codex's POST /v1/responses with."""
    posts = [r for r in server.requests() if r.get("method") == "POST" and r.get("path") == "/v1/responses"]
    assert posts and posts[-1].get("fixture"), posts
    return posts[-1]["fixture"]


def test_codex_exec_is_captured(sensor, module_server, module_hosts, test_pki, tmp_path: Path) -> None:
    done = run_codex(module_hosts, CODEX, tmp_path, test_pki.ca_file)
    events = sensor.wait_for_types(done.pid, ai_request=1, ai_response=1)
    for event in events:
        assert_valid_event(event)
    expect = load_fixtures()[responses_fixture(module_server)].expect
    [request] = [e for e in events if e["event_type"] == "ai.request"]  # the WebSocket tries are no AI calls
    [response] = [e for e in events if e["event_type"] == "ai.response"]
    model = re.search(r"^model: (\S+)$", done.stdout.decode() + done.stderr.decode(), re.M)
    assert model, "codex names its model in its banner"
    assert request["data"]["model"]["id"] == model.group(1)
    assert request["data"]["provider"]["endpoint"] == "https://api.openai.com/v1/responses"
    assert request["data"]["streaming"] is True
    data = response["data"]
    assert data["model"]["id"] == expect["model"]
    assert data["usage"]["prompt_tokens"] == expect["input_tokens"]
    assert data["usage"]["completion_tokens"] == expect["output_tokens"]
    assert data["choices"][0]["message"]["content"].startswith(expect["text_prefix"])
    assert data["status_code"] == 200
    assert response["process"]["name"] == "codex"


# -- blind spots, on a daemon --------------------------------------------------------------


# A TLS gateway's port, configured besides 443 (capture.unseen_tls_ports)
GATEWAY_PORT = 8443


@pytest.fixture(scope="module")
def unseen_daemon() -> Iterator[DaemonProcess]:
    with running_daemon({"capture": {"unseen_tls_ports": [443, GATEWAY_PORT]}}) as proc:
        yield proc


@pytest.fixture(scope="module")
def blind_codex(tmp_path_factory) -> Iterator[Path]:
    """A copy of Codex in which aws-lc's aead.c is named otherwise: its rustls is recognised, its
    AEAD functions are not found, so it cannot be probed. Removed afterwards (315 MB)."""
    path = tmp_path_factory.mktemp("blind-codex") / "codex"
    data = bytearray(CODEX.read_bytes())
    at = data.find(AEAD_C)
    assert at > 0 and data.find(AEAD_C, at + 1) == -1
    data[at + len(AEAD_C) - 2] = ord("x")  # "...aead.x"
    path.write_bytes(bytes(data))
    del data
    path.chmod(0o755)
    yield path
    path.unlink()


def unseen_entries(daemon: DaemonProcess, pid: int, named: bool = False, timeout: float = 60) -> List[Dict[str, Any]]:
    """The status entries of `pid` once there are some (with a library, if `named`): the verdict
    waits for discovery, whose scan of a big binary takes a while on a busy machine."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in daemon.ctl_json("status")["unseen_tls"] if e["pid"] == pid and (e["library"] or not named)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


# Whether anything listens there does not matter: the connect is what is seen.
NO_TLS_CLIENT = ("import socket, sys, time; socket.socket().connect_ex((sys.argv[1], int(sys.argv[2]))); "
                 "print('connected', flush=True); time.sleep(60)")


def no_tls_client(server, port: int = 443) -> "subprocess.Popen[bytes]":
    """Python without its ssl module (no libssl mapped) that has connected to `port` (its connect
    is in the ring before anything started after this returns), then waits."""
    child = subprocess.Popen([sys.executable, "-S", "-c", NO_TLS_CLIENT, server.host, str(port)],
                             stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"connected\n"
    return child


def test_codex_that_cannot_be_probed_is_listed_as_unseen(unseen_daemon, blind_codex, server, hosts, pki,
                                                          tmp_path: Path) -> None:
    done = run_codex(hosts, blind_codex, tmp_path, pki.ca_file)
    [entry] = unseen_entries(unseen_daemon, done.pid, named=True)
    assert entry["library"] == RUSTLS_UNSUPPORTED
    assert entry["exe"] == str(blind_codex) and entry["comm"] == "codex"
    assert entry["connects"] >= 2  # the WebSocket tries and the HTTPS fallback
    status = unseen_daemon.ctl_json("status")
    assert status["counters"]["unseen_tls_processes"] >= 1
    assert not [e for e in unseen_daemon.tail_json() if e.get("process", {}).get("pid") == done.pid]
    text = unseen_daemon.ctl("status").stdout
    assert re.search(r"^  pid %d codex \(%s\): %s; \d+ TLS connects since " % (
        done.pid, re.escape(str(blind_codex)), re.escape(RUSTLS_UNSUPPORTED)), text, re.M), text
    doctor = unseen_daemon.ctl("doctor").stdout
    assert re.search(r"^WARN\s+unseen\s+\d+ processes talk TLS the sensor cannot see: .*pid %d codex" % done.pid,
                     doctor, re.M), doctor


def test_a_process_with_no_tls_library_connecting_to_443_is_unseen(unseen_daemon, server) -> None:
    child = no_tls_client(server)
    try:
        [entry] = unseen_entries(unseen_daemon, child.pid)
        assert entry["library"] is None and entry["connects"] == 1
        assert entry["exe"] == os.path.realpath(sys.executable)
    finally:
        child.kill()
        child.wait()


def test_only_the_configured_tls_ports_make_a_process_unseen(unseen_daemon, server) -> None:
    other = no_tls_client(server, GATEWAY_PORT + 1)
    gateway = no_tls_client(server, GATEWAY_PORT)
    try:
        [entry] = unseen_entries(unseen_daemon, gateway.pid)
        assert entry["library"] is None and entry["connects"] == 1
        # verdicts come in connect order, and the other port's client connected first
        assert other.pid not in [e["pid"] for e in unseen_daemon.ctl_json("status")["unseen_tls"]]
    finally:
        for child in (other, gateway):
            child.kill()
            child.wait()


def test_curl_through_the_system_libssl_is_not_unseen(unseen_daemon, server, hosts, pki) -> None:
    done = hosts.run(["curl", "-sS", "--cacert", str(pki.ca_file), "-o", "/dev/null",
                      server.url("/big?bytes=100")], timeout=60)
    assert done.returncode == 0, done.stderr
    # Verdicts come in connect order: once a later uncovered client is listed, curl's is in.
    marker = no_tls_client(server)
    try:
        assert unseen_entries(unseen_daemon, marker.pid)
        listed = [e["pid"] for e in unseen_daemon.ctl_json("status")["unseen_tls"]]
        assert done.pid not in listed
    finally:
        marker.kill()
        marker.wait()
