"""Connection tracker: request-first emission, FIFO pairing, every way an exchange can end."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oisp_daemon.decode import http1
from oisp_daemon.decode.connection import ConnectionTracker
from oisp_daemon.decode.http1 import MAX_PENDING_RESPONSES
from oisp_daemon.decode.protocol import RequestDone, ResponseDone, SkippingReads, Stopped
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


def pairs(steps):
    """(target, None) for a RequestDone, (target, body or "none:<why>") for a ResponseDone."""
    out = []
    for step in steps:
        if isinstance(step, RequestDone):
            out.append((step.exchange.request.target, None))
        elif isinstance(step, ResponseDone):
            ex = step.exchange
            out.append((ex.request.target, ex.response.body if ex.response else "none:" + ex.ended))
    return out


def responses(steps):
    return [s.exchange for s in steps if isinstance(s, ResponseDone)]


def test_request_goes_out_before_its_response(tracker):
    (first,) = tracker.on_data(KEY, "write", post("/v1/chat", b"{}"), 10)
    assert isinstance(first, RequestDone) and first.exchange.response is None
    request = first.exchange.request
    assert request.body == b"{}" and request.ts_start_ns == 10 and first.exchange.key == KEY
    (second,) = tracker.on_data(KEY, "read", ok(b"answer"), 20)
    assert isinstance(second, ResponseDone) and second.exchange is first.exchange
    response = second.exchange.response
    assert (response.status, response.body, response.ts_end_ns) == (200, b"answer", 20)
    assert second.exchange.ended is None
    assert tracker.connection_count() == 1


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
    assert [type(s) for s in out] == [RequestDone, ResponseDone]
    assert out[0].exchange is out[1].exchange and out[1].exchange.response.status == 413


def test_interim_continue_is_not_paired(tracker):
    tracker.on_data(KEY, "write", post("/v1/x", b"body"), 1)
    out = tracker.on_data(KEY, "read", b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done"), 2)
    assert pairs(out) == [("/v1/x", b"done")]


def test_orphan_response_is_dropped_and_counted(tracker):
    tracker.on_data(KEY, "write", get("/a"), 1)
    tracker.on_data(KEY, "read", ok(b"A"), 2)
    assert tracker.on_data(KEY, "read", ok(b"who asked?"), 3) == []
    assert tracker.stats.orphan_responses == 1


# -- joined mid-way: the sensor started while a keep-alive connection was answering -------------

SSE_TAIL = b'a1\r\ndata: {"choices": [{"delta": {"content": "lo"}}]}\r\n\r\n\r\n'


@pytest.mark.parametrize("first", [SSE_TAIL, ok(b"who asked?"), b"x"], ids=["body", "response", "byte"])
def test_a_connection_that_reads_first_is_skipped_to_its_next_request(tracker, first):
    assert tracker.on_data(KEY, "read", first, 1) == [SkippingReads(KEY)]  # the kernel may skip them too
    assert tracker.on_data(KEY, "read", b"0\r\n\r\n", 2) == [SkippingReads(KEY)]
    assert pairs(tracker.on_data(KEY, "write", get("/next"), 3)) == [("/next", None)]
    assert pairs(tracker.on_data(KEY, "read", ok(b"N"), 4)) == [("/next", b"N")]
    assert tracker.stats.http1_joined_midway == 1 and tracker.stats.orphan_responses == 0
    assert tracker.stats.skipped_bytes == len(first) + 5 and tracker.stats.stopped_connections == 0


def test_reads_held_as_a_possible_http2_frame_are_skipped_at_the_next_request(tracker):
    assert tracker.on_data(KEY, "read", b"\x00", 1) == []  # 1 byte: an HTTP/2 frame header, perhaps
    assert tracker.on_data(KEY, "read", b"0\r\n\r\n", 2) == []
    assert pairs(tracker.on_data(KEY, "write", get("/next"), 3)) == [("/next", None)]
    assert pairs(tracker.on_data(KEY, "read", ok(b"N"), 4)) == [("/next", b"N")]
    assert tracker.stats.http1_joined_midway == 1 and tracker.stats.skipped_bytes == 6


def test_the_next_request_of_a_connection_joined_midway_may_come_in_pieces(tracker):
    tracker.on_data(KEY, "read", SSE_TAIL, 1)
    request = post("/v1/chat/completions", b'{"model": "m"}')
    out = []
    for at in range(len(request)):
        out += tracker.on_data(KEY, "write", request[at:at + 1], 2 + at)
    assert pairs(out) == [("/v1/chat/completions", None)]
    assert out[0].exchange.request.body == b'{"model": "m"}'


def test_a_body_joined_midway_that_looks_like_http2_frames_stays_skipped(tracker):
    tracker.on_data(KEY, "read", SSE_TAIL, 1)
    assert tracker.on_data(KEY, "read", b"\x00\x00\x00\x04\x01\x00\x00\x00\x00", 2) == [SkippingReads(KEY)]
    assert tracker.stats.http2_joined_midway == 0
    assert pairs(tracker.on_data(KEY, "write", get("/next"), 3)) == [("/next", None)]


def test_a_gap_while_skipping_keeps_skipping(tracker):
    tracker.on_data(KEY, "read", SSE_TAIL, 1)
    assert tracker.on_gap(KEY, 2) == []
    assert tracker.on_data(KEY, "read", SSE_TAIL, 3) == [SkippingReads(KEY)]
    assert pairs(tracker.on_data(KEY, "write", get("/next"), 4)) == [("/next", None)]


def test_a_connection_joined_midway_whose_first_write_is_no_request_stops(tracker):
    tracker.on_data(KEY, "read", b"* OK IMAP4rev1 ready\r\n", 1)
    out = tracker.on_data(KEY, "write", b"a1 LOGIN user pass\r\n", 2)
    assert out == [Stopped(KEY, "not_http1")]


def test_a_connection_joined_midway_that_never_writes_is_given_up(tracker, monkeypatch):
    from oisp_daemon.decode import connection

    monkeypatch.setattr(connection, "MIDWAY_SKIP_LIMIT", 100)
    assert tracker.on_data(KEY, "read", b"y" * 100, 1) == [SkippingReads(KEY)]
    assert tracker.on_data(KEY, "read", b"y", 2) == [Stopped(KEY, "not_http1")]
    assert tracker.connection_count() == 0


def test_a_server_reading_a_request_is_not_taken_for_a_client_joined_midway(tracker):
    out = tracker.on_data(KEY, "read", get("/served"), 1)
    assert out == [Stopped(KEY, "not_http1")] and tracker.stats.http1_joined_midway == 0


def test_http2_frames_read_first_still_join_http2(tracker):
    settings_ack = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
    assert tracker.on_data(KEY, "read", settings_ack, 1) == []
    assert tracker.stats.http2_joined_midway == 1 and tracker.stats.http1_joined_midway == 0


def test_response_that_began_before_the_request_is_an_orphan(tracker):
    # Responses are stamped at SSL_read return, requests at SSL_write entry: a response that
    # began before the oldest waiting request cannot answer it.
    tracker.on_data(KEY, "write", get("/late"), 50)
    assert tracker.on_data(KEY, "read", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nold", 40) == []
    assert tracker.stats.orphan_responses == 1
    assert pairs(tracker.on_data(KEY, "read", ok(b"new"), 60)) == [("/late", b"new")]


def test_close_ends_unanswered_requests_without_a_response(tracker):
    tracker.on_data(KEY, "write", get("/answered") + get("/waiting") + post("/half", b"abcdef")[:-2], 1)
    tracker.on_data(KEY, "read", ok(b"yes"), 2)
    out = tracker.on_close(KEY, 9)
    assert pairs(out) == [("/half", None), ("/waiting", "none:connection_closed"), ("/half", "none:connection_closed")]
    waiting, half = responses(out)
    assert (waiting.response, waiting.ended, waiting.ended_ns) == (None, "connection_closed", 9)
    assert half.request.partial_reasons == ["connection_closed"] and waiting.request.complete
    assert tracker.stats.unanswered_requests == 2 and tracker.connection_count() == 0


def test_close_completes_a_read_until_close_response(tracker):
    tracker.on_data(KEY, "write", get("/stream"), 1)
    assert tracker.on_data(KEY, "read", b"HTTP/1.0 200 OK\r\n\r\npart1 ", 2) == []
    assert tracker.on_data(KEY, "read", b"part2", 3) == []
    (exchange,) = responses(tracker.on_close(KEY, 4))
    assert exchange.response.complete and exchange.response.body == b"part1 part2" and exchange.ended is None


def test_process_exit_releases_only_that_process(tracker):
    tracker.on_data(KEY, "write", get("/mine"), 1)
    tracker.on_data((99, 1), "write", get("/other"), 1)
    out = tracker.on_process_exit(KEY[0], 5)
    assert pairs(out) == [("/mine", "none:process_exit")]
    assert tracker.connection_count() == 1


def test_process_exit_leaves_read_until_close_partial(tracker):
    tracker.on_data(KEY, "write", get("/s"), 1)
    tracker.on_data(KEY, "read", b"HTTP/1.1 200 OK\r\n\r\nabc", 2)
    (exchange,) = responses(tracker.on_process_exit(KEY[0], 3))
    assert exchange.response.status == 200 and exchange.response.partial_reasons == ["process_exit"]
    assert exchange.response.body == b"abc"


def test_expire_idle_releases_idle_connections_only(tracker):
    tracker.on_data(KEY, "write", get("/idle"), 1_000_000_000)
    tracker.on_data(OTHER, "write", get("/busy"), 9_000_000_000)
    assert tracker.expire_idle(10_000_000_000) == []
    out = tracker.expire_idle(12_000_000_000)
    assert pairs(out) == [("/idle", "none:idle_timeout")]
    assert responses(out)[0].ended_ns == 12_000_000_000
    assert tracker.connection_count() == 1 and tracker.stats.expired_connections == 1


def test_ignored_connection_ends_its_exchanges_and_drops_data_until_close(tracker):
    tracker.on_data(KEY, "write", get("/a"), 1)
    assert pairs(tracker.ignore(KEY)) == [("/a", "none:ignored")]
    assert tracker.connection_count() == 0
    assert tracker.on_data(KEY, "read", ok(b"A"), 2) == []
    assert tracker.on_data(KEY, "write", get("/b"), 3) == []
    assert tracker.on_close(KEY, 4) == []
    assert tracker.stats.ignored_bytes == len(ok(b"A")) + len(get("/b"))
    # The pointer is reused by a new connection after close: tracked again.
    assert pairs(tracker.on_data(KEY, "write", get("/c"), 5)) == [("/c", None)]


def test_ignored_connection_expires_when_idle(tracker):
    tracker.ignore(KEY)
    tracker.on_data(KEY, "write", b"\x00" * 10, 1_000_000_000)
    tracker.expire_idle(20_000_000_000)
    assert pairs(tracker.on_data(KEY, "write", get("/new"), 20_000_000_001)) == [("/new", None)]


def test_http2_preface_picks_the_http2_decoder(tracker):
    out = tracker.on_data(KEY, "write", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", 1)
    assert out == [] and tracker.connection_count() == 1
    assert tracker.on_data(KEY, "read", b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", 2) == []
    assert tracker.stats.orphan_responses == 0 and tracker.stats.stopped_connections == 0


def test_upgrade_answers_its_request_partially_and_stops_decoding(tracker):
    tracker.on_data(KEY, "write", b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 1)
    out = tracker.on_data(KEY, "read", b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x02hi", 2)
    assert [type(s) for s in out] == [ResponseDone, Stopped] and out[1].reason == "upgrade"
    exchange = out[0].exchange
    assert exchange.response.status == 101 and exchange.response.partial_reasons == ["upgrade"]
    assert tracker.connection_count() == 0
    assert tracker.on_data(KEY, "write", get("/looks-like-http"), 3) == []


def test_tunnel_ends_requests_pipelined_behind_connect(tracker):
    tracker.on_data(KEY, "write", b"CONNECT api.example:443 HTTP/1.1\r\n\r\n" + get("/behind"), 1)
    out = tracker.on_data(KEY, "read", b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01", 2)
    assert pairs(out) == [("api.example:443", b""), ("/behind", "none:tunnel")]
    assert out[0].exchange.response.partial_reasons == ["tunnel"] and out[-1] == Stopped(KEY, "tunnel")


def test_garbage_response_ends_the_waiting_request(tracker):
    tracker.on_data(KEY, "write", get("/asked"), 1)
    out = tracker.on_data(KEY, "read", b"\x15\x03\x03\x00\x02\x02\x28 not http at all\r\n", 2)
    assert pairs(out) == [("/asked", "none:not_http1")] and out[-1] == Stopped(KEY, "not_http1")
    assert tracker.stats.unanswered_requests == 1


def test_response_gap_gives_partial_response_and_pairing_continues(tracker):
    tracker.on_data(KEY, "write", get("/a"), 1)
    tracker.on_data(KEY, "read", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst", 2)
    (partial,) = responses(tracker.on_gap(KEY, 3))
    assert partial.request.target == "/a" and partial.response.partial_reasons == ["gap"]
    assert tracker.on_data(KEY, "read", b"lost tail\r\n", 4) == []
    assert pairs(tracker.on_data(KEY, "write", get("/b"), 5)) == [("/b", None)]
    assert pairs(tracker.on_data(KEY, "read", ok(b"B"), 6)) == [("/b", b"B")]


def test_gap_ends_waiting_requests_so_a_later_response_cannot_answer_them(tracker):
    # The gap may have held all of /a's response: what follows must not be taken for it.
    tracker.on_data(KEY, "write", get("/a"), 1)
    assert pairs(tracker.on_gap(KEY, 2)) == [("/a", "none:gap")]
    assert tracker.on_data(KEY, "read", b"ail of a lost body\r\n", 3) == []
    tracker.on_data(KEY, "write", get("/b"), 4)
    assert pairs(tracker.on_data(KEY, "read", ok(b"for b"), 5)) == [("/b", b"for b")]


def test_gap_in_a_request_ends_it_partial(tracker):
    tracker.on_data(KEY, "write", post("/up", b"x" * 50)[:40], 1)
    out = tracker.on_gap(KEY, 2)
    assert pairs(out) == [("/up", None), ("/up", "none:gap")]
    assert out[0].exchange.request.partial_reasons == ["gap"]


def test_gap_before_first_data_is_not_a_protocol_error(tracker):
    assert tracker.on_gap(KEY, 1) == []
    out = tracker.on_data(KEY, "write", b"rest of an upload\r\n" + get("/next"), 2)
    assert pairs(out) == [("/next", None)] and tracker.connection_count() == 1


def test_too_many_pending_requests_are_answered_synthetically(tracker):
    n = MAX_PENDING_RESPONSES + 6
    out = tracker.on_data(KEY, "write", b"".join(get("/%d" % i) for i in range(n)), 1)
    unanswered = responses(out)
    assert [e.request.target for e in unanswered] == ["/%d" % i for i in range(6)]
    assert all((e.response, e.ended) == (None, "too_many_pending") for e in unanswered)
    assert pairs(tracker.on_data(KEY, "read", ok(b"R"), 2)) == [("/6", b"R")]


def test_decoder_failure_costs_only_that_connection_and_ends_its_exchange(tracker, monkeypatch):
    tracker.on_data(OTHER, "write", get("/fine"), 1)
    tracker.on_data(KEY, "write", get("/x"), 2)

    def broken_feed(self, data, ts_ns):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(http1.Http1Parser, "feed", broken_feed)
    out = tracker.on_data(KEY, "read", ok(b"X"), 3)
    assert pairs(out) == [("/x", "none:decode_error")] and out[-1] == Stopped(KEY, "decode_error")
    assert tracker.stats.decode_failures == 1 and tracker.connection_count() == 1
    monkeypatch.undo()
    assert tracker.on_data(KEY, "write", get("/y"), 4) == []  # ignored until closed
    assert pairs(tracker.on_data(OTHER, "read", ok(b"F"), 5)) == [("/fine", b"F")]


def test_decoder_failure_while_flushing_still_ends_every_exchange(tracker, monkeypatch):
    tracker.on_data(KEY, "write", get("/a") + post("/b", b"0123456789")[:-3], 1)

    def broken(self, *args, **kwargs):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(http1.Http1Parser, "feed", broken)
    monkeypatch.setattr(http1.Http1Parser, "close", broken)
    out = tracker.on_data(KEY, "write", b"789", 2)
    assert pairs(out) == [("/a", "none:decode_error"), ("/b", None), ("/b", "none:decode_error")]
    assert out[1].exchange.request.partial_reasons == ["decode_error"]
    assert tracker.stats.decode_failures == 2


def test_direction_must_be_read_or_write(tracker):
    with pytest.raises(ValueError):
        tracker.on_data(KEY, "sideways", b"", 1)


def test_recorded_streaming_exchange_through_tls_sized_pieces(tracker):
    with open(FIXTURE) as f:
        recorded = json.load(f)
    req_body = recorded["request"]["body"].encode()
    resp_body = recorded["response"]["body"].encode()
    request = post("/v1/chat/completions", req_body)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    events = [e + b"\n\n" for e in resp_body.split(b"\n\n") if e]
    out = tracker.on_data(KEY, "write", request[:100], 1) + tracker.on_data(KEY, "write", request[100:], 2)
    assert len(out) == 1 and out[0].exchange.request.body == req_body
    out = tracker.on_data(KEY, "read", head, 10)
    for n, event in enumerate(events):
        out += tracker.on_data(KEY, "read", b"%x\r\n%s\r\n" % (len(event), event), 11 + n)
    out += tracker.on_data(KEY, "read", b"0\r\n\r\n", 100)
    (exchange,) = responses(out)
    response = exchange.response
    assert response.complete and response.body == b"".join(events)
    assert (response.ts_start_ns, response.ts_end_ns) == (10, 100)
    parsed = parse_sse(response.body)
    assert [response.ts_at_offset(e.offset - 1) for e in parsed] == list(range(11, 11 + len(parsed)))


# -- property: whatever happens to a connection, every exchange ends once, and never crossed ----

END_FAULTS = ("close", "exit", "idle", "ignore")


@st.composite
def client_runs(draw):
    """Sequential exchanges of one client on one connection key, each with a fault or none:
    "gap" loses one TLS call, an end fault cuts the exchange after some calls."""
    runs = []
    for n in range(draw(st.integers(1, 6))):
        request = post("/%d" % n, b'{"n": %d, "pad": "%s"}' % (n, b"x" * draw(st.integers(0, 40))))
        response = ok(b"r%d-" % n + b"y" * draw(st.integers(0, 40)))
        pieces = [("write", p) for p in cut(draw, request)] + [("read", p) for p in cut(draw, response)]
        fault = draw(st.sampled_from((None, "gap") + END_FAULTS))
        at = draw(st.integers(0, len(pieces) - 1))
        runs.append((n, pieces, fault, at))
    return runs


def cut(draw, data: bytes):
    points = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=4))))
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


@given(client_runs())
@settings(max_examples=300, deadline=None)
def test_every_exchange_ends_exactly_once_and_only_with_its_own_response(runs):
    tracker = ConnectionTracker(max_body_bytes=1 << 20, idle_timeout_s=1)
    steps = []
    ts = 1
    for n, pieces, fault, at in runs:
        for i, (direction, data) in enumerate(pieces):
            ts += 1
            if fault == "gap" and i == at:
                steps += tracker.on_gap(KEY, ts)
                continue
            steps += tracker.on_data(KEY, direction, data, ts)
            if fault in END_FAULTS and i == at:
                break
        ts += 1
        if fault == "close":
            steps += tracker.on_close(KEY, ts)
        elif fault == "exit":
            steps += tracker.on_process_exit(KEY[0], ts)
        elif fault == "idle":
            ts += 2_000_000_000
            steps += tracker.expire_idle(ts)
        elif fault == "ignore":
            steps += tracker.ignore(KEY)
            steps += tracker.on_close(KEY, ts)
        if fault in END_FAULTS:
            assert tracker.connection_count() == 0
    steps += tracker.on_close(KEY, ts + 1)
    seen = {}
    for step in steps:
        seen.setdefault(id(step.exchange), []).append(step)
    for history in seen.values():
        assert [type(s) for s in history] == [RequestDone, ResponseDone]
        exchange = history[0].exchange
        if exchange.response is not None:
            expected = b"r" + exchange.request.target[1:].encode() + b"-"
            body = exchange.response.body
            if exchange.response.complete:
                assert body.startswith(expected), (exchange.request.target, body)
            else:
                assert body[: len(expected)] == expected[: len(body)], (exchange.request.target, body)
    if all(fault is None for n, pieces, fault, at in runs):
        assert len(seen) == len(runs)
        assert all(h[1].exchange.response.complete for h in seen.values())
