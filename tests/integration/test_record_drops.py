"""Exchanges dropped mid-way under real eBPF: a client killed before or during its answer, and a
client that closes its connection before the answer and then asks again on a new one.

Each dropped request must come out as an ai.request plus a partial ai.response that names the
reason, and the next request must pair with its own answer only. The clients are small raw
HTTP/1.1-over-TLS programs on the system Python (linked to the libssl the sensor hooks), so that
the test decides exactly when the process dies or the connection closes.
"""
from __future__ import annotations

import json
import signal
from typing import Any, Dict, List

import pytest

from tests.support import clients
from tests.support import synthetic_bodies as synth
from tests.support.oisp_schema import assert_valid_event

pytestmark = pytest.mark.bpf

# argv: ca_file, then one JSON object per connection: {"mark", "delay_ms", "stream", "then"} where
# "then" is "answer" (read the whole answer), "close" (close before the answer), "die" (SIGKILL
# itself before the answer) or "die-mid-stream" (SIGKILL itself after the first streamed event).
CLIENT = r'''
import json, os, signal, socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])

def request(mark, delay_ms, stream):
    body = json.dumps({"model": "gpt-4o-mini", "stream": stream,
                       "messages": [{"role": "user", "content": mark}]}).encode()
    head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
            "Authorization: Bearer sk-replay-test-0123456789abcdef\r\nContent-Type: application/json\r\n"
            "X-Fixture: @echo-chat\r\nX-Replay-Delay-Ms: %d\r\nContent-Length: %d\r\n\r\n" % (delay_ms, len(body)))
    return head.encode() + body

def read_answer(tls):
    data = b""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if length and len(rest) >= int(length[0].split(b":")[1]):
                return data
            if not length and rest.endswith(b"0\r\n\r\n"):
                return data
        piece = tls.recv(65536)
        if not piece:
            return data
        data += piece

for step in map(json.loads, sys.argv[2:]):
    tls = ctx.wrap_socket(socket.create_connection(("api.openai.com", 443)), server_hostname="api.openai.com")
    tls.sendall(request(step["mark"], step.get("delay_ms", 0), step.get("stream", False)))
    then = step["then"]
    if then == "answer":
        print(json.dumps({"mark": step["mark"], "answer": read_answer(tls).decode("utf-8", "replace")[-300:]}))
    elif then == "close":
        time.sleep(0.3)
        tls.close()  # SSL_free before any byte of the answer
        time.sleep(0.3)
    elif then == "die":
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    elif then == "die-mid-stream":
        seen = b""
        while b"data: " not in seen.partition(b"\r\n\r\n")[2]:
            seen += tls.recv(1)  # one byte per read: nothing after the first event is read
        os.kill(os.getpid(), signal.SIGKILL)
sys.stdout.flush()
'''


def run(module_hosts, test_pki, *steps: Dict[str, Any]):
    argv = [str(clients.VENV_PYTHON), "-c", CLIENT, str(test_pki.ca_file)] + [json.dumps(s) for s in steps]
    return clients.run_client(module_hosts, argv, timeout=60)


def pairs(events: List[Dict[str, Any]]):
    """[(request event, response event)] in request order; each request has exactly one response."""
    for event in events:
        assert_valid_event(event)
    requests = [e for e in events if e["event_type"] == "ai.request"]
    responses = [e for e in events if e["event_type"] == "ai.response"]
    by_id = {}
    for response in responses:
        assert response["data"]["request_id"] not in by_id, "two responses for one request"
        by_id[response["data"]["request_id"]] = response
    assert sorted(by_id) == sorted(r["data"]["request_id"] for r in requests)
    return [(r, by_id[r["data"]["request_id"]]) for r in requests]


def mark_of(request: Dict[str, Any]) -> str:
    return request["data"]["messages"][0]["content"]


def answer_of(response: Dict[str, Any]) -> str:
    return response["data"]["choices"][0]["message"]["content"]


def test_client_killed_before_its_answer(sensor, module_hosts, test_pki):
    result = run(module_hosts, test_pki, {"mark": "drop-killed", "delay_ms": 3000, "then": "die"})
    assert result.returncode == -signal.SIGKILL, result.stderr
    ((request, response),) = pairs(sensor.wait_for_types(result.pid, ai_request=1, ai_response=1))
    assert mark_of(request) == "drop-killed"
    assert response["confidence"]["completeness"] == "partial"
    assert response["confidence"]["limitations"] == ["no_response", "process_exit"]
    assert response["data"]["error"]["type"] == "no_response" and "status_code" not in response["data"]
    assert response["related_events"][0]["event_id"] == request["event_id"]
    assert response["ts_mono"] >= request["ts_mono"]


def test_client_killed_mid_stream_keeps_what_it_read(sensor, module_hosts, test_pki):
    mark = "drop mid stream with several words to stream"
    result = run(module_hosts, test_pki, {"mark": mark, "stream": True, "then": "die-mid-stream"})
    assert result.returncode == -signal.SIGKILL, result.stderr
    ((request, response),) = pairs(sensor.wait_for_types(result.pid, ai_request=1, ai_response=1))
    assert mark_of(request) == mark
    assert response["confidence"]["completeness"] == "partial"
    assert "process_exit" in response["confidence"]["limitations"]
    assert response["data"]["status_code"] == 200 and response["data"]["streaming"] is True
    # Only what the process read before it died: the first event (the role, no text yet).
    content = response["data"].get("choices", [{}])[0].get("message", {}).get("content", "")
    assert (synth.ECHO_PREFIX + mark).startswith(content) and content != synth.ECHO_PREFIX + mark


def test_connection_closed_before_its_answer_then_a_new_one_pairs_its_own(sensor, module_hosts, test_pki):
    result = run(module_hosts, test_pki,
                 {"mark": "drop-closed", "delay_ms": 2000, "then": "close"},
                 {"mark": "drop-after-close", "then": "answer"})
    assert result.returncode == 0, result.stderr
    events = sensor.wait_for_types(result.pid, ai_request=2, ai_response=2)
    (closed, answered) = pairs(events)
    assert mark_of(closed[0]) == "drop-closed"
    assert closed[1]["confidence"]["completeness"] == "partial"
    assert closed[1]["confidence"]["limitations"] == ["no_response", "connection_closed"]
    assert mark_of(answered[0]) == "drop-after-close"
    assert answer_of(answered[1]) == synth.ECHO_PREFIX + "drop-after-close"
    assert answered[1]["confidence"]["completeness"] == "full"
    # The closed request's answer, sent two seconds later to a closed socket, never shows up.
    assert "choices" not in closed[1]["data"]


def test_killed_clients_leave_the_sensor_pairing_the_next_client(sensor, module_hosts, test_pki):
    for i in range(3):
        dead = run(module_hosts, test_pki, {"mark": "drop-many-%d" % i, "delay_ms": 2000, "then": "die"})
        assert dead.returncode == -signal.SIGKILL
    alive = run(module_hosts, test_pki, {"mark": "drop-survivor", "then": "answer"},
                {"mark": "drop-survivor-2", "then": "answer"})
    assert alive.returncode == 0, alive.stderr
    events = sensor.wait_for_types(alive.pid, ai_request=2, ai_response=2)
    assert [(mark_of(q), answer_of(r)) for q, r in pairs(events)] == [
        ("drop-survivor", synth.ECHO_PREFIX + "drop-survivor"),
        ("drop-survivor-2", synth.ECHO_PREFIX + "drop-survivor-2")]
