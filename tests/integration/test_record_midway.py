"""A keep-alive connection the sensor joins mid-answer, under real eBPF: the daemon starts while
a client is reading an answer whose request it never saw (a restart of the sensor during an
agent's session). The rest of that answer is skipped, and once user space has said so the kernel
copies none of it; the next exchange on the same connection is captured whole.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, List

import pytest

from tests.integration.daemon import running_daemon
from tests.support import clients
from tests.support.llm_fixtures import load_fixtures
from tests.support.oisp_schema import assert_valid_event

pytestmark = pytest.mark.bpf

FIXTURE = "openai-chat-001"
FIRST = "openai-chat-002"  # the answer joined mid-way


def wait_for_response(daemon, pid: int, timeout: float = 30) -> List[Dict[str, Any]]:
    """The pid's events once its ai.response is among them (or what there is at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in daemon.tail_json() if e.get("process", {}).get("pid") == pid]
        if any(e["event_type"] == "ai.response" for e in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


def test_the_next_exchange_of_a_connection_joined_mid_answer_is_captured(server, hosts, pki) -> None:
    """The openai SDK on one keep-alive connection; the daemon starts while the first answer is
    held back part-way."""
    token = "midway" + uuid.uuid4().hex
    client = clients.start_client(hosts, clients.python_client(
        "openai_keepalive.py", "--ca", pki.ca_file, "--fixture", FIXTURE, "--first", FIRST, "--hold", token))
    try:
        deadline = time.monotonic() + 30
        while not [r for r in server.requests() if token in str(r.get("headers"))]:
            assert client.poll() is None and time.monotonic() < deadline, client.stderr.read() if client.stderr else ""
            time.sleep(0.1)
        with running_daemon() as daemon:  # the first request went out before: its answer is joined mid-way
            server.release(token)
            summary = clients.finish_client(client).check()
            fixtures = load_fixtures()
            assert summary["first_text"].startswith(fixtures[FIRST].expect["text_prefix"])
            posts = [r for r in server.requests() if r.get("path") == "/v1/chat/completions"][-2:]
            assert posts[0]["conn"] == posts[1]["conn"], "the second request reused the connection"
            events = wait_for_response(daemon, client.pid)
            counters = daemon.ctl_json("status")["counters"]
    finally:
        server.release(token)
        if client.poll() is None:
            client.kill()
            client.wait()
    for event in events:
        assert_valid_event(event)
    [request] = [e for e in events if e["event_type"] == "ai.request"]
    [response] = [e for e in events if e["event_type"] == "ai.response"]
    expect = fixtures[FIXTURE].expect
    assert request["data"]["model"]["id"] == expect["request_model"]
    assert response["data"]["model"]["id"] == expect["model"]
    assert response["data"]["usage"]["prompt_tokens"] == expect["input_tokens"]
    assert response["data"]["usage"]["completion_tokens"] == expect["output_tokens"]
    assert response["data"]["choices"][0]["message"]["content"].startswith(expect["text_prefix"])
    assert response["confidence"]["completeness"] == "full"
    assert counters["http1_joined_midway"] >= 1 and counters["skipped_bytes"] > 0


# argv: ca_file. A raw HTTP/1.1 client on one TLS connection, told by the test on stdin when to go
# on: it asks for 1 MiB and waits; reads one piece of the answer and waits; reads the rest and
# sends a chat completion on the same connection.
STEPPED_CLIENT = r"""
import json, socket, ssl, sys
tls = ssl.create_default_context(cafile=sys.argv[1]).wrap_socket(
    socket.create_connection(("api.openai.com", 443)), server_hostname="api.openai.com")
def step(name):
    print(json.dumps({"step": name}), flush=True)
    sys.stdin.readline()
def answer(data):
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    while len(body) < length:
        body += tls.recv(65536)
    return head, body
tls.sendall(b"GET /big?bytes=1048576 HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
step("sent")
first = tls.recv(16384)
step("read")
_, big = answer(first)
body = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "What is four plus five?"}]}).encode()
tls.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer sk-replay-test-0123456789abcdef\r\nX-Fixture: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (sys.argv[2].encode(), len(body), body))
head, chat = answer(b"")
print(json.dumps({"big": len(big), "status": int(head.split(b" ")[1]), "chat": len(chat)}))
"""


def wait_for_counter(daemon, name: str, at_least: int, timeout: float = 30) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        counters = daemon.ctl_json("status")["counters"]
        if counters.get(name, 0) >= at_least or time.monotonic() > deadline:
            return counters
        time.sleep(0.2)


def test_the_kernel_stops_copying_an_answer_joined_midway(server, hosts, pki) -> None:
    client = hosts.popen([sys.executable, "-c", STEPPED_CLIENT, str(pki.ca_file), FIXTURE], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None and client.stdin is not None

        def expect_step(name: str) -> None:
            line = client.stdout.readline()
            assert json.loads(line or "{}").get("step") == name, line + client.stderr.read()

        expect_step("sent")
        with running_daemon() as daemon:
            client.stdin.write("go\n")
            client.stdin.flush()
            expect_step("read")  # one piece of the answer read with the sensor on
            before = wait_for_counter(daemon, "http1_joined_midway", 1)
            assert before["http1_joined_midway"] >= 1, before
            client.stdin.write("go\n")
            client.stdin.flush()
            summary = clients.finish_client(client).check()
            assert summary["big"] == 1 << 20 and summary["status"] == 200
            events = wait_for_response(daemon, client.pid)
            after = daemon.ctl_json("status")["counters"]
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    # the piece read before user space's verdict went through the ring; the rest of the MiB did not
    assert after["skipped_bytes"] - before["skipped_bytes"] < 64 * 1024, (before, after)
    [response] = [e for e in events if e["event_type"] == "ai.response"]
    expect = load_fixtures()[FIXTURE].expect
    assert response["data"]["model"]["id"] == expect["model"]
    assert response["data"]["choices"][0]["message"]["content"].startswith(expect["text_prefix"])
    assert [e["event_type"] for e in events if e["event_type"].startswith("ai.")] == ["ai.request", "ai.response"]
