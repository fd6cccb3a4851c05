"""Chunk continuity: lost kernel records become gaps, never silent splices."""
from __future__ import annotations

from oisp_daemon.capture.reader import StreamAssembler
from oisp_daemon.capture.records import DataChunk


def chunk(seq, offset, total, data, direction="write", ssl=0x10, read_failed=False):
    return DataChunk(direction, 7, 7, 0, ssl, seq, total, offset, 1000 + seq, "python3", data, read_failed)


def kinds(events):
    return [type(e).__name__ for e in events]


def test_contiguous_calls_and_chunks_pass_through():
    asm = StreamAssembler()
    out = asm.feed(chunk(0, 0, 5, b"hello"))
    out += asm.feed(chunk(1, 0, 6, b"abc", "read"))
    out += asm.feed(chunk(1, 3, 6, b"def", "read"))
    out += asm.feed(chunk(2, 0, 1, b"!"))
    assert kinds(out) == ["StreamData"] * 4
    assert b"".join(e.data for e in out) == b"helloabcdef!"


def test_missing_call_sequence_is_a_gap():
    asm = StreamAssembler()
    asm.feed(chunk(0, 0, 2, b"ab"))
    out = asm.feed(chunk(2, 0, 2, b"cd"))
    assert kinds(out) == ["StreamGap", "StreamData"]


def test_missing_tail_chunk_of_a_call_is_a_gap():
    asm = StreamAssembler()
    asm.feed(chunk(0, 0, 32768, b"x" * 16384))
    out = asm.feed(chunk(1, 0, 1, b"y"))
    assert kinds(out) == ["StreamGap", "StreamData"]


def test_first_sight_mid_call_is_a_gap_but_at_call_start_is_not():
    assert kinds(StreamAssembler().feed(chunk(5, 16384, 32768, b"z"))) == ["StreamGap", "StreamData"]
    assert kinds(StreamAssembler().feed(chunk(5, 0, 1, b"z"))) == ["StreamData"]


def test_unreadable_user_buffer_is_a_gap_without_data():
    asm = StreamAssembler()
    out = asm.feed(chunk(0, 0, 10, b"", read_failed=True))
    assert kinds(out) == ["StreamGap"]
    assert kinds(asm.feed(chunk(1, 0, 1, b"a"))) == ["StreamData"]


def test_connections_are_independent_and_forgotten_on_close():
    asm = StreamAssembler()
    asm.feed(chunk(0, 0, 1, b"a", ssl=1))
    assert kinds(asm.feed(chunk(0, 0, 1, b"b", ssl=2))) == ["StreamData"]
    asm.forget((7, 1))
    assert kinds(asm.feed(chunk(0, 0, 1, b"c", ssl=1))) == ["StreamData"]
