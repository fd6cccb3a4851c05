"""HTTP/2 decoding through the connection tracker, on bytes real h2 endpoints (the `h2` library) put
on the wire: exchanges, concurrent streams, HPACK, mid-way joins, bad input, at every split point."""
from __future__ import annotations

import gzip
from typing import List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, PingFrame, SettingsFrame

from oisp_daemon.decode.connection import ConnectionTracker
from oisp_daemon.decode.http1_exchanges import Http1Decoder
from oisp_daemon.decode.http2 import MAX_STREAMS, PREFACE, Http2Decoder, sniff
from oisp_daemon.decode.protocol import DecodeStats, RequestDone, ResponseDone, ResponseProgress, Stopped
from tests.support import ws_replay as ws

KEY = (4321, 0x7F0000003000)


class Wire:
    """A real h2 client and server; everything each sends is kept as the sensor would see it:
    "write" (client to server) and "read" (server to client) calls, in order, with a ts each."""

    def __init__(self) -> None:
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.server = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.calls: List[Tuple[str, bytes, int]] = []
        self.ts = 1000
        self.client.initiate_connection()
        self.server.initiate_connection()  # a server's SETTINGS come first, before its ACK
        self.flush()

    def flush(self) -> None:
        for direction, sender, receiver in (("write", self.client, self.server), ("read", self.server, self.client)):
            data = sender.data_to_send()
            if data:
                self.ts += 10
                self.calls.append((direction, data, self.ts))
                receiver.receive_data(data)
        if self.client.data_to_send() or self.server.data_to_send():
            self.flush()  # acks

    def request(self, path: str, body: bytes = b"", extra=(), end: bool = True) -> int:
        sid = self.client.get_next_available_stream_id()
        headers = [(":method", "POST" if body else "GET"), (":path", path), (":scheme", "https"),
                   (":authority", "api.example.com")] + list(extra)
        self.client.send_headers(sid, headers, end_stream=not body and end)
        if body:
            self.client.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def respond(self, sid: int, body: bytes = b"", status: str = "200", extra=(), end: bool = True,
                trailers=None, pad: Optional[int] = None) -> None:
        self.server.send_headers(sid, [(":status", status), ("content-type", "application/json")] + list(extra),
                                 end_stream=not body and end and not trailers)
        self.flush()
        if body:
            self.data(sid, body, end=end and not trailers, pad=pad)
        if trailers:
            self.server.send_headers(sid, trailers, end_stream=True)
            self.flush()

    def data(self, sid: int, body: bytes, end: bool = False, pad: Optional[int] = None) -> None:
        self.server.send_data(sid, body, end_stream=end, pad_length=pad)
        self.flush()

    def since(self, n: int) -> List[Tuple[str, bytes, int]]:
        return self.calls[n:]


def feed(tracker: ConnectionTracker, calls, key=KEY):
    out = []
    for direction, data, ts in calls:
        out += tracker.on_data(key, direction, data, ts)
    return out


def cut(calls, direction: str, offset: int):
    """The same bytes, with the direction's concatenated stream cut once at `offset` (two calls)."""
    joined = b"".join(d for dr, d, _ in calls if dr == direction)
    out, pos, done = [], 0, False
    for dr, data, ts in calls:
        if dr != direction or done or not pos <= offset < pos + len(data) or offset == pos:
            out.append((dr, data, ts))
        else:
            out += [(dr, data[:offset - pos], ts), (dr, data[offset - pos:], ts + 1)]
            done = True
        if dr == direction:
            pos += len(data)
    assert b"".join(d for dr, d, _ in out if dr == direction) == joined
    return out


def summary(steps):
    """(kind, method path or status, body, partial reasons) per RequestDone/ResponseDone."""
    rows = []
    for step in steps:
        if isinstance(step, RequestDone):
            r = step.exchange.request
            rows.append(("req", r.method + " " + r.target, r.body, tuple(r.partial_reasons)))
        elif isinstance(step, ResponseDone):
            r = step.exchange.response
            rows.append(("resp", r.status if r else step.exchange.ended, r.body if r else None,
                         tuple(r.partial_reasons) if r else ()))
    return rows


@pytest.fixture
def tracker() -> ConnectionTracker:
    return ConnectionTracker(max_body_bytes=1 << 20, idle_timeout_s=10)


def one_exchange() -> Wire:
    wire = Wire()
    sid = wire.request("/v1/chat/completions", b'{"model":"gpt-4o"}', extra=[("content-type", "application/json")])
    wire.respond(sid, b'{"id":"chatcmpl-1"}', trailers=[("x-trailer", "done")])
    return wire


def test_sniff_tells_the_preface_frames_and_http1_apart():
    assert sniff(PREFACE + b"\x00") == "h2"
    assert sniff(PREFACE[:10]) is None
    assert sniff(b"POST / HTTP/1.1\r\n") == "http1"
    assert sniff(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00") == "h2_midway"  # WINDOW_UPDATE
    assert sniff(b"\x00\x00") is None
    assert sniff(b"\x00\x00\x04\x63\x00\x00\x00\x00\x00") == "http1"  # no frame type 0x63
    # A server's side: it writes SETTINGS first and reads the preface; not decoded as a client.
    assert sniff(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00") == "http1"
    assert sniff(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00") == "h2_midway"  # a SETTINGS ACK
    assert sniff(PREFACE, "read") == "http1" and sniff(PREFACE[:5], "read") is None


def test_an_exchange_is_decoded_with_pseudo_headers_body_and_trailers(tracker):
    steps = feed(tracker, one_exchange().calls)
    assert summary(steps) == [("req", "POST /v1/chat/completions", b'{"model":"gpt-4o"}', ()),
                              ("resp", 200, b'{"id":"chatcmpl-1"}', ())]
    request, response = steps[0].exchange.request, steps[1].exchange.response
    assert request.header("host") == "api.example.com" and request.version == "HTTP/2"
    assert response.header("x-trailer") == "done" and response.header("content-type") == "application/json"
    assert request.ts_start_ns < response.ts_start_ns <= response.ts_end_ns
    assert tracker.connection_count() == 1 and tracker.stats.stopped_connections == 0


@pytest.mark.parametrize("direction", ["write", "read"])
def test_every_split_point_gives_the_same_exchange(direction):
    wire = one_exchange()
    whole = summary(feed(ConnectionTracker(1 << 20, 10), wire.calls))
    total = sum(len(d) for dr, d, _ in wire.calls if dr == direction)
    for offset in range(1, total):
        assert summary(feed(ConnectionTracker(1 << 20, 10), cut(wire.calls, direction, offset))) == whole, offset


def test_concurrent_streams_are_separate_exchanges_with_their_own_timing(tracker):
    wire = Wire()
    a = wire.request("/a", b"{}")
    b = wire.request("/b", b"{}")
    wire.server.send_headers(b, [(":status", "200"), ("content-type", "text/event-stream")])
    wire.server.send_headers(a, [(":status", "200"), ("content-type", "text/event-stream")])
    wire.flush()
    start = len(wire.calls)
    wire.data(b, b"data: b1\n\n")
    wire.data(a, b"data: a1\n\n")
    wire.data(b, b"data: b2\n\n", end=True)
    wire.data(a, b"data: a2\n\n", end=True)
    steps = feed(tracker, wire.calls[:start])
    for step in steps:
        if isinstance(step, RequestDone):
            step.exchange.streaming = True
    steps = feed(tracker, wire.since(start))
    progress = [(s.exchange.request.target, s.data, s.marks[0][1]) for s in steps if isinstance(s, ResponseProgress)]
    ts = [t for _, _, t in wire.since(start)]
    assert progress == [("/b", b"data: b1\n\n", ts[0]), ("/a", b"data: a1\n\n", ts[1]),
                        ("/b", b"data: b2\n\n", ts[2]), ("/a", b"data: a2\n\n", ts[3])]
    done = {s.exchange.request.target: s.exchange.response for s in steps if isinstance(s, ResponseDone)}
    assert done["/a"].body == b"data: a1\n\ndata: a2\n\n" and done["/b"].ts_end_ns == ts[2]


@pytest.mark.parametrize("client_table", [None, 256, 0])
def test_hpack_dynamic_table_evicts_over_a_long_connection(tracker, client_table):
    wire = Wire()
    if client_table is not None:  # SETTINGS_HEADER_TABLE_SIZE: the server's encoder shrinks its table
        wire.client.update_settings({SettingCodes.HEADER_TABLE_SIZE: client_table})
        wire.flush()
    sent = range(300)
    for i in sent:  # distinct values evict older entries of the 4 KiB tables, both sides
        sid = wire.request("/v1/messages?n=%d" % i, b"{}", extra=[("x-request-tag", "tag-%d-" % i + "x" * 40)])
        wire.respond(sid, b"{}", extra=[("x-response-tag", "resp-%d-" % i + "y" * 40)])
    steps = feed(tracker, wire.calls)
    requests = [s.exchange.request for s in steps if isinstance(s, RequestDone)]
    responses = [s.exchange.response for s in steps if isinstance(s, ResponseDone)]
    assert [r.target for r in requests] == ["/v1/messages?n=%d" % i for i in sent]
    assert [r.header("x-request-tag") for r in requests] == ["tag-%d-" % i + "x" * 40 for i in sent]
    assert [r.header("x-response-tag") for r in responses] == ["resp-%d-" % i + "y" * 40 for i in sent]
    assert all(r.complete for r in requests + responses)


def test_joined_midway_decodes_what_it_can_and_never_guesses(tracker):
    wire = Wire()
    first = wire.request("/v1/chat/completions", b"{}", extra=[("authorization", "Bearer sk-1"), ("x-tag", "early")])
    wire.respond(first, b"{}", extra=[("x-server", "early")])
    start = len(wire.calls)
    second = wire.request("/v1/chat/completions", b'{"n":2}', extra=[("authorization", "Bearer sk-1"), ("x-tag", "late")])
    wire.respond(second, b'{"ok":2}', extra=[("x-server", "early")])
    steps = feed(tracker, wire.since(start))
    assert tracker.counters()["http2_joined_midway"] == 1
    request = next(s.exchange.request for s in steps if isinstance(s, RequestDone))
    response = next(s.exchange.response for s in steps if isinstance(s, ResponseDone))
    assert request.body == b'{"n":2}' and response.body == b'{"ok":2}'
    assert "hpack_state_unknown" in request.partial_reasons  # its indexed fields are unknown here
    # x-tag's name is a dynamic entry from before: left out; authorization is never indexed
    assert request.header("x-tag") is None and request.header("authorization") == "Bearer sk-1"
    assert request.target == ""  # :path was indexed: unknown, not guessed
    assert set(request.headers) <= {("host", "api.example.com"), ("authorization", "Bearer sk-1"), ("x-tag", "late")}
    assert set(response.headers) <= {("content-type", "application/json"), ("x-server", "early")}


def test_a_stream_that_began_before_the_sensor_is_an_orphan(tracker):
    wire = Wire()
    sid = wire.request("/old", b"{}")
    start = len(wire.calls)
    wire.respond(sid, b"{}")
    assert feed(tracker, wire.since(start)) == []
    assert tracker.stats.orphan_responses == 1


def test_concurrent_streams_at_every_split_point():
    wire = Wire()
    a, b = wire.request("/a", b"{}"), wire.request("/b", b"{}")
    wire.respond(b, b"B" * 100, extra=[("x-n", "b")])
    wire.respond(a, b"A" * 100, pad=7, extra=[("x-n", "a")])
    whole = summary(feed(ConnectionTracker(1 << 20, 10), wire.calls))
    assert [row[1] for row in whole] == ["POST /a", "POST /b", 200, 200]
    total = sum(len(d) for dr, d, _ in wire.calls if dr == "read")
    for offset in range(1, total):
        assert summary(feed(ConnectionTracker(1 << 20, 10), cut(wire.calls, "read", offset))) == whole, offset


def test_gzip_response_body_is_decoded(tracker):
    wire = Wire()
    sid = wire.request("/gz")
    wire.respond(sid, gzip.compress(b'{"hello":"world"}'), extra=[("content-encoding", "gzip")])
    steps = feed(tracker, wire.calls)
    assert steps[-1].exchange.response.body == b'{"hello":"world"}'


def test_rst_stream_ends_its_exchange_only(tracker):
    wire = Wire()
    a, b = wire.request("/a"), wire.request("/b")
    wire.server.send_headers(a, [(":status", "200")])
    wire.flush()
    wire.server.reset_stream(a)
    wire.flush()
    wire.respond(b, b"ok")
    rows = summary(feed(tracker, wire.calls))
    assert ("resp", 200, b"", ("rst_stream",)) in rows and ("resp", 200, b"ok", ()) in rows


def test_goaway_ends_the_streams_the_server_did_not_take(tracker):
    wire = Wire()
    a, b = wire.request("/a"), wire.request("/b")
    wire.server.close_connection(last_stream_id=a)
    wire.flush()
    steps = feed(tracker, wire.calls)
    assert [(s.exchange.request.target, s.exchange.ended) for s in steps if isinstance(s, ResponseDone)] == [("/b", "goaway")]
    assert [e.request.target for e in tracker._conns[KEY].decoder.open_exchanges()] == ["/a"]


def test_close_ends_open_exchanges_partial(tracker):
    wire = Wire()
    sid = wire.request("/a")
    wire.server.send_headers(sid, [(":status", "200")])
    wire.flush()
    wire.data(sid, b"half")
    feed(tracker, wire.calls)
    steps = tracker.on_close(KEY, 99999)
    assert summary(steps) == [("resp", 200, b"half", ("connection_closed",))]


def test_garbage_after_the_preface_stops_the_connection(tracker):
    out = tracker.on_data(KEY, "write", PREFACE + b"GET / HTTP/1.1\r\n\r\n", 1)
    assert out == [Stopped(KEY, "http2_error")]


def test_malformed_frame_ends_open_exchanges_and_stops(tracker):
    wire = Wire()
    wire.request("/a")
    feed(tracker, wire.calls)
    bad_ping = b"\x00\x00\x03\x06\x00\x00\x00\x00\x00abc"  # PING must be 8 bytes
    out = tracker.on_data(KEY, "read", bad_ping, 99999)
    assert summary(out) == [("resp", "http2_error", None, ())] and out[-1] == Stopped(KEY, "http2_error")


def test_hpack_error_makes_the_request_partial_and_the_connection_goes_on(tracker):
    wire = Wire()
    feed(tracker, wire.calls)
    bad = HeadersFrame(1, data=b"\xff\xff\xff\x7f", flags=["END_HEADERS", "END_STREAM"]).serialize()
    out = tracker.on_data(KEY, "write", bad, 5000)
    assert summary(out) == [("req", " ", b"", ("malformed",))]
    assert tracker.connection_count() == 1 and tracker.stats.stopped_connections == 0


def test_a_1mib_header_block_is_cut_not_held(tracker):
    wire = Wire()
    feed(tracker, wire.calls)
    block = wire.client.encoder.encode([(":method", "GET"), (":path", "/big"), ("x-big", "z" * (1 << 20))],
                                       huffman=False)  # the library huffman-codes 1 MiB slowly
    frames = [HeadersFrame(1, data=block[:16384], flags=["END_STREAM"])]
    for i in range(16384, len(block), 16384):
        flags = ["END_HEADERS"] if i + 16384 >= len(block) else []
        frames.append(ContinuationFrame(1, data=block[i:i + 16384], flags=flags))
    out = []
    for frame in frames:
        out += tracker.on_data(KEY, "write", frame.serialize(), 6000)
    decoder = tracker._conns[KEY].decoder
    assert summary(out) == [("req", " ", b"", ("header_limit",))]
    assert max(len(side.frames._payload) for side in (decoder._write, decoder._read)) <= 64 * 1024 + 261


def test_padded_and_prioritised_headers(tracker):
    wire = Wire()
    feed(tracker, wire.calls)
    block = wire.client.encoder.encode([(":method", "GET"), (":path", "/pad"), (":authority", "x.example")])
    frame = HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM", "PADDED", "PRIORITY"], pad_length=9,
                         depends_on=0, stream_weight=15)
    out = tracker.on_data(KEY, "write", frame.serialize(), 7000)
    assert summary(out) == [("req", "GET /pad", b"", ())]


def test_settings_max_frame_size_allows_bigger_frames(tracker):
    wire = Wire()
    feed(tracker, wire.calls)
    big = SettingsFrame(0, settings={SettingsFrame.MAX_FRAME_SIZE: 1 << 20}).serialize()
    tracker.on_data(KEY, "write", big, 7000)
    block = wire.server.encoder.encode([(":status", "200")])
    tracker.on_data(KEY, "write", HeadersFrame(1, data=wire.client.encoder.encode(
        [(":method", "GET"), (":path", "/f")]), flags=["END_HEADERS", "END_STREAM"]).serialize(), 7001)
    reply = HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize() + \
        DataFrame(1, data=b"d" * 100000, flags=["END_STREAM"]).serialize()
    out = tracker.on_data(KEY, "read", reply, 7002)
    assert summary(out) == [("resp", 200, b"d" * 100000, ())]


def test_gap_ends_everything_and_resumes_at_a_frame(tracker):
    wire = Wire()
    a = wire.request("/a")
    feed(tracker, wire.calls)
    out = tracker.on_gap(KEY, 5000)
    assert summary(out) == [("resp", "gap", None, ())]
    start = len(wire.calls)
    wire.respond(a, b"late")  # its stream is gone: an orphan
    b = wire.request("/b", extra=[("x-after", "gap")])
    wire.respond(b, b"ok")
    rows = summary(feed(tracker, wire.since(start)))
    assert [r[:3] for r in rows] == [("req", rows[0][1], b""), ("resp", 200, b"ok")]


def test_extended_connect_hands_the_stream_to_another_decoder():
    stats = DecodeStats()
    tunnels = []

    def open_tunnel(key, request, response):
        tunnels.append((request.header(":protocol"), response.status))
        return Http1Decoder(key, stats, 1 << 20, 65536)  # the tunnel carries HTTP/1.1 here

    decoder = Http2Decoder(KEY, stats, 1 << 20, 65536, open_tunnel=open_tunnel)
    wire = Wire()
    wire.server.local_settings.enable_connect_protocol = 1
    wire.flush()
    sid = wire.client.get_next_available_stream_id()
    wire.client.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                                   (":path", "/v1/realtime"), (":authority", "api.openai.com")])
    wire.flush()
    wire.server.send_headers(sid, [(":status", "200")])
    wire.flush()
    wire.client.send_data(sid, b"GET /inner HTTP/1.1\r\nHost: x\r\n\r\n")
    wire.flush()
    wire.server.send_data(sid, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    wire.flush()
    out = []
    for direction, data, ts in wire.calls:
        decoder.feed(direction, data, ts, out)
    assert tunnels == [("websocket", 200)]
    assert summary(out) == [("req", "CONNECT /v1/realtime", b"", ()), ("resp", 200, b"", ("tunnel",)),
                            ("req", "GET /inner", b"", ()), ("resp", 200, b"hi", ())]


def test_the_serving_side_of_an_h2_connection_is_not_decoded(tracker):
    wire = one_exchange()
    served = [("read" if d == "write" else "write", data, ts) for d, data, ts in wire.calls]
    out = feed(tracker, served)
    assert out in ([Stopped(KEY, "not_http1")], [Stopped(KEY, "http2_preface")])
    assert tracker.counters()["http2_joined_midway"] == 0
    tracker = ConnectionTracker(1 << 20, 10)  # the server wrote its SETTINGS before it read
    assert feed(tracker, [served[1], served[0]] + served[2:]) == [Stopped(KEY, "not_http1")]


def test_preface_split_at_every_offset_still_picks_http2():
    wire = one_exchange()
    whole = summary(feed(ConnectionTracker(1 << 20, 10), wire.calls))
    for offset in range(1, len(PREFACE) + 1):
        assert summary(feed(ConnectionTracker(1 << 20, 10), cut(wire.calls, "write", offset))) == whole


def test_ping_and_window_updates_are_ignored(tracker):
    wire = one_exchange()
    calls = wire.calls[:2] + [("read", PingFrame(0, opaque_data=b"12345678").serialize(), 1500)] + wire.calls[2:]
    assert [r[1] for r in summary(feed(tracker, calls))] == ["POST /v1/chat/completions", 200]


def test_a_websocket_over_extended_connect_is_decoded_through_the_tracker(tracker):
    wire = Wire()
    wire.server.local_settings.enable_connect_protocol = 1
    wire.flush()
    sid = wire.client.get_next_available_stream_id()
    wire.client.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                                   (":path", "/v1/responses"), (":authority", "api.openai.com")])
    wire.flush()
    wire.server.send_headers(sid, [(":status", "200")])
    wire.flush()
    wire.client.send_data(sid, ws.message(ws.dumps({"type": "response.create", "model": "gpt-4o"}), b"\x01\x02\x03\x04"))
    wire.flush()
    wire.server.send_data(sid, ws.message(ws.dumps({"type": "response.completed", "response": {}})))
    wire.flush()
    rows = summary(feed(tracker, wire.calls))
    assert [r[:2] for r in rows] == [("req", "CONNECT /v1/responses"), ("resp", 200),
                                     ("req", "WEBSOCKET /v1/responses"), ("resp", 200)]
    assert rows[-1][3] == ()  # the WebSocket exchange is whole


def _frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


FRAMES = st.builds(_frame, st.integers(0, 10), st.integers(0, 255), st.integers(0, 5), st.binary(max_size=40))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["write", "read"]), st.lists(FRAMES, min_size=1, max_size=4)), max_size=12))
def test_arbitrary_frames_never_break_the_decoder(calls):
    """Well-framed frames of any type, flags, stream and content (HPACK garbage, bad padding,
    interrupted header blocks, ...) after the preface: partial exchanges or nothing, never a crash,
    every exchange handed out whole (RequestDone before its one ResponseDone)."""
    tracker = ConnectionTracker(1 << 16, 10)
    wire = [("write", PREFACE + SettingsFrame(0).serialize(), 1), ("read", SettingsFrame(0).serialize(), 2)]
    wire += [(d, b"".join(frames), i + 3) for i, (d, frames) in enumerate(calls)]
    steps = feed(tracker, wire) + tracker.on_close(KEY, 999)
    assert tracker.stats.decode_failures == 0
    seen = set()
    for step in steps:
        if isinstance(step, RequestDone):
            assert id(step.exchange) not in seen
            seen.add(id(step.exchange))
        elif isinstance(step, ResponseDone):
            assert step.exchange.requested and step.exchange.answered
    assert len([s for s in steps if isinstance(s, ResponseDone)]) == len(seen)


def test_streams_per_connection_are_bounded():
    tracker = ConnectionTracker(1 << 20, 10)
    wire = Wire()
    feed(tracker, wire.calls)
    for i in range(MAX_STREAMS + 20):  # more than any server allows, never answered
        block = wire.client.encoder.encode([(":method", "GET"), (":path", "/s%d" % i), (":authority", "x.example")])
        frame = HeadersFrame(2 * i + 1, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize()
        steps = tracker.on_data(KEY, "write", frame, 5000 + i)
        if i >= MAX_STREAMS:
            (oldest,) = [s.exchange for s in steps if isinstance(s, ResponseDone)]
            assert oldest.request.target == "/s%d" % (i - MAX_STREAMS) and oldest.ended == "too_many_pending"
    assert len(tracker._conns[KEY].decoder.open_exchanges()) == MAX_STREAMS


def test_bodies_of_all_streams_share_one_budget():
    tracker = ConnectionTracker(max_body_bytes=4096, idle_timeout_s=10)  # 8 KiB for the connection
    wire = Wire()
    sids = [wire.request("/b%d" % i) for i in range(3)]
    for sid in sids:
        wire.server.send_headers(sid, [(":status", "200")])
    wire.flush()
    for sid in sids:
        wire.data(sid, b"x" * 3000)
    for sid in sids:
        wire.data(sid, b"", end=True)
    bodies = {s.exchange.request.target: s.exchange.response for s in feed(tracker, wire.calls)
              if isinstance(s, ResponseDone)}
    assert [len(bodies["/b%d" % i].body) for i in range(3)] == [3000, 3000, 0]
    assert bodies["/b2"].partial_reasons == ["connection_body_limit"] and bodies["/b0"].complete
