"""WebSocket frames and messages of one direction: every split point, masking, fragmentation,
control frames, permessage-deflate with and without context takeover, and frames the RFC forbids."""
from __future__ import annotations

import os
import zlib

import pytest

from oisp_daemon.decode import ws_frames
from oisp_daemon.decode.ws_frames import FrameParser
from oisp_daemon.decode.ws_messages import (
    UNEXPECTED_CONTINUATION, UNFINISHED_MESSAGE, Close, Inflater, Message, MessageReader,
)
from tests.support.ws_replay import Deflater, frame, message

MASK = b"\x37\xfa\x21\x3d"
LIMIT = 1 << 20


def feed_split(reader, data: bytes, cut: int):
    """Feed `data` in two TLS calls cut at `cut`; what both calls returned."""
    return reader.feed(data[:cut], 1) + reader.feed(data[cut:], 2)


def messages(items):
    return [(m.opcode, m.data, m.partial_reasons) for m in items if isinstance(m, Message)]


def stream(mask, deflater=None):
    """Several messages: two fragmented ones (one with a 16-bit length), a ping, a binary one,
    a text one, then a close frame."""
    texts = [b'{"type":"response.create","n":1}', b"x" * 300 + b"end", b"\x00\x01binary", b'{"type":"done"}']
    out = message(texts[0], mask, deflater, fragments=3) + message(texts[1], mask, deflater, fragments=2)
    out += frame(b"ping", ws_frames.PING, mask=mask) + message(texts[2], mask, deflater, opcode=2)
    out += message(texts[3], mask, deflater) + frame(b"\x03\xe8bye", ws_frames.CLOSE, mask=mask)
    return out, texts


@pytest.mark.parametrize("masked", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("deflate", [None, True, False], ids=["plain", "takeover", "no_takeover"])
def test_every_split_point_gives_the_same_messages(masked, deflate):
    mask = MASK if masked else None
    data, texts = stream(mask, None if deflate is None else Deflater(takeover=deflate))
    expected = [(1, texts[0], []), (1, texts[1], []), (2, texts[2], []), (1, texts[3], [])]
    for cut in range(len(data) + 1):
        inflater = None if deflate is None else Inflater(deflate, LIMIT)
        reader = MessageReader(LIMIT, inflater)
        got = feed_split(reader, data, cut)
        assert messages(got) == expected, cut
        closes = [c for c in got if isinstance(c, Close)]
        assert [(c.code, c.reason) for c in closes] == [(1000, "bye")]
        assert reader.control_frames == 1 and reader.error is None


def test_one_byte_at_a_time_with_timestamps():
    data = message(b"hello", MASK, fragments=5)
    reader = MessageReader(LIMIT, None)
    got = []
    for i in range(len(data)):
        got += reader.feed(data[i : i + 1], 100 + i)
    (msg,) = got
    assert msg.data == b"hello" and msg.ts_start_ns == 100 and msg.ts_end_ns == 100 + len(data) - 1


def test_a_ping_between_fragments_does_not_break_the_message():
    data = frame(b"hel", 1, fin=False) + frame(b"!", ws_frames.PING) + frame(b"lo", 0)
    reader = MessageReader(LIMIT, None)
    assert messages(reader.feed(data, 1)) == [(1, b"hello", [])]


def test_lengths_of_each_encoding():
    for size in (0, 125, 126, 65535, 65536, 70000):
        payload = os.urandom(size)
        (msg,) = MessageReader(LIMIT, None).feed(frame(payload, 2, mask=MASK), 1)
        assert msg.data == payload


def test_context_takeover_needs_every_message_in_order():
    # With takeover the second message refers back into the first one's window.
    deflater = Deflater(takeover=True)
    text = b'{"type":"response.output_text.delta","delta":"same words again"}'
    first, second = message(text, deflater=deflater), message(text, deflater=deflater)
    assert len(second) < len(first)  # it did use the shared window
    reader = MessageReader(LIMIT, Inflater(True, LIMIT))
    assert messages(reader.feed(first + second, 1)) == [(1, text, []), (1, text, [])]
    # An inflater without takeover cannot read it: the back reference points nowhere.
    fresh = MessageReader(LIMIT, Inflater(False, LIMIT))
    got = messages(fresh.feed(first + second, 1))
    assert got[0] == (1, text, []) and got[1][1] != text


def test_window_bits_smaller_than_15_are_read():
    deflater = Deflater(takeover=True, window_bits=9)
    texts = [b"abc" * 400, b"abcabc" * 100]
    data = b"".join(message(t, deflater=deflater) for t in texts)
    assert messages(MessageReader(LIMIT, Inflater(True, LIMIT)).feed(data, 1)) == [(1, t, []) for t in texts]


def test_uncompressed_messages_between_compressed_ones():
    deflater = Deflater(takeover=True)
    data = message(b"one", deflater=deflater) + message(b"two") + message(b"three", deflater=deflater)
    got = messages(MessageReader(LIMIT, Inflater(True, LIMIT)).feed(data, 1))
    assert [g[1] for g in got] == [b"one", b"two", b"three"]


def test_a_decompression_bomb_is_cut_at_the_limit():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = bomb.compress(b"\x00" * (64 << 20)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    payload = payload[:-4]
    assert len(payload) < 100_000
    reader = MessageReader(1 << 16, Inflater(True, 1 << 16))
    (msg,) = reader.feed(frame(payload, 1, rsv1=True), 1)
    assert len(msg.data) == 1 << 16 and msg.partial_reasons == ["body_limit"]
    # The shared window is unknown now: later compressed messages cannot be read, and say so.
    (after,) = reader.feed(message(b"next", deflater=Deflater()), 2)
    assert after.data == b"" and after.partial_reasons == ["deflate_context_lost"]
    assert reader.error is None


def test_a_bomb_without_takeover_costs_only_that_message():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = bomb.compress(b"a" * (8 << 20)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    reader = MessageReader(1 << 16, Inflater(False, 1 << 16))
    got = reader.feed(frame(payload[:-4], 1, rsv1=True) + message(b"next", deflater=Deflater(takeover=False)), 1)
    assert [(len(m.data), m.partial_reasons) for m in got] == [(1 << 16, ["body_limit"]), (4, [])]


def test_invalid_deflate_data_is_a_partial_message_not_an_error():
    reader = MessageReader(LIMIT, Inflater(False, LIMIT))
    got = reader.feed(frame(b"\xff\xff\xff\xff garbage", 1, rsv1=True) + message(b"ok", deflater=Deflater(False)), 1)
    assert [(m.data, m.partial_reasons) for m in got] == [(b"", ["bad_deflate"]), (b"ok", [])]


def test_a_payload_over_the_limit_is_followed_not_stored():
    reader = MessageReader(1000, None)
    big = frame(b"y" * 5000, 1, mask=MASK) + message(b"after", MASK)
    for cut in (1, 500, 3000, len(big) - 3):
        reader = MessageReader(1000, None)
        got = feed_split(reader, big, cut)
        assert [(len(m.data), m.partial_reasons) for m in got] == [(1000, ["body_limit"]), (5, [])]


def test_fragments_over_the_limit_together():
    data = message(b"z" * 3000, fragments=3) + message(b"ok")
    got = MessageReader(2000, None).feed(data, 1)
    assert [(len(m.data), m.partial_reasons) for m in got] == [(2000, ["body_limit"]), (2, [])]


def test_a_frame_claiming_2_to_the_63_bytes_is_an_error_without_allocation():
    parser = FrameParser(LIMIT)
    head = bytes([0x81, 127]) + (1 << 63).to_bytes(8, "big")
    assert parser.feed(head + b"more bytes", 1) == []
    assert parser.error == ws_frames.BAD_LENGTH
    assert parser.feed(message(b"ignored"), 2) == []  # boundaries are lost: nothing more


def test_a_frame_claiming_2_to_the_63_minus_1_bytes_is_followed_not_stored():
    parser = FrameParser(1000)
    head = bytes([0x82, 127]) + ((1 << 63) - 1).to_bytes(8, "big")
    assert parser.feed(head + b"a" * 5000, 1) == [] and parser.error is None
    assert len(parser._payload) == 1000  # what is kept is bounded by the limit, not the claim


@pytest.mark.parametrize("data, error", [
    (frame(b"x", 1, rsv_bits=0x20), ws_frames.RESERVED_BITS),
    (frame(b"x", 1, rsv_bits=0x10), ws_frames.RESERVED_BITS),
    (frame(b"x", 1, rsv1=True), ws_frames.RESERVED_BITS),  # RSV1 without permessage-deflate
    (frame(b"x", 3), ws_frames.BAD_OPCODE),
    (frame(b"x", 0xB), ws_frames.BAD_OPCODE),
    (frame(b"p" * 126, ws_frames.PING), ws_frames.BAD_CONTROL_FRAME),
    (frame(b"p", ws_frames.CLOSE, fin=False), ws_frames.BAD_CONTROL_FRAME),
])
def test_frames_the_rfc_forbids_stop_the_direction(data, error):
    reader = MessageReader(LIMIT, None)
    assert reader.feed(message(b"before") + data + message(b"after"), 1)[0].data == b"before"
    assert reader.error == error
    assert reader.feed(message(b"later"), 2) == []


def test_rsv1_on_a_continuation_is_an_error_even_with_deflate():
    reader = MessageReader(LIMIT, Inflater(True, LIMIT))
    reader.feed(frame(b"a", 1, fin=False, rsv1=True) + frame(b"b", 0, rsv1=True), 1)
    assert reader.error == ws_frames.RESERVED_BITS


def test_continuation_without_a_message_and_an_unfinished_message():
    reader = MessageReader(LIMIT, None)
    reader.feed(frame(b"a", 0), 1)
    assert reader.error == UNEXPECTED_CONTINUATION
    reader = MessageReader(LIMIT, None)
    reader.feed(frame(b"a", 1, fin=False) + frame(b"b", 1), 1)
    assert reader.error == UNFINISHED_MESSAGE


def test_unmask_at_any_offset():
    data = os.urandom(37)
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(data))
    for start in range(8):
        assert ws_frames.unmask(masked[start:], MASK, start) == data[start:]
