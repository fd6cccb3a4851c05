"""Content decoding: every coding, fed in pieces, bounded output, errors instead of crashes."""
from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard

from oisp_daemon.decode.content import ContentDecodingError, make_decoder, parse_codings

PLAIN = b"".join(b'data: {"i": %d, "text": "hello world"}\n\n' % i for i in range(400))


def raw_deflate(data: bytes) -> bytes:
    obj = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return obj.compress(data) + obj.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
}


def decode_in_pieces(coding, data: bytes, piece: int, max_output=None) -> bytes:
    dec = make_decoder(coding, max_output=max_output)
    out = [dec.feed(data[i : i + piece]) for i in range(0, len(data), piece)]
    out.append(dec.finish())
    return b"".join(out)


@pytest.mark.parametrize("coding", sorted(ENCODERS))
@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_each_coding_decodes_in_any_piece_size(coding, piece):
    assert decode_in_pieces(coding, ENCODERS[coding](PLAIN), piece) == PLAIN


@pytest.mark.parametrize("value", [None, "", "identity", " Identity "])
def test_identity_passes_bytes_through(value):
    assert decode_in_pieces(value, PLAIN, 100) == PLAIN


def test_coding_names_are_case_and_space_insensitive():
    assert decode_in_pieces(" GZip ", gzip.compress(PLAIN), 50) == PLAIN


def test_raw_deflate_is_detected():
    assert decode_in_pieces("deflate", raw_deflate(PLAIN), 1) == PLAIN


def test_gzip_multi_member_and_trailing_padding():
    body = gzip.compress(PLAIN[:1000]) + gzip.compress(PLAIN[1000:]) + b"\0\0\0"
    assert decode_in_pieces("gzip", body, 3) == PLAIN


def test_zstd_multiple_frames():
    cctx = zstandard.ZstdCompressor()
    body = cctx.compress(PLAIN[:500]) + cctx.compress(PLAIN[500:])
    assert decode_in_pieces("zstd", body, 5) == PLAIN


def test_zstd_streamed_frame_without_content_size():
    cobj = zstandard.ZstdCompressor().compressobj()
    body = cobj.compress(PLAIN) + cobj.flush()
    assert decode_in_pieces("zstd", body, 33) == PLAIN


def test_stacked_codings_are_decoded_in_reverse_order():
    body = brotli.compress(gzip.compress(PLAIN))  # gzip applied first, then br
    assert parse_codings("gzip, br") == ["gzip", "br"]
    assert decode_in_pieces("gzip, br", body, 11) == PLAIN


def test_empty_body_with_coding_is_empty():
    for coding in ENCODERS:
        assert decode_in_pieces(coding, b"", 1) == b""


def test_unknown_coding_raises():
    with pytest.raises(ContentDecodingError) as info:
        make_decoder("compress")
    assert "compress" in info.value.reason


def test_too_many_stacked_codings_raise():
    with pytest.raises(ContentDecodingError):
        make_decoder(", ".join(["gzip"] * 20))


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_corrupt_data_raises_decoding_error(coding):
    body = bytearray(ENCODERS[coding](PLAIN))
    body[len(body) // 2 : len(body) // 2 + 8] = b"\xff" * 8
    with pytest.raises(ContentDecodingError):
        decode_in_pieces(coding, bytes(body), 64)


def test_corrupt_zstd_frame_header_raises():
    body = bytearray(zstandard.ZstdCompressor().compress(PLAIN))
    body[0] ^= 0xFF
    with pytest.raises(ContentDecodingError):
        decode_in_pieces("zstd", bytes(body), 64)


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_truncated_stream_raises_at_finish(coding):
    body = ENCODERS[coding](PLAIN)
    dec = make_decoder(coding)
    dec.feed(body[: len(body) // 2])
    with pytest.raises(ContentDecodingError):
        dec.finish()


def test_not_gzip_at_all_raises():
    with pytest.raises(ContentDecodingError):
        decode_in_pieces("gzip", b"this is plain text, not gzip", 4)


@pytest.mark.parametrize("coding", sorted(ENCODERS) + ["gzip, br"])
def test_decompression_bomb_stops_at_limit(coding):
    bomb_plain = b"\0" * (64 << 20)
    if coding == "gzip, br":
        bomb = brotli.compress(gzip.compress(bomb_plain), quality=1)
    else:
        bomb = ENCODERS[coding](bomb_plain)
    dec = make_decoder(coding, max_output=100_000)
    out = b"".join(dec.feed(bomb[i : i + 4096]) for i in range(0, len(bomb), 4096))
    out += dec.finish()
    assert dec.limit_reached
    assert out == b"\0" * 100_000


def test_output_exactly_at_limit_is_not_flagged():
    dec = make_decoder("gzip", max_output=len(PLAIN))
    out = dec.feed(gzip.compress(PLAIN)) + dec.finish()
    assert out == PLAIN and not dec.limit_reached


def test_identity_is_bounded_too():
    dec = make_decoder(None, max_output=10)
    assert dec.feed(b"0123456789abc") == b"0123456789"
    assert dec.limit_reached
    assert dec.feed(b"more") == b""
