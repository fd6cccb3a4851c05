"""AWS event stream framing: whole and split messages, CRCs checked, corruption reported."""
from __future__ import annotations

import pytest

from oisp_daemon.decode.eventstream import EventStreamDecoder, encode_message

MESSAGES = [encode_message({":event-type": "messageStart", ":message-type": "event"}, b'{"role":"assistant"}'),
            encode_message({":event-type": "contentBlockDelta", ":message-type": "event"}, b'{"delta":{"text":"Hi"}}'),
            encode_message({":event-type": "messageStop", ":message-type": "event"}, b"")]
BODY = b"".join(MESSAGES)


def test_messages_decode_with_headers_payloads_and_offsets():
    decoder = EventStreamDecoder()
    got = decoder.feed(BODY)
    assert [m.header(":event-type") for m in got] == ["messageStart", "contentBlockDelta", "messageStop"]
    assert got[1].payload == b'{"delta":{"text":"Hi"}}' and got[-1].offset == len(BODY)
    assert decoder.finish() is None


@pytest.mark.parametrize("cut", range(1, len(BODY)))
def test_every_split_point_gives_the_same_messages(cut):
    decoder = EventStreamDecoder()
    got = decoder.feed(BODY[:cut]) + decoder.feed(BODY[cut:])
    assert [m.payload for m in got] == [m.payload for m in EventStreamDecoder().feed(BODY)]


@pytest.mark.parametrize("position,reason", [(2, "prelude CRC"), (20, "message CRC"), (len(MESSAGES[0]) - 2, "message CRC")])
def test_a_flipped_byte_is_caught_by_a_crc(position, reason):
    body = bytearray(BODY)
    body[position] ^= 0x40
    decoder = EventStreamDecoder()
    decoder.feed(bytes(body))
    assert reason in (decoder.error or "")


def test_an_impossible_length_stops_the_decoder_without_raising():
    import struct
    import zlib

    prelude = struct.pack(">II", 2**31, 0)
    decoder = EventStreamDecoder()
    assert decoder.feed(prelude + struct.pack(">I", zlib.crc32(prelude)) + b"x" * 100) == []
    assert "impossible length" in decoder.error and decoder.feed(BODY) == []


def test_a_stream_cut_inside_a_message_says_so():
    decoder = EventStreamDecoder()
    decoder.feed(BODY[:-3])
    assert "cut inside a message" in decoder.finish()
