"""Plain-HTTP connections through the real pipeline: records as bpf/sockets.c writes them (a
tagged connection identity, SetFd at connect, one DataChunk per syscall) become the same events as
TLS ones, saying they were read from the socket syscalls."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Tuple

import pytest

from oisp_daemon.capture import records as rec
from oisp_daemon.events.context import HostContext, ProcessCache
from oisp_daemon.pipeline import Pipeline
from tests.support.llm_fixtures import Fixture, header_items, load_fixture
from tests.support.oisp_schema import assert_valid_event

PID = 5151
FD = 7
PLAIN = (PID, rec.PLAIN_TAG | (3 << 32) | FD)
TLS = (PID, 0x7F00DEAD0000)
FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def request_bytes(fx: Fixture, host: str = "127.0.0.1:11434") -> bytes:
    head = ["%s %s HTTP/1.1" % (fx.method, fx.target), "Host: " + host, "Content-Length: %d" % len(fx.request_body)]
    head += ["%s: %s" % (k, v) for k, v in header_items(fx.request_headers) if k.lower() not in FRAMING]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + fx.request_body


def response_parts(fx: Fixture) -> List[bytes]:
    """The response as the replay server frames it: chunked, one chunk per NDJSON line, when
    streamed; with a Content-Length otherwise."""
    head = ["HTTP/1.1 %d %s" % (fx.status, fx.reason or "OK")]
    head += ["%s: %s" % (k, v) for k, v in header_items(fx.response_headers) if k.lower() not in FRAMING]
    if not fx.streaming:
        head.append("Content-Length: %d" % len(fx.response_body))
        return [("\r\n".join(head) + "\r\n\r\n").encode() + fx.response_body]
    head.append("Transfer-Encoding: chunked")
    lines = fx.response_body.splitlines(keepends=True)
    return [("\r\n".join(head) + "\r\n\r\n").encode()] + [b"%x\r\n%s\r\n" % (len(x), x) for x in lines] + [b"0\r\n\r\n"]


class Sockets:
    """Feeds a pipeline the records of bpf/sockets.c: one DataChunk per read/write syscall."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.seq: Dict[Tuple[int, int], int] = {}
        self.ts = time.monotonic_ns()

    def open(self, key=PLAIN, address: str = "127.0.0.1", port: int = 11434) -> None:
        fd = key[1] & 0xFFFFFFFF
        self.pipeline.handle(rec.Connect(key[0], fd, address, port, self.tick()))
        self.pipeline.handle(rec.SetFd(key[0], key[1], fd, self.tick()))

    def tick(self) -> int:
        self.ts += 1000
        return self.ts

    def call(self, direction: str, data: bytes, key=PLAIN) -> None:
        seq = self.seq[key] = self.seq.get(key, -1) + 1
        self.pipeline.handle(rec.DataChunk(direction=direction, pid=key[0], tid=key[0], uid=1000, ssl=key[1], seq=seq,
                                           total=len(data), offset=0, ts_ns=self.tick(), comm="client", data=data,
                                           read_failed=False))

    def close(self, key=PLAIN) -> None:
        self.pipeline.handle(rec.ConnEnd(key[0], key[1], self.tick()))


@pytest.fixture
def events() -> List[Dict[str, Any]]:
    return []


@pytest.fixture
def kernel() -> Dict[str, List[Tuple[int, int]]]:
    """What the pipeline asked of the kernel side: verdicts and forgotten connections."""
    return {"ignored": [], "forgotten": [], "skipped": []}


def make_pipeline(events, kernel, tmp_path, provider_hosts=None) -> Pipeline:
    host = HostContext(hostname="test", os="linux", arch="x86_64", kernel_version="6.18")
    return Pipeline(emit=events.append, provider_hosts=provider_hosts or {}, max_message_bytes=1 << 20,
                    idle_timeout_s=30, ignore_connection=lambda pid, ssl: kernel["ignored"].append((pid, ssl)),
                    forget_connection=lambda pid, ssl: kernel["forgotten"].append((pid, ssl)),
                    skip_reads=lambda pid, ssl, next_seq: kernel["skipped"].append((pid, ssl, next_seq)), host=host,
                    processes=ProcessCache(proc_root=str(tmp_path)))


@pytest.fixture
def sockets(events, kernel, tmp_path) -> Sockets:
    return Sockets(make_pipeline(events, kernel, tmp_path))


def by_type(events: List[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    return [e for e in events if e["event_type"] == kind]


@pytest.mark.parametrize("name", ["ollama-apichat-stream-001", "ollama-apigenerate-stream-001",
                                  "ollama-apichat-002", "ollama-apigenerate-001"])
def test_ollama_on_loopback_gives_plaintext_events_that_match_the_recording(name, sockets, events):
    fx = load_fixture(name)
    sockets.open()
    sockets.call("write", request_bytes(fx))
    for part in response_parts(fx):
        sockets.call("read", part)
    sockets.close()
    for event in events:
        assert_valid_event(event)
        assert event["source"]["capture_method"] == "ebpf_tracepoint"
        assert event["source"]["capture_point"] in ("socket_write", "socket_read")
        assert event["confidence"]["content_source"] == "plaintext_capture"
        assert "plaintext_capture" in event["confidence"]["reasons"]
        assert "tls_boundary_capture" not in event["confidence"]["reasons"]
    (request,), (response,) = by_type(events, "ai.request"), by_type(events, "ai.response")
    req, resp = request["data"], response["data"]
    assert req["provider"] == {"name": "ollama", "endpoint": "http://127.0.0.1:11434" + fx.path}
    assert req["model"]["id"] == fx.expect["request_model"] and req["streaming"] is fx.expect["streaming"]
    assert resp["model"]["id"] == fx.expect["model"]
    assert resp["usage"]["prompt_tokens"] == fx.expect["input_tokens"]
    assert resp["usage"]["completion_tokens"] == fx.expect["output_tokens"]
    assert resp["provider_finish_reason"] == fx.expect["finish_reason"]
    assert resp["choices"][0]["message"]["content"][:40] == fx.expect["text_prefix"]
    assert response["confidence"]["completeness"] == "full"
    if fx.expect["streaming"]:
        assert len(by_type(events, "ai.streaming_chunk")) > 1


def test_every_split_of_the_exchange_gives_the_same_answer(events, kernel, tmp_path):
    """The bytes of one syscall cut at every offset into two syscalls (short writes and reads)."""
    fx = load_fixture("ollama-apigenerate-001")
    request, (response,) = request_bytes(fx), response_parts(fx)
    for cut in range(1, len(request) + len(response)):
        del events[:]
        sockets = Sockets(make_pipeline(events, kernel, tmp_path))
        sockets.open()
        if cut == len(request):
            continue  # the unsplit exchange: the other tests
        if cut < len(request):
            sockets.call("write", request[:cut])
            sockets.call("write", request[cut:])
            sockets.call("read", response)
        else:
            sockets.call("write", request)
            sockets.call("read", response[:cut - len(request)])
            sockets.call("read", response[cut - len(request):])
        (answer,) = by_type(events, "ai.response")
        assert answer["data"]["choices"][0]["message"]["content"][:40] == fx.expect["text_prefix"], cut
        assert answer["confidence"]["completeness"] == "full", cut


def test_an_openai_shaped_server_on_a_configured_port_is_openai_compatible(sockets, events):
    fx = load_fixture("openai-chat-001")
    sockets.open(port=9000)
    sockets.call("write", request_bytes(fx, host="127.0.0.1:9000"))
    for part in response_parts(fx):
        sockets.call("read", part)
    (request,), (response,) = by_type(events, "ai.request"), by_type(events, "ai.response")
    assert request["data"]["provider"]["endpoint"] == "http://127.0.0.1:9000/v1/chat/completions"
    assert request["data"]["model"]["id"] == fx.expect["request_model"]
    assert response["data"]["usage"]["completion_tokens"] == fx.expect["output_tokens"]
    assert_valid_event(request)
    assert_valid_event(response)


def test_a_host_without_a_port_means_port_80_on_plain_http(events, kernel, tmp_path):
    fx = load_fixture("ollama-apichat-002")
    sockets = Sockets(make_pipeline(events, kernel, tmp_path, provider_hosts={"gpu-box:80": "ollama"}))
    sockets.open(address="10.0.0.5", port=80)
    sockets.call("write", request_bytes(fx, host="gpu-box"))
    sockets.call("read", response_parts(fx)[0])
    (request,) = by_type(events, "ai.request")
    assert request["data"]["provider"] == {"name": "ollama", "endpoint": "http://gpu-box" + fx.path}


def test_garbage_is_ignored_in_the_kernel_and_the_next_connection_is_decoded(sockets, events, kernel):
    sockets.open()
    sockets.call("write", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 8)
    sockets.call("read", b"\x15\x03\x03\x00\x02\x02\x28")
    sockets.close()
    assert events == [] and kernel["ignored"] == [PLAIN]
    fx = load_fixture("ollama-apichat-002")
    second = (PID, rec.PLAIN_TAG | (4 << 32) | FD)  # the same fd, a new connection
    sockets.open(second)
    sockets.call("write", request_bytes(fx), second)
    sockets.call("read", response_parts(fx)[0], second)
    assert [e["event_type"] for e in events] == ["ai.request", "ai.response"]


def test_a_process_exit_forgets_its_plain_connections_in_the_kernel(sockets, kernel):
    fx = load_fixture("ollama-apichat-002")
    sockets.open()
    sockets.call("write", request_bytes(fx))
    sockets.pipeline.handle(rec.SetFd(TLS[0], TLS[1], 9, sockets.tick()))
    sockets.pipeline.handle(rec.Exit(PID, sockets.tick()))
    assert kernel["forgotten"] == [PLAIN]


def test_plain_identities_never_look_like_pointers():
    assert rec.is_plain(PLAIN[1]) and not rec.is_plain(TLS[1])
    assert not rec.is_plain((1 << 47) - 1)  # the highest x86-64 user address


def test_a_connection_open_before_the_sensor_and_joined_mid_answer(sockets, events, kernel):
    """Seeded from /proc (no connect seen) while an answer was coming: the rest of it is skipped,
    the kernel asked to skip such reads while it has sent nothing unseen, and the next exchange
    is decoded whole."""
    old, fx = load_fixture("ollama-apichat-stream-001"), load_fixture("ollama-apichat-002")
    for part in response_parts(old)[2:]:
        sockets.call("read", part)
    skipped = len(response_parts(old)) - 2
    assert kernel["skipped"] == [(PID, PLAIN[1], seq + 1) for seq in range(skipped)] and events == []
    sockets.call("write", request_bytes(fx))
    for part in response_parts(fx):
        sockets.call("read", part)
    (request,), (response,) = by_type(events, "ai.request"), by_type(events, "ai.response")
    assert request["data"]["provider"] == {"name": "ollama", "endpoint": "http://127.0.0.1:11434" + fx.path}
    assert response["data"]["usage"]["completion_tokens"] == fx.expect["output_tokens"]
    assert len(kernel["skipped"]) == skipped and kernel["ignored"] == []
    assert sockets.pipeline.counters()["http1_joined_midway"] == 1
