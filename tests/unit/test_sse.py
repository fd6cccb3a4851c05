"""SSE parser: WHATWG field rules, line endings, offsets, and independence from how bytes are cut."""
from __future__ import annotations

import glob
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oisp_daemon.decode.sse import SseEvent, SseParser, parse_sse
from tests.support.paths import FIXTURES_DIR

FIXTURES = str(FIXTURES_DIR)


def sse_fixture_bodies():
    """(name, body) of every recorded text/event-stream response."""
    out = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, "*-stream-*.json"))):
        with open(path) as f:
            response = json.load(f)["response"]
        ctype = {k.lower(): v for k, v in response["headers"].items()}.get("content-type", "")
        if "text/event-stream" in ctype and response["body_encoding"] == "utf-8":
            out.append((os.path.basename(path), response["body"].encode("utf-8")))
    return out


ALL_STREAMS = sse_fixture_bodies()
SMALL_STREAMS = [(name, body) for name, body in ALL_STREAMS if len(body) <= 12_000]


def parse_cut(body: bytes, cuts) -> tuple:
    parser = SseParser()
    events = []
    prev = 0
    for cut in list(cuts) + [len(body)]:
        events += parser.feed(body[prev:cut])
        prev = cut
    events += parser.finish()
    return events, parser.truncated


def test_fixture_corpus_is_present():
    assert len(ALL_STREAMS) >= 10
    assert len(SMALL_STREAMS) >= 3


def test_fields_event_data_id_and_offset():
    body = b"event: delta\nid: 7\ndata: hello\n\n"
    assert parse_sse(body) == [SseEvent(event="delta", data="hello", id="7", offset=len(body))]


def test_multi_line_data_is_joined_with_newline():
    assert parse_sse(b"data: a\ndata:b\ndata:  c\n\n")[0].data == "a\nb\n c"


def test_comments_and_unknown_fields_are_ignored():
    events = parse_sse(b": keep-alive\n\nfoo: bar\nretry: 10\ndata: x\n\n")
    assert [(e.event, e.data) for e in events] == [(None, "x")]


def test_field_without_colon_is_field_with_empty_value():
    events = parse_sse(b"data\ndata\n\nevent\ndata: y\n\n")
    assert [(e.event, e.data) for e in events] == [(None, "\n"), (None, "y")]


def test_blank_line_without_data_resets_event_type():
    events = parse_sse(b"event: ping\n\ndata: x\n\n")
    assert [(e.event, e.data) for e in events] == [(None, "x")]


def test_id_is_sticky_and_nul_id_is_ignored():
    events = parse_sse(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\x003\ndata: c\n\nid\ndata: d\n\n")
    assert [e.id for e in events] == ["1", "1", "1", None]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_gives_the_same_events(eol):
    body = eol.join([b"event: e", b"data: 1", b"data: 2", b"", b"data: 3", b"", b""])
    events = parse_sse(body)
    assert [(e.event, e.data) for e in events] == [("e", "1\n2"), (None, "3")]
    assert events[-1].offset == len(body)


def test_crlf_split_between_cr_and_lf_is_one_line_end():
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r\n\r") == []
    events = parser.feed(b"\nrest")
    assert [(e.data, e.offset) for e in events] == [("a\nb", 20)]


def test_trailing_cr_is_a_line_end_at_finish():
    parser = SseParser()
    assert parser.feed(b"data: a\r\r") == []
    assert [(e.data, e.offset) for e in parser.finish()] == [("a", 9)]
    assert not parser.truncated


def test_bom_at_start_is_skipped_even_when_split():
    parser = SseParser()
    assert parser.feed(b"\xef") == []
    assert parser.feed(b"\xbb") == []
    events = parser.feed(b"\xbfdata: x\n\n")
    assert [(e.data, e.offset) for e in events] == [("x", 12)]


def test_bom_later_in_stream_is_not_stripped():
    events = parse_sse(b"data: a\n\n\xef\xbb\xbfdata: b\n\n")
    assert [e.data for e in events] == ["a"]


def test_utf8_character_split_across_feeds():
    body = "data: héllo €\n\n".encode("utf-8")
    for i in range(len(body)):
        assert parse_cut(body, [i])[0][0].data == "héllo €"


def test_invalid_utf8_is_replaced():
    assert parse_sse(b"data: a\xff\xfeb\n\n")[0].data == "a\ufffd\ufffdb"


def test_unterminated_final_event_is_returned_and_flagged():
    parser = SseParser()
    assert [e.data for e in parser.feed(b"data: a\n\ndata: b\n")] == ["a"]
    events = parser.finish()
    assert [(e.data, e.offset) for e in events] == [("b", 17)]
    assert parser.truncated


def test_final_line_without_any_newline_is_processed():
    events, truncated = parse_cut(b"data: a\n\ndata: tail", [])
    assert [e.data for e in events] == ["a", "tail"] and truncated


def test_terminated_stream_is_not_truncated():
    events, truncated = parse_cut(b"data: a\n\n: trailing comment\n", [])
    assert [e.data for e in events] == ["a"] and not truncated


@pytest.mark.parametrize("name,body", SMALL_STREAMS, ids=[n for n, _ in SMALL_STREAMS])
def test_real_stream_cut_at_every_byte_equals_one_shot(name, body):
    expected = parse_sse(body)
    assert expected and expected[-1].offset <= len(body)
    for i in range(len(body) + 1):
        assert parse_cut(body, [i]) == (expected, False), "cut at %d" % i


@pytest.mark.parametrize("name,body", ALL_STREAMS, ids=[n for n, _ in ALL_STREAMS])
def test_real_stream_fed_byte_by_byte_equals_one_shot(name, body):
    assert parse_cut(body, range(1, len(body))) == (parse_sse(body), False)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_real_streams_random_multi_cuts_equal_one_shot(data):
    name, body = data.draw(st.sampled_from(ALL_STREAMS))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=40)))
    assert parse_cut(body, cuts) == (parse_sse(body), False)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_arbitrary_bytes_never_raise_and_cut_does_not_matter(body, cuts):
    cuts = sorted(c for c in cuts if c <= len(body))
    events, truncated = parse_cut(body, cuts)
    assert (events, truncated) == parse_cut(body, [])
    assert all(e.offset <= len(body) for e in events)
