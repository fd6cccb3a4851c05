"""Connection tracker: request-first emission, FIFO pairing, unanswered requests, lifecycle."""
from __future__ import annotations

import json

import pytest

from oisp_daemon.decode import http1
from oisp_daemon.decode.connection import ConnectionTracker, Exchange
from oisp_daemon.decode.http1 import MAX_PENDING_RESPONSES
from oisp_daemon.decode.sse import parse_sse
from tests.support.paths import FIXTURES_DIR

KEY = (1234, 0x7F0000001000)
OTHER = (1234, 0x7F0000002000)
FIXTURE = str(FIXTURES_DIR / "openai-chat-stream-003.json")


def get(target: str) -> bytes:
    return b"GET " + target.encode() + b" HTTP/1.1\r\nHost: api.example\r\n\r\n"


def post(target: str, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (target.encode(), len(body), body)


def ok(body: bytes, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


@pytest.fixture
def tracker() -> ConnectionTracker:
    return ConnectionTracker(max_body_bytes=1 << 20, idle_timeout_s=10)


def pairs(exchanges):
    return [(e.request.target, e.response.body if e.response else None) for e in exchanges]


def test_request_goes_out_before_its_response(tracker):
    (first,) = tracker.on_data(KEY, "write", post("/v1/chat", b"{}"), 10)
    assert first == Exchange(KEY, first.request, None)
    assert first.request.body == b"{}" and first.request.ts_start_ns == 10
    (second,) = tracker.on_data(KEY, "read", ok(b"answer"), 20)
    assert second.request is first.request
    assert (second.response.status, second.response.body, second.response.ts_end_ns) == (200, b"answer", 20)
    assert tracker.connection_count() == 1 and tracker.protocol_of(KEY) == "http/1.1"


def test_pipelined_requests_pair_in_order(tracker):
    out = tracker.on_data(KEY, "write", get("/a") + get("/b") + get("/c"), 1)
    assert pairs(out) == [("/a", None), ("/b", None), ("/c", None)]
    out = tracker.on_data(KEY, "read", ok(b"A") + ok(b"B")[:20], 2)
    out += tracker.on_data(KEY, "read", ok(b"B")[20:] + ok(b"C"), 3)
    assert pairs(out) == [("/a", b"A"), ("/b", b"B"), ("/c", b"C")]


def test_head_response_has_no_body_so_next_response_pairs(tracker):
    tracker.on_data(KEY, "write", b"HEAD /x HTTP/1.1\r\n\r\n" + get("/y"), 1)
    out = tracker.on_data(KEY, "read", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n" + ok(b"Y"), 2)
    assert pairs(out) == [("/x", b""), ("/y", b"Y")]


def test_early_response_waits_for_its_request_to_end(tracker):
    request = post("/upload", b"x" * 100)
    assert tracker.on_data(KEY, "write", request[:60], 1) == []
    assert tracker.on_data(KEY, "read", ok(b"too large", b"413 Payload Too Large"), 2) == []
    out = tracker.on_data(KEY, "write", request[60:], 3)
    assert [(e.request.target, e.response and e.response.status) for e in out] == [
        ("/upload", None), ("/upload", 413)]


def test_interim_continue_is_not_paired(tracker):
    tracker.on_data(KEY, "write", post("/v1/x", b"body"), 1)
    out = tracker.on_data(KEY, "read", b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done"), 2)
    assert pairs(out) == [("/v1/x", b"done")]


def test_orphan_response_is_dropped_and_counted(tracker):
    assert tracker.on_data(KEY, "read", ok(b"who asked?"), 1) == []
    assert tracker.stats["orphan_responses"] == 1


def test_close_pairs_unanswered_requests_with_a_partial_record(tracker):
    tracker.on_data(KEY, "write", get("/answered") + get("/waiting") + post("/half", b"abcdef")[:-2], 1)
    tracker.on_data(KEY, "read", ok(b"yes"), 2)
    out = tracker.on_close(KEY, 9)
    assert [(e.request.target, e.request.complete, e.response and e.response.status) for e in out] == [
        ("/half", False, None), ("/waiting", True, 0), ("/half", False, 0)]
    synthetic = out[1].response
    assert synthetic.partial_reasons == ["no_response", "connection_closed"]
    assert (synthetic.ts_start_ns, synthetic.ts_end_ns, synthetic.headers, synthetic.body) == (9, 9, [], b"")
    assert out[0].request.partial_reasons == ["connection_closed"]
    assert tracker.stats["unanswered_requests"] == 2 and tracker.connection_count() == 0


def test_close_completes_a_read_until_close_response(tracker):
    tracker.on_data(KEY, "write", get("/stream"), 1)
    assert tracker.on_data(KEY, "read", b"HTTP/1.0 200 OK\r\n\r\npart1 ", 2) == []
    assert tracker.on_data(KEY, "read", b"part2", 3) == []
    (exchange,) = tracker.on_close(KEY, 4)
    assert exchange.response.complete and exchange.response.body == b"part1 part2"


def test_process_exit_releases_only_that_process(tracker):
    tracker.on_data(KEY, "write", get("/mine"), 1)
    tracker.on_data((99, 1), "write", get("/other"), 1)
    out = tracker.on_process_exit(KEY[0], 5)
    assert [(e.request.target, e.response.partial_reasons) for e in out] == [
        ("/mine", ["no_response", "process_exit"])]
    assert tracker.connection_count() == 1


def test_process_exit_leaves_read_until_close_partial(tracker):
    tracker.on_data(KEY, "write", get("/s"), 1)
    tracker.on_data(KEY, "read", b"HTTP/1.1 200 OK\r\n\r\nabc", 2)
    (exchange,) = tracker.on_process_exit(KEY[0], 3)
    assert exchange.response.status == 200 and exchange.response.partial_reasons == ["process_exit"]


def test_expire_idle_releases_idle_connections_only(tracker):
    tracker.on_data(KEY, "write", get("/idle"), 1_000_000_000)
    tracker.on_data(OTHER, "write", get("/busy"), 9_000_000_000)
    assert tracker.expire_idle(10_000_000_000) == []
    out = tracker.expire_idle(12_000_000_000)
    assert [(e.request.target, e.response.partial_reasons) for e in out] == [
        ("/idle", ["no_response", "idle_timeout"])]
    assert tracker.connection_count() == 1 and tracker.stats["expired_connections"] == 1


def test_ignored_connection_drops_data_until_close(tracker):
    tracker.on_data(KEY, "write", get("/a"), 1)
    tracker.ignore(KEY)
    assert tracker.connection_count() == 0 and tracker.protocol_of(KEY) is None
    assert tracker.on_data(KEY, "read", ok(b"A"), 2) == []
    assert tracker.on_data(KEY, "write", get("/b"), 3) == []
    assert tracker.on_close(KEY, 4) == []
    assert tracker.stats["ignored_bytes"] == len(ok(b"A")) + len(get("/b"))
    # The pointer is reused by a new connection after close: tracked again.
    assert pairs(tracker.on_data(KEY, "write", get("/c"), 5)) == [("/c", None)]


def test_ignored_connection_expires_when_idle(tracker):
    tracker.ignore(KEY)
    tracker.on_data(KEY, "write", b"\x00" * 10, 1_000_000_000)
    tracker.expire_idle(20_000_000_000)
    assert pairs(tracker.on_data(KEY, "write", get("/new"), 20_000_000_001)) == [("/new", None)]


def test_http2_preface_is_reported_and_not_decoded(tracker):
    assert tracker.protocol_of(KEY) is None
    assert tracker.on_data(KEY, "write", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", 1) == []
    assert tracker.protocol_of(KEY) == "unknown:http2_preface"
    assert tracker.on_data(KEY, "read", b"\x00\x00\x06\x04\x00\x00\x00\x00\x00", 2) == []
    assert tracker.stats["orphan_responses"] == 0


def test_upgrade_stops_decoding_both_directions(tracker):
    tracker.on_data(KEY, "write", b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 1)
    (exchange,) = tracker.on_data(KEY, "read", b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x02hi", 2)
    assert exchange.response.status == 101
    assert tracker.protocol_of(KEY) == "unknown:upgrade"
    assert tracker.on_data(KEY, "write", get("/looks-like-http"), 3) == []


def test_response_gap_gives_partial_response_and_pairing_continues(tracker):
    tracker.on_data(KEY, "write", get("/a") + get("/b"), 1)
    tracker.on_data(KEY, "read", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst", 2)
    (partial,) = tracker.on_gap(KEY, "read", 3)
    assert partial.request.target == "/a" and partial.response.partial_reasons == ["gap"]
    (nxt,) = tracker.on_data(KEY, "read", b"lost tail\r\n" + ok(b"B"), 4)
    assert (nxt.request.target, nxt.response.body) == ("/b", b"B")


def test_gap_before_first_data_is_not_a_protocol_error(tracker):
    assert tracker.on_gap(KEY, "write", 1) == []
    out = tracker.on_data(KEY, "write", b"rest of an upload\r\n" + get("/next"), 2)
    assert pairs(out) == [("/next", None)] and tracker.protocol_of(KEY) == "http/1.1"


def test_too_many_pending_requests_are_answered_synthetically(tracker):
    n = MAX_PENDING_RESPONSES + 6
    out = tracker.on_data(KEY, "write", b"".join(get("/%d" % i) for i in range(n)), 1)
    unanswered = [e for e in out if e.response is not None]
    assert [e.request.target for e in unanswered] == ["/%d" % i for i in range(6)]
    assert all(e.response.partial_reasons == ["no_response", "too_many_pending"] for e in unanswered)
    assert pairs(tracker.on_data(KEY, "read", ok(b"R"), 2)) == [("/6", b"R")]


def test_decoder_failure_costs_only_that_connection(tracker, monkeypatch):
    tracker.on_data(OTHER, "write", get("/fine"), 1)

    def broken_feed(self, data, ts_ns):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(http1.Http1Parser, "feed", broken_feed)
    assert tracker.on_data(KEY, "write", get("/x"), 2) == []
    assert tracker.stats["decode_failures"] == 1 and tracker.connection_count() == 1
    monkeypatch.undo()
    assert tracker.on_data(KEY, "write", get("/y"), 3) == []  # ignored until closed
    assert pairs(tracker.on_data(OTHER, "read", ok(b"F"), 4)) == [("/fine", b"F")]


def test_direction_must_be_read_or_write(tracker):
    with pytest.raises(ValueError):
        tracker.on_data(KEY, "sideways", b"", 1)
    with pytest.raises(ValueError):
        tracker.on_gap(KEY, "both", 1)


def test_recorded_streaming_exchange_through_tls_sized_pieces(tracker):
    with open(FIXTURE) as f:
        recorded = json.load(f)
    req_body = recorded["request"]["body"].encode()
    resp_body = recorded["response"]["body"].encode()
    request = post("/v1/chat/completions", req_body)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    events = [e + b"\n\n" for e in resp_body.split(b"\n\n") if e]
    out = tracker.on_data(KEY, "write", request[:100], 1) + tracker.on_data(KEY, "write", request[100:], 2)
    assert len(out) == 1 and out[0].request.body == req_body
    out = tracker.on_data(KEY, "read", head, 10)
    for n, event in enumerate(events):
        out += tracker.on_data(KEY, "read", b"%x\r\n%s\r\n" % (len(event), event), 11 + n)
    out += tracker.on_data(KEY, "read", b"0\r\n\r\n", 100)
    (exchange,) = out
    response = exchange.response
    assert response.complete and response.body == b"".join(events)
    assert (response.ts_start_ns, response.ts_end_ns) == (10, 100)
    parsed = parse_sse(response.body)
    assert [response.ts_at_offset(e.offset - 1) for e in parsed] == list(range(11, 11 + len(parsed)))
