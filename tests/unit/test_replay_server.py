"""The replay server and its client side: what real clients get must be exactly the recording.

Pure tests cover request parsing, fixture choice and stream splitting; the rest start the server
process and drive it with the real SDK client programs, curl and http.client (no BPF involved).
"""
from __future__ import annotations

import http.client
import io
import json
import socket
import ssl
import subprocess
from pathlib import Path
from typing import List

import pytest

from tests.support import clients
from tests.support import synthetic_bodies as synth
from tests.support.hostsns import check_resolver
from tests.support.llm_fixtures import load_fixture, load_fixtures
from tests.support.replay_process import NON_AI_HOST
from tests.support.replay_server import (Request, accepts_gzip, build_reply, choose_fixture, read_request,
                                         split_stream_body)


@pytest.fixture(scope="module")
def fixtures():
    return load_fixtures()


class FakeSocket:
    def __init__(self) -> None:
        self.sent: List[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """http.client connection to a fixed address that still uses the provider name for SNI/Host."""

    def __init__(self, address: str, host: str, context: ssl.SSLContext) -> None:
        super().__init__(host, 443, context=context, timeout=20)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), timeout=self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _post(fixture_name: str, body: bytes = b"{}", **headers: str) -> Request:
    items = [("Host", "api.openai.com"), ("Content-Type", "application/json")] + list(headers.items())
    if fixture_name:
        items.append(("X-Fixture", fixture_name))
    return Request("POST", "/v1/chat/completions", "HTTP/1.1", items, body)


# --- pure -----------------------------------------------------------------------------------


def test_read_request_decodes_chunked_body_after_100_continue():
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nExpect: 100-continue\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    sock = FakeSocket()
    request = read_request(io.BytesIO(raw), sock)
    assert request is not None
    assert (request.method, request.path, request.host, request.body) == (
        "POST", "/v1/chat/completions", "api.openai.com", b"hello world")
    assert sock.sent == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_read_request_returns_none_on_clean_close():
    assert read_request(io.BytesIO(b""), FakeSocket()) is None


@pytest.mark.parametrize("header, expected", [
    ("gzip, deflate", True), ("deflate, gzip;q=0.5", True), ("gzip;q=0", False), ("identity", False), (None, False),
])
def test_accepts_gzip(header, expected):
    assert accepts_gzip(header) is expected


def test_sse_body_is_split_into_whole_events(fixtures):
    fixture = fixtures["openai-chat-stream-002"]
    parts = split_stream_body(fixture.response_content_type, fixture.response_body)
    assert b"".join(parts) == fixture.response_body
    assert len(parts) == fixture.response_body.count(b"\n\n")
    assert all(part.startswith(b"data: ") and part.endswith(b"\n\n") for part in parts)


def test_eventstream_body_is_split_at_message_boundaries(fixtures):
    fixture = fixtures["bedrock-converse-stream-001"]
    parts = split_stream_body(fixture.response_content_type, fixture.response_body)
    assert b"".join(parts) == fixture.response_body and len(parts) > 1
    assert all(int.from_bytes(part[:4], "big") == len(part) for part in parts)


def test_fixture_choice_prefers_identical_body_then_stream_flag(fixtures):
    exact = fixtures["openai-chat-002"]
    assert choose_fixture(fixtures, _post("", exact.request_body)).name == "openai-chat-002"
    streamed = choose_fixture(fixtures, _post("", json.dumps({"model": "gpt-4", "stream": True}).encode()))
    assert streamed.streaming and streamed.path == "/v1/chat/completions"
    assert choose_fixture(fixtures, Request("POST", "/nowhere", "HTTP/1.1", [], b"")) is None


def test_fixture_reply_drops_recorded_framing_headers(fixtures):
    reply = build_reply(fixtures, _post("openai-chat-001"))
    names = {name.lower() for name, _ in reply.headers}
    assert not names & {"transfer-encoding", "content-length", "content-encoding", "connection"}
    assert reply.compressible and reply.body == fixtures["openai-chat-001"].response_body


def test_unknown_fixture_name_is_a_404():
    reply = build_reply({}, _post("no-such-fixture"))
    assert reply.status == 404 and b"replay_no_fixture" in reply.body


def test_echo_chat_answers_with_the_user_message():
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "pair-x-07: hi"}]}).encode()
    parsed = json.loads(build_reply({}, _post(synth.ECHO_CHAT, body)).body)
    assert parsed["choices"][0]["message"]["content"] == "echo: pair-x-07: hi"
    stream_body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b"}]}).encode()
    stream = build_reply({}, _post(synth.ECHO_CHAT, stream_body))
    assert stream.streaming and stream.parts[-1] == b"data: [DONE]\n\n"


def test_deterministic_text_is_reproducible_json_safe_ascii():
    text = synth.deterministic_text(100000, "s")
    assert text == synth.deterministic_text(100000, "s") != synth.deterministic_text(100000, "t")
    assert len(text.encode()) == 100000 and json.dumps(text) == '"%s"' % text


# --- against the running server --------------------------------------------------------------


def test_openai_sdk_gets_gzip_fixture_body_exactly(replay_server, hosts_ns, test_pki):
    fixture = load_fixture("openai-chat-001")
    summary = clients.run_client(hosts_ns, clients.openai_client(fixture.name, test_pki.ca_file)).check()
    assert summary["response"]["body_sha256"] == synth.sha256_hex(fixture.response_body)
    assert summary["result"]["text"] == fixture.expect["text_prefix"]
    record = replay_server.wait_for_requests(1)[0]
    assert record["fixture"] == fixture.name and record["response_content_encoding"] == "gzip"
    assert record["alpn"] == "http/1.1" and record["host"] == "api.openai.com"
    assert record["body_sha256"] == summary["requests"][0]["body_sha256"]
    assert json.loads(record["body_text"])["model"] == fixture.request_json()["model"]


def test_openai_sdk_stream_arrives_chunked_and_complete(replay_server, hosts_ns, test_pki):
    fixture = load_fixture("openai-chat-stream-002")
    result = clients.run_client(hosts_ns, clients.openai_client(fixture.name, test_pki.ca_file, raw=True))
    assert result.check()["response"]["body_sha256"] == synth.sha256_hex(fixture.response_body)
    record = replay_server.wait_for_requests(1)[0]
    assert record["response_streaming"] and record["response_chunks"] == fixture.response_body.count(b"\n\n")


def test_anthropic_sdk_stream_is_parsed_like_the_recording(replay_server, hosts_ns, test_pki):
    fixture = load_fixture("anthropic-messages-stream-tools-002")
    result = clients.run_client(hosts_ns, clients.anthropic_client(fixture.name, test_pki.ca_file)).check()["result"]
    assert result["tool_calls"] == fixture.expect["tool_calls"]
    assert result["finish_reason"] == fixture.expect["finish_reason"]
    assert result["model"] == fixture.expect["model"]


def test_sdk_without_fixture_header_is_matched_by_path_and_body(replay_server, hosts_ns, test_pki):
    fixture = load_fixture("openai-responses-stream-002")
    argv = clients.openai_client(fixture.name, test_pki.ca_file, fixture_header=False)
    assert clients.run_client(hosts_ns, argv).check()["result"]["chunks"] > 1
    chosen = load_fixture(replay_server.wait_for_requests(1)[0]["fixture"])
    assert chosen.path == "/v1/responses" and chosen.streaming
    assert chosen.request_json()["model"] == fixture.request_json()["model"]


@pytest.mark.parametrize("name, compressed", [
    ("anthropic-messages-001", True), ("anthropic-messages-001", False), ("gemini-generate-stream-001", True),
])
def test_curl_gets_fixture_body_exactly(replay_server, hosts_ns, test_pki, tmp_path, name, compressed):
    fixture = load_fixture(name)
    command = clients.curl_command(fixture, test_pki.ca_file, tmp_path, compressed=compressed)
    result = hosts_ns.run(command.argv)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["response_code"] == fixture.status
    assert command.output() == fixture.response_body
    record = replay_server.wait_for_requests(1)[0]
    assert record["body_sha256"] == synth.sha256_hex(fixture.request_body)
    gzipped = compressed and fixture.decoded_from == "gzip"
    assert record["response_content_encoding"] == ("gzip" if gzipped else None)
    head = command.headers_file.read_text().lower()
    assert ("transfer-encoding: chunked" in head) is fixture.streaming


def test_keep_alive_serves_many_requests_on_one_connection(replay_server, test_pki):
    connection = PinnedHTTPSConnection(replay_server.host, "api.openai.com", test_pki.client_context())
    fixture = load_fixture("openai-embeddings-001")
    for _ in range(3):
        connection.request("POST", "/v1/embeddings", body=fixture.request_body, headers={"X-Fixture": fixture.name})
        assert connection.getresponse().read() == fixture.response_body
    chunked = iter([b'{"model":', b'"x"}'])
    connection.request("POST", "/bench/echo-sha256", body=chunked, encode_chunked=True,
                       headers={"Expect": "100-continue"})
    assert json.loads(connection.getresponse().read()) == {"sha256": synth.sha256_hex(b'{"model":"x"}'), "bytes": 13}
    connection.close()
    records = replay_server.wait_for_requests(4)
    assert len({record["conn"] for record in records}) == 1


def test_client_that_drops_the_connection_does_not_stop_the_server(replay_server, test_pki):
    context = test_pki.client_context()
    with socket.create_connection((replay_server.host, replay_server.port)) as raw:
        tls = context.wrap_socket(raw, server_hostname=NON_AI_HOST)
        tls.sendall(b"GET /big?bytes=20000000&seed=drop HTTP/1.1\r\nHost: %s\r\n\r\n" % NON_AI_HOST.encode())
        assert tls.recv(100).startswith(b"HTTP/1.1 200")
        tls.close()
    with socket.create_connection((replay_server.host, replay_server.port)) as raw:
        raw.sendall(b"not TLS at all\r\n\r\n")
    connection = PinnedHTTPSConnection(replay_server.host, NON_AI_HOST, context)
    connection.request("GET", "/big?bytes=1000&seed=after")
    assert connection.getresponse().read() == synth.deterministic_bytes(1000, "after")
    assert replay_server.process.poll() is None


def test_non_ai_download_with_curl(replay_server, hosts_ns, test_pki, tmp_path):
    out = tmp_path / "download.bin"
    argv = ["curl", "-sS", "--http1.1", "--cacert", str(test_pki.ca_file), "-o", str(out),
            "https://%s/big?bytes=3000000&seed=neg" % NON_AI_HOST]
    assert hosts_ns.run(argv).returncode == 0
    assert synth.sha256_hex(out.read_bytes()) == synth.sha256_hex(synth.deterministic_bytes(3000000, "neg"))


def test_concurrent_client_pairs_every_request_with_its_response(replay_server, hosts_ns, test_pki):
    summary = clients.run_client(hosts_ns, clients.concurrent_client(test_pki.ca_file, run_id="t1")).check()
    results = summary["results"]
    assert summary["threads"] == 1 and len(results) == 20
    assert all(entry["text"] == "echo: %s: what is %d plus %d?" % (entry["mark"], entry["index"], entry["index"])
               for entry in results)
    records = replay_server.wait_for_requests(20)
    assert len({record["conn"] for record in records}) == 20
    assert {r["body_sha256"] for r in records} == {entry["request_body_sha256"] for entry in results}


def test_big_client_response_matches_the_computed_body(replay_server, hosts_ns, test_pki):
    summary = clients.run_client(hosts_ns, clients.big_client(test_pki.ca_file, seed="unit")).check()
    expected = synth.big_chat_response(summary["model"], summary["request"]["body_sha256"],
                                       summary["request"]["body_len"], 4 << 20, "unit")
    assert summary["response"]["body_sha256"] == synth.sha256_hex(expected)
    assert summary["content_len"] == 4 << 20 and summary["request"]["body_len"] > 1 << 20
    assert replay_server.wait_for_requests(1)[0]["body_sha256"] == summary["request"]["body_sha256"]


def test_hosts_namespace_resolves_provider_names_to_the_server(replay_server, hosts_ns):
    assert hosts_ns.run(["getent", "hosts", "api.openai.com"]).stdout.split()[0].decode() == replay_server.host
    probe = "import socket; print(socket.gethostbyname('api.anthropic.com'))"
    python = hosts_ns.run([str(clients.VENV_PYTHON), "-c", probe])
    assert python.stdout.decode().strip() == replay_server.host
    outside = subprocess.run(["getent", "hosts", "api.openai.com"], stdout=subprocess.PIPE)
    assert replay_server.host.encode() not in outside.stdout


def test_hosts_namespace_pid_is_the_client_pid(hosts_ns):
    result = hosts_ns.run(["sh", "-c", "echo $$"])
    assert int(result.stdout) == result.pid


def test_resolver_check_rejects_dns_before_files(tmp_path: Path):
    nsswitch = tmp_path / "nsswitch.conf"
    nsswitch.write_text("passwd: files\nhosts: dns files\n")
    with pytest.raises(RuntimeError, match="dns"):
        check_resolver(nsswitch)
    nsswitch.write_text("hosts:          files dns\n")
    check_resolver(nsswitch)
