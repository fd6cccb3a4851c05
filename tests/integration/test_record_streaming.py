"""Live streams under real eBPF: chunk events appear while the answer is still being written.

The replay server holds the stream back after its first events (X-Replay-Hold) until the test has
seen those events' `ai.streaming_chunk` lines in the sensor's JSONL output and the client is still
waiting; only then is the rest released. A client that abandons a held stream (closes its
connection, or is killed) must give a partial `ai.response` with `client_abort` first and the
underlying cause after it.

The client is a small raw HTTP/1.1-over-TLS program on the system Python (linked to the libssl
the sensor hooks), so that the test decides when it reads, closes or dies.
"""
from __future__ import annotations

import signal
import time
import uuid
from typing import Any, Dict, List

import pytest

from tests.support import clients
from tests.support import synthetic_bodies as synth
from tests.support.oisp_schema import assert_valid_event

pytestmark = pytest.mark.bpf

HELD_EVENTS = 3  # the role, "echo:" and the first word come before the hold
HOLD_S = 0.6

# argv: ca_file, mark, hold token, then: "answer" (read it all), "close" (close the connection
# after the held events), "die" (SIGKILL itself after them).
CLIENT = r'''
import json, os, signal, socket, ssl, sys, time
ca, mark, token, then = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                   "messages": [{"role": "user", "content": mark}]}).encode()
head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
        "Authorization: Bearer sk-replay-test-0123456789abcdef\r\nContent-Type: application/json\r\n"
        "X-Fixture: @echo-chat\r\nX-Replay-Hold: %s\r\nX-Replay-Hold-After: %s\r\nContent-Length: %d\r\n\r\n"
        % (token, sys.argv[5], len(body)))
tls = ctx.wrap_socket(socket.create_connection(("api.openai.com", 443)), server_hostname="api.openai.com")
tls.sendall(head.encode() + body)
data = b""
while True:
    if then == "answer" and data.endswith(b"0\r\n\r\n"):
        break
    if then != "answer" and data.partition(b"\r\n\r\n")[2].count(b"data: ") >= int(sys.argv[5]):
        break
    piece = tls.recv(65536)
    if not piece:
        break
    data += piece
if then == "close":
    time.sleep(0.3)
    tls.close()  # SSL_free mid-stream: the answer is abandoned
    time.sleep(0.5)
elif then == "die":
    os.kill(os.getpid(), signal.SIGKILL)
print(json.dumps({"bytes": len(data)}))
'''


def start(module_hosts, test_pki, mark: str, token: str, then: str):
    argv = [str(clients.VENV_PYTHON), "-c", CLIENT, str(test_pki.ca_file), mark, token, then, str(HELD_EVENTS)]
    return clients.start_client(module_hosts, argv)


def of_type(events: List[Dict[str, Any]], event_type: str) -> List[Dict[str, Any]]:
    return [e for e in events if e["event_type"] == event_type]


@pytest.fixture
def token(module_server):
    """A hold token for one test; released at the end whatever happened, so no server thread
    is left waiting."""
    value = "t" + uuid.uuid4().hex
    yield value
    module_server.release(value)


def wait_for_held_chunks(sensor, pid: int) -> List[Dict[str, Any]]:
    return sensor.wait_for(lambda evs: len(of_type(evs, "ai.streaming_chunk")) >= HELD_EVENTS, pid=pid)


def test_chunks_are_emitted_while_the_stream_is_held(sensor, module_server, module_hosts, test_pki, token):
    mark = "a live stream of several words"
    client = start(module_hosts, test_pki, mark, token, "answer")
    try:
        seen = wait_for_held_chunks(sensor, client.pid)
        # The sensor wrote them while the rest of the stream had not even been sent.
        assert client.poll() is None, "the client is still waiting for the held stream"
        assert not of_type(seen, "ai.response")
        assert len(of_type(seen, "ai.streaming_chunk")) == HELD_EVENTS
        time.sleep(HOLD_S)
    finally:
        module_server.release(token)
    result = clients.finish_client(client, timeout=60)
    assert result.returncode == 0, result.stderr
    events = sensor.wait_for_types(client.pid, ai_request=1, ai_response=1)
    for event in events:
        assert_valid_event(event)
    (request,) = of_type(events, "ai.request")
    (response,) = of_type(events, "ai.response")
    chunks = of_type(events, "ai.streaming_chunk")
    assert [c["data"]["chunk_index"] for c in chunks] == list(range(len(chunks)))
    assert all(c["data"]["request_id"] == request["data"]["request_id"] for c in chunks)
    assert all(c["related_events"][0]["event_id"] == request["event_id"] for c in chunks)
    assert all(c["process"]["pid"] == client.pid for c in chunks)
    text = "".join(c["data"]["delta"].get("content", "") for c in chunks)
    assert text == synth.ECHO_PREFIX + mark == response["data"]["choices"][0]["message"]["content"]
    stamps = [c["ts_mono"] for c in chunks]
    assert stamps == sorted(stamps) and request["ts_mono"] < stamps[0] and stamps[-1] <= response["ts_mono"]
    # Kernel times of the reads: the hold lies between the last held chunk and the next one.
    held_gap_ms = (stamps[HELD_EVENTS] - stamps[HELD_EVENTS - 1]) / 1e6
    assert held_gap_ms >= HOLD_S * 1000
    attrs = response["attrs"]
    assert attrs["stream_chunks"] == len(chunks)
    assert attrs["inter_chunk_latency_max_ms"] >= held_gap_ms - 0.001
    assert 0 <= attrs["inter_chunk_latency_p50_ms"] < HOLD_S * 1000
    assert 0 <= response["data"]["time_to_first_token_ms"] <= response["data"]["latency_ms"]
    assert response["confidence"]["completeness"] == "full"


@pytest.mark.parametrize("then,cause", [("close", "connection_closed"), ("die", "process_exit")])
def test_a_client_abandoning_a_held_stream_is_client_abort(sensor, module_server, module_hosts, test_pki,
                                                           token, then, cause):
    mark = "an abandoned stream of words"
    client = start(module_hosts, test_pki, mark, token, then)
    wait_for_held_chunks(sensor, client.pid)
    result = clients.finish_client(client, timeout=60)
    assert result.returncode == (0 if then == "close" else -signal.SIGKILL), result.stderr
    events = sensor.wait_for_types(client.pid, ai_request=1, ai_response=1)
    for event in events:
        assert_valid_event(event)
    (response,) = of_type(events, "ai.response")
    assert response["confidence"]["completeness"] == "partial"
    assert response["confidence"]["limitations"] == ["client_abort", cause]
    assert response["data"]["status_code"] == 200 and response["data"]["streaming"] is True
    assert response["data"]["choices"][0]["message"]["content"] == synth.ECHO_PREFIX + mark.split()[0]
    assert len(of_type(events, "ai.streaming_chunk")) == HELD_EVENTS
