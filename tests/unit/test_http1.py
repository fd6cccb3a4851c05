"""HTTP/1.x parser: framing, codings, limits, gaps and resync, over streams cut at every byte."""
from __future__ import annotations

import glob
import gzip
import json
import os
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from oisp_daemon.decode.http1 import Http1Parser
from oisp_daemon.decode.messages import HttpRequest
from oisp_daemon.decode.sse import parse_sse
from tests.support.paths import FIXTURES_DIR

FIXTURES = str(FIXTURES_DIR)
MB = 1 << 20


def chunked(body: bytes, size: int = 50, ext: bytes = b"", trailers: bytes = b"") -> bytes:
    out = b"".join(
        b"%x%s\r\n%s\r\n" % (len(body[i : i + size]), ext, body[i : i + size])
        for i in range(0, len(body), size)
    )
    return out + b"0\r\n" + trailers + b"\r\n"


def response(status: str, headers: list, body: bytes = b"") -> bytes:
    head = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers)
    return b"HTTP/1.1 " + status.encode() + b"\r\n" + head + b"\r\n" + body


def run(role, data, cuts=(), methods=(), max_body=MB, max_header=64 * 1024, close=False):
    """Feed `data` cut at `cuts`, piece n with ts n+1; returns (messages, parser)."""
    parser = Http1Parser(role, max_body, max_header)
    for method in methods:
        parser.expect_response_to(method)
    out = []
    prev = 0
    pieces = [c for c in sorted(cuts) if 0 < c < len(data)] + [len(data)]
    for n, cut in enumerate(pieces):
        out += parser.feed(data[prev:cut], n + 1)
        prev = cut
    if close:
        out += parser.close(len(pieces) + 1)
    return out, parser


def summary(msg) -> tuple:
    """Everything about a message that must not depend on how the stream was cut."""
    first = (msg.method, msg.target) if isinstance(msg, HttpRequest) else (msg.status, msg.reason)
    return (first, msg.version, msg.headers, msg.body, msg.complete, msg.partial_reasons,
            msg.wire_body_bytes)


def check_timestamps(msg, ts_max: int) -> None:
    assert 1 <= msg.ts_start_ns <= msg.ts_end_ns <= ts_max
    offsets = [o for o, _ in msg.body_marks]
    stamps = [t for _, t in msg.body_marks]
    assert offsets == sorted(set(offsets)) and stamps == sorted(set(stamps))
    assert all(0 <= o < len(msg.body) for o in offsets)
    assert not msg.body or offsets[0] == 0


# --- corpus: (role, methods, stream bytes, close at end) ---------------------------------------

SSE_BODY = b"".join(b'event: delta\ndata: {"n": %d}\n\n' % i for i in range(12))
GZ_BODY = b'{"choices": [{"text": "compressed"}]}' * 5
TRAILERS = b"X-Checksum: abc\r\nX-Other: 1\r\n"

CORPUS = {
    "keep_alive_three_responses": (
        "response", ["POST", "POST", "GET"],
        response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "11")], b'{"ok":true}')
        + response("200 OK", [("Transfer-Encoding", "chunked")], chunked(SSE_BODY, 37))
        + response("404 Not Found", [("Content-Encoding", "gzip"),
                                     ("Content-Length", str(len(gzip.compress(GZ_BODY))))],
                   gzip.compress(GZ_BODY)),
        False,
    ),
    "pipelined_requests": (
        "request", [],
        b"GET /v1/models HTTP/1.1\r\nHost: api.example\r\n\r\n"
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.example\r\nContent-Length: 17\r\n\r\n"
        b'{"model": "gpt"}\n'
        b"POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b'{"input": ["a", "b", "c"]}', 7, b";name=value;flag", TRAILERS),
        False,
    ),
    "chunked_extensions_trailers": (
        "response", ["POST"],
        response("200 OK", [("Transfer-Encoding", "chunked")],
                 chunked(SSE_BODY, 13, b' ; ext="quoted;value"', TRAILERS)),
        False,
    ),
    "head_204_304_then_body": (
        "response", ["HEAD", "DELETE", "GET", "GET"],
        response("200 OK", [("Content-Length", "1234")])
        + response("204 No Content", [])
        + response("304 Not Modified", [("Content-Length", "99")])
        + response("200 OK", [("Content-Length", "2")], b"ok"),
        False,
    ),
    "continue_then_response": (
        "response", ["POST"],
        response("100 Continue", []) + response("103 Early Hints", [("Link", "</a>")])
        + response("201 Created", [("Content-Length", "4")], b"done"),
        False,
    ),
    "read_until_close": (
        "response", ["GET"],
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + SSE_BODY,
        True,
    ),
    "folded_and_cased_headers": (
        "request", [],
        b"POST /x HTTP/1.1\r\nX-MiXeD: a\r\nx-mixed: b\r\nX-Folded: first\r\n  second\r\n\tthird\r\n"
        b"content-length: 5, 5\r\n\r\nhello",
        False,
    ),
    "leading_blank_lines_tolerated": (
        "request", [],
        b"\r\nGET /a HTTP/1.1\r\n\r\n\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        False,
    ),
}

ENCODED = {
    "gzip": gzip.compress(GZ_BODY),
    "deflate": zlib.compress(GZ_BODY),
    "br": brotli.compress(GZ_BODY),
    "zstd": zstandard.ZstdCompressor().compress(GZ_BODY),
    "gzip, br": brotli.compress(gzip.compress(GZ_BODY)),
}
for _coding, _wire in ENCODED.items():
    CORPUS["coding_" + _coding.replace(", ", "_")] = (
        "response", ["POST"],
        response("200 OK", [("Content-Encoding", _coding), ("Transfer-Encoding", "chunked")],
                 chunked(_wire, 9)),
        False,
    )


def one_shot(name):
    role, methods, data, close = CORPUS[name]
    return run(role, data, methods=methods, close=close)[0]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_cut_at_every_byte_equals_one_shot(name):
    role, methods, data, close = CORPUS[name]
    expected = [summary(m) for m in one_shot(name)]
    assert expected and all(s[4] for s in expected)  # the corpus itself parses complete
    for i in range(len(data) + 1):
        out, parser = run(role, data, [i], methods, close=close)
        assert [summary(m) for m in out] == expected, "cut at %d" % i
        for msg in out:
            check_timestamps(msg, 3)
        assert parser.protocol_error is None and parser.skipped_bytes == 0


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_corpus_random_multi_cuts_equal_one_shot(data):
    name = data.draw(st.sampled_from(sorted(CORPUS)))
    role, methods, stream, close = CORPUS[name]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    out, _ = run(role, stream, cuts, methods, close=close)
    assert [summary(m) for m in out] == [summary(m) for m in one_shot(name)]
    for msg in out:
        check_timestamps(msg, len(cuts) + 2)


def test_keep_alive_three_responses_content():
    first, second, third = one_shot("keep_alive_three_responses")
    assert (first.status, first.body) == (200, b'{"ok":true}')
    assert second.body == SSE_BODY and second.wire_body_bytes == len(SSE_BODY)
    assert (third.status, third.reason, third.body) == (404, "Not Found", GZ_BODY)
    assert third.wire_body_bytes == len(gzip.compress(GZ_BODY))


def test_pipelined_requests_content():
    models, chat, emb = one_shot("pipelined_requests")
    assert (models.method, models.target, models.body) == ("GET", "/v1/models", b"")
    assert (chat.method, chat.body) == ("POST", b'{"model": "gpt"}\n')
    assert emb.body == b'{"input": ["a", "b", "c"]}'
    assert emb.headers[-2:] == [("X-Checksum", "abc"), ("X-Other", "1")]  # trailers


def test_chunk_extensions_are_ignored_and_trailers_kept():
    (msg,) = one_shot("chunked_extensions_trailers")
    assert msg.body == SSE_BODY
    assert msg.headers == [("Transfer-Encoding", "chunked"), ("X-Checksum", "abc"), ("X-Other", "1")]


def test_head_204_304_have_no_body():
    out = one_shot("head_204_304_then_body")
    assert [(m.status, m.body) for m in out] == [(200, b""), (204, b""), (304, b""), (200, b"ok")]


def test_interim_responses_are_skipped():
    out, parser = run("response", CORPUS["continue_then_response"][2], methods=["POST"])
    assert [(m.status, m.body) for m in out] == [(201, b"done")]
    assert parser.in_progress is None


def test_read_until_close_completes_on_close():
    role, methods, data, _ = CORPUS["read_until_close"]
    out, parser = run(role, data, methods=methods)
    assert out == []
    assert parser.in_progress is not None and parser.in_progress.status == 200
    (msg,) = parser.close(99)
    assert msg.complete and msg.body == SSE_BODY and msg.version == "HTTP/1.0"
    assert msg.ts_end_ns == 1  # last data, not the (possibly much later) close


def test_folded_and_cased_headers_keep_case_and_order():
    (msg,) = one_shot("folded_and_cased_headers")
    assert msg.headers == [("X-MiXeD", "a"), ("x-mixed", "b"), ("X-Folded", "first second third"),
                           ("content-length", "5, 5")]
    assert msg.header("x-mixed") == "a" and msg.body == b"hello"


@pytest.mark.parametrize("coding", sorted(ENCODED))
def test_content_codings_are_decoded(coding):
    (msg,) = one_shot("coding_" + coding.replace(", ", "_"))
    assert msg.body == GZ_BODY and msg.complete
    assert msg.wire_body_bytes == len(ENCODED[coding])


def test_transfer_coding_besides_chunked_is_decoded():
    wire = chunked(gzip.compress(GZ_BODY), 10)
    data = response("200 OK", [("Transfer-Encoding", "gzip, chunked")], wire)
    (msg,), _ = run("response", data, [len(data) // 2], ["GET"])
    assert msg.body == GZ_BODY and msg.complete


def test_transfer_encoding_wins_over_content_length():
    data = response("200 OK", [("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
                    chunked(b"longer than three", 5)) + NEXT
    (msg, nxt), _ = run("response", data, methods=["GET", "GET"])
    assert msg.body == b"longer than three" and nxt.body == b"next"


def test_body_marks_one_per_piece_and_start_ts_is_first_byte():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = head + chunked(SSE_BODY, 20)
    cut1 = 5  # start line begins in piece 1
    cut2 = len(head) + 10  # piece 2: chunk-size line "14\r\n" and 6 body bytes
    cut3 = len(head) + 60  # piece 3: up to 4 bytes into the third 20-byte chunk
    (msg,), _ = run("response", data, [cut1, cut2, cut3], ["GET"])
    assert (msg.ts_start_ns, msg.ts_end_ns) == (1, 4)
    assert msg.body_marks == [(0, 2), (6, 3), (44, 4)]
    assert msg.ts_at_offset(5) == 2 and msg.ts_at_offset(6) == 3


def sse_fixture_responses():
    out = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, "*-stream-*.json"))):
        with open(path) as f:
            resp = json.load(f)["response"]
        ctype = {k.lower(): v for k, v in resp["headers"].items()}.get("content-type", "")
        if "text/event-stream" in ctype and resp["body_encoding"] == "utf-8":
            out.append((os.path.basename(path), resp["body"].encode("utf-8")))
    return out


SSE_FIXTURES = sse_fixture_responses()


def sse_as_http(body: bytes) -> tuple:
    """Frame an SSE body as a chunked response, one chunk per event as servers send them.
    Returns the stream, the stream offsets where chunks end and the body offsets where they end."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    events = [e + b"\n\n" for e in body.split(b"\n\n")]
    events[-1] = events[-1][:-2]
    data, cuts, body_ends = head, [], []
    for event in filter(None, events):
        data += b"%x\r\n%s\r\n" % (len(event), event)
        cuts.append(len(data))
        body_ends.append(len(event) + (body_ends[-1] if body_ends else 0))
    return data + b"0\r\n\r\n", cuts, body_ends


def test_sse_fixture_corpus_present():
    assert len(SSE_FIXTURES) >= 10


@pytest.mark.parametrize("name,body", SSE_FIXTURES, ids=[n for n, _ in SSE_FIXTURES])
def test_sse_fixture_framed_chunked_parses_to_same_events(name, body):
    data, cuts, body_ends = sse_as_http(body)
    (msg,), _ = run("response", data, cuts, ["POST"])
    assert msg.complete and msg.body == body
    events = parse_sse(msg.body)
    assert events == parse_sse(body)
    # Piece n (ts n + 1) carried chunk n: each event maps to the piece that completed it.
    for event in events:
        piece = next(n for n, end in enumerate(body_ends) if end >= event.offset)
        assert msg.ts_at_offset(event.offset - 1) == piece + 1


SMALL_SSE = [(n, b) for n, b in SSE_FIXTURES if len(b) <= 5000]


@pytest.mark.parametrize("name,body", SMALL_SSE, ids=[n for n, _ in SMALL_SSE])
def test_sse_fixture_framed_cut_at_every_byte(name, body):
    data = sse_as_http(body)[0]
    expected = parse_sse(body)
    for i in range(len(data) + 1):
        (msg,), _ = run("response", data, [i], ["POST"])
        assert msg.complete and parse_sse(msg.body) == expected, "cut at %d" % i


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_sse_fixtures_framed_random_cuts(data):
    name, body = data.draw(st.sampled_from(SSE_FIXTURES))
    stream = sse_as_http(body)[0]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=50))
    (msg,), _ = run("response", stream, cuts, ["POST"])
    assert msg.complete and msg.body == body


# --- limits ------------------------------------------------------------------------------------

NEXT = response("200 OK", [("Content-Length", "4")], b"next")


def test_body_limit_keeps_prefix_and_stays_in_sync():
    data = response("200 OK", [("Content-Length", "100")], b"x" * 100) + NEXT
    for i in range(len(data) + 1):
        (big, nxt), _ = run("response", data, [i], ["GET", "GET"], max_body=10)
        assert big.body == b"x" * 10 and big.partial_reasons == ["body_limit"]
        assert big.wire_body_bytes == 100
        assert nxt.complete and nxt.body == b"next"


def test_body_limit_on_decompression_bomb_keeps_framing():
    bomb = gzip.compress(b"\0" * (8 * MB))
    data = response("200 OK", [("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")],
                    chunked(bomb, 4096)) + NEXT
    (big, nxt), _ = run("response", data, [len(data) // 2], ["GET", "GET"], max_body=1000)
    assert big.body == b"\0" * 1000 and big.partial_reasons == ["body_limit"]
    assert big.wire_body_bytes == len(bomb)
    assert nxt.body == b"next"


def test_single_huge_header_line_is_header_limit_and_resyncs():
    data = (b"GET /a HTTP/1.1\r\nX-Big: " + b"v" * 100_000 + b"\r\n\r\n"
            + b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    (first, second), parser = run("request", data, [30, 50_000])
    assert first.target == "/a" and not first.complete and "header_limit" in first.partial_reasons
    assert (second.target, second.complete) == ("/b", True)


def test_many_headers_past_limit_keep_framing():
    fillers = "".join("X-Fill-%d: %s\r\n" % (i, "f" * 50) for i in range(100))
    data = (b"POST /a HTTP/1.1\r\n" + fillers.encode() + b"Content-Length: 3\r\n\r\nabc"
            + b"GET /b HTTP/1.1\r\n\r\n")
    (first, second), _ = run("request", data, max_header=1024)
    assert first.partial_reasons == ["header_limit"] and first.body == b"abc"
    assert 10 < len(first.headers) < 20
    assert second.target == "/b" and second.complete


# --- errors, gaps, resync ----------------------------------------------------------------------


def test_invalid_gzip_is_bad_encoding_with_raw_body():
    raw = b"definitely not gzip data"
    data = response("200 OK", [("Content-Encoding", "gzip"), ("Content-Length", str(len(raw)))], raw)
    (msg, nxt), _ = run("response", data + NEXT, methods=["GET", "GET"])
    assert msg.body == raw and msg.partial_reasons == ["bad_encoding"]
    assert nxt.body == b"next" and nxt.complete


def test_truncated_gzip_is_bad_encoding_with_raw_body():
    raw = gzip.compress(GZ_BODY)[:-10]
    data = response("200 OK", [("Content-Encoding", "gzip"), ("Content-Length", str(len(raw)))], raw)
    (msg,), _ = run("response", data, [len(data) - 3], methods=["GET"])
    assert msg.body == raw and msg.partial_reasons == ["bad_encoding"]
    assert msg.body_marks == [(0, 1), (len(raw) - 3, 2)]


def test_unknown_coding_is_bad_encoding_with_raw_body():
    data = response("200 OK", [("Content-Encoding", "compress"), ("Content-Length", "3")], b"abc")
    (msg,), _ = run("response", data, methods=["GET"])
    assert msg.body == b"abc" and msg.partial_reasons == ["bad_encoding"]


def test_gap_in_body_returns_partial_and_resyncs_on_next_message():
    head = response("200 OK", [("Content-Length", "50")])
    parser = Http1Parser("response", MB)
    parser.expect_response_to("GET")
    parser.expect_response_to("GET")
    assert parser.feed(head + b"a" * 20, 1) == []
    (partial,) = parser.gap(2)
    assert partial.partial_reasons == ["gap"] and partial.body == b"a" * 20
    assert partial.ts_end_ns == 1
    # After the gap: the tail of the lost message, then a whole new one.
    (nxt,) = parser.feed(b"aaaa\r\nmore junk\n" + NEXT, 3)
    assert nxt.body == b"next" and nxt.complete and nxt.ts_start_ns == 3
    assert parser.skipped_bytes == len(b"aaaa\r\nmore junk\n")


def test_gap_between_messages_then_message_at_piece_start():
    parser = Http1Parser("request", MB)
    assert parser.gap(1) == []
    (msg,) = parser.feed(b"GET /after-gap HTTP/1.1\r\n\r\n", 2)
    assert msg.target == "/after-gap" and msg.complete and parser.protocol_error is None


def test_gap_inside_headers_returns_partial_headers():
    parser = Http1Parser("request", MB)
    parser.feed(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Le", 1)
    (msg,) = parser.gap(2)
    assert msg.headers == [("Host", "a")] and msg.partial_reasons == ["gap"]


def test_resync_waits_for_a_start_line_split_across_pieces():
    parser = Http1Parser("request", MB)
    parser.gap(1)
    assert parser.feed(b"junk\nGET /spl", 2) == []
    (msg,) = parser.feed(b"it HTTP/1.1\r\n\r\n", 3)
    assert msg.target == "/split" and msg.ts_start_ns == 2


def test_resync_finds_a_message_that_begins_a_tls_call_without_a_newline_before_it():
    # The lost request's body ends without a newline; the next request is its own SSL_write.
    parser = Http1Parser("request", MB)
    parser.gap(1)
    assert parser.feed(b'of the lost body": 1}', 2) == []
    (msg,) = parser.feed(b"POST /next HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 3)
    assert (msg.target, msg.body, msg.ts_start_ns) == ("/next", b"{}", 3)
    assert parser.skipped_bytes == len(b'of the lost body": 1}') and parser.resyncs == 1


def test_resync_waits_for_a_start_line_split_across_tls_calls():
    parser = Http1Parser("response", MB)
    parser.gap(1)
    assert parser.feed(b"tail of a lost body", 2) == []
    assert parser.feed(b"HTTP/1.1 2", 3) == []
    (msg,) = parser.feed(b"00 OK\r\nContent-Length: 1\r\n\r\nx", 4)
    assert (msg.status, msg.body, msg.ts_start_ns) == (200, b"x", 3)


def test_resync_skips_a_call_start_that_is_no_start_line():
    parser = Http1Parser("response", MB)
    parser.gap(1)
    assert parser.feed(b"junk ", 2) == []
    assert parser.feed(b"HTTP/1.1 2xx is what the body said\r\n", 3) == []
    (msg,) = parser.feed(b"HTTP/1.1 204 No Content\r\n\r\n", 4)
    assert msg.status == 204


def test_forgotten_expectations_do_not_frame_the_next_response():
    parser = Http1Parser("response", MB)
    parser.expect_response_to("HEAD")
    parser.forget_expected()
    (msg,) = parser.feed(response("200 OK", [("Content-Length", "2")], b"ok"), 1)
    assert msg.body == b"ok"


def test_close_mid_message_is_connection_closed():
    parser = Http1Parser("request", MB)
    parser.feed(b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1)
    (msg,) = parser.close(5)
    assert msg.body == b"abc" and msg.partial_reasons == ["connection_closed"] and msg.ts_end_ns == 1


def test_close_for_other_reasons_leaves_read_until_close_partial():
    parser = Http1Parser("response", MB)
    parser.feed(b"HTTP/1.1 200 OK\r\n\r\nabc", 1)
    (msg,) = parser.close(5, "process_exit")
    assert msg.body == b"abc" and msg.partial_reasons == ["process_exit"]


def test_bad_chunk_size_is_malformed_then_resync():
    data = response("200 OK", [("Transfer-Encoding", "chunked")], b"5\r\nhello\r\nzz\r\n") + NEXT
    (bad, nxt), parser = run("response", data, methods=["GET", "GET"])
    assert bad.body == b"hello" and bad.partial_reasons == ["malformed"]
    assert nxt.body == b"next"


def test_chunk_longer_than_declared_is_malformed():
    data = response("200 OK", [("Transfer-Encoding", "chunked")], b"2\r\nhello\r\n0\r\n\r\n") + NEXT
    (bad, nxt), _ = run("response", data, methods=["GET", "GET"])
    assert bad.partial_reasons == ["malformed"] and nxt.body == b"next"


@pytest.mark.parametrize("value", ["abc", "-1", "5, 6", "1" * 30])
def test_invalid_content_length_is_malformed_then_resync(value):
    data = (b"POST /a HTTP/1.1\r\nContent-Length: " + value.encode() + b"\r\n\r\nhello\r\n"
            + b"GET /b HTTP/1.1\r\n\r\n")
    (bad, nxt), _ = run("request", data)
    assert bad.partial_reasons == ["malformed"] and (nxt.target, nxt.complete) == ("/b", True)


def test_request_transfer_coding_without_chunked_is_malformed():
    data = b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxx\r\nGET /b HTTP/1.1\r\n\r\n"
    (bad, nxt), _ = run("request", data)
    assert bad.partial_reasons == ["malformed"] and nxt.target == "/b"


def test_garbage_between_messages_is_skipped():
    data = b"GET /a HTTP/1.1\r\n\r\n\x00\x01garbage\r\nmore\r\nGET /b HTTP/1.1\r\n\r\n"
    out, parser = run("request", data)
    assert [m.target for m in out] == ["/a", "/b"] and all(m.complete for m in out)
    assert parser.skipped_bytes == len(b"\x00\x01garbage\r\nmore\r\n")


@pytest.mark.parametrize("role,data,reason", [
    ("request", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00", "http2_preface"),
    ("request", b"\x16\x03\x01\x02\x00", "not_http1"),
    ("request", b"get / HTTP/1.1\r\n\r\n", "not_http1"),
    ("response", b"\x00\x00\x12\x04\x00", "not_http1"),
    ("response", b"HTTP/2 200\r\n\r\n", "not_http1"),
])
def test_non_http1_stream_start_sets_protocol_error(role, data, reason):
    out, parser = run(role, data, [3])
    assert out == [] and parser.protocol_error == reason
    assert parser.feed(b"GET / HTTP/1.1\r\n\r\n", 9) == []


def test_upgrade_and_tunnel_stop_parsing():
    data = response("101 Switching Protocols", [("Upgrade", "websocket")]) + b"\x81\x05hello"
    (msg,), parser = run("response", data, methods=["GET"])
    assert msg.status == 101 and parser.protocol_error == "upgrade"
    (msg,), parser = run("response", response("200 OK", []) + b"\x16\x03", methods=["CONNECT"])
    assert msg.status == 200 and parser.protocol_error == "tunnel"


def test_response_without_expected_method_assumes_body_framing():
    (msg,), _ = run("response", response("200 OK", [("Content-Length", "2")], b"hi"))
    assert msg.body == b"hi"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6),
       st.sampled_from(["request", "response"]), st.booleans())
def test_garbage_never_raises(data, cuts, role, with_gap):
    first = b"GET / HTTP/1.1\r\n\r\n" if role == "request" else b"HTTP/1.1 204 No Content\r\n\r\n"
    parser = Http1Parser(role, 128, 256)
    out = parser.feed(first, 1)
    prev = 0
    for n, cut in enumerate(sorted(cuts) + [len(data)]):
        out += parser.feed(data[prev:cut], n + 2)
        prev = max(prev, cut)
        if with_gap and n == 0:
            out += parser.gap(n + 2)
    out += parser.close(99)
    assert out[0].complete
    for msg in out:
        assert len(msg.body) <= 128 and (msg.complete or msg.partial_reasons)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_corpus_never_raises_and_stays_bounded(data):
    name = data.draw(st.sampled_from(sorted(CORPUS)))
    role, methods, stream, _ = CORPUS[name]
    stream = bytearray(stream)
    for _ in range(data.draw(st.integers(1, 5))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    out, parser = run(role, bytes(stream), cuts, methods, max_body=64, max_header=256, close=True)
    for msg in out:
        assert len(msg.body) <= 64 and (msg.complete or msg.partial_reasons)
