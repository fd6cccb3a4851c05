"""Incremental HTTP content decoding (Content-Encoding: gzip, deflate, br, zstd, stacked).

Bodies arrive in pieces as the TLS calls deliver them, so decoding is incremental: provider
parsers and time-to-first-token want decoded bytes per piece, not one decode at the end. Every
decoder bounds its output (`max_output`): a few KB of compressed input can expand to gigabytes, and
this runs inside a root daemon that must never be the thing that runs out of memory.

Errors surface as `ContentDecodingError`; the HTTP parser then keeps the raw bytes and marks the
message partial ("bad_encoding"). Reaching the output limit is not an error: the decoder returns
output up to the limit, sets `limit_reached` and ignores further input.
"""
from __future__ import annotations

import zlib
from typing import List, Optional

try:
    import brotli
except ImportError:  # optional distro package (python3-brotli)
    brotli = None

try:
    import zstandard
except ImportError:  # optional distro package (python3-zstandard)
    zstandard = None

# Stacking more codings than this is not something real servers do; refusing it bounds the number
# of decompressor states (each holds a window) a single hostile header can make us allocate.
MAX_STACKED_CODINGS = 4

# brotli and zstd decompressors here cannot bound their output per call, so input is fed in slices
# small enough that one slice cannot expand beyond a few MB before the limit check runs
# (brotli: ~1 MB of output per input byte is reachable; zstd: an RLE block is 4 bytes -> 128 KiB).
_BROTLI_SLICE = 16
_ZSTD_SLICE = 64

# RFC 9659: zstd as an HTTP content coding uses a window of at most 8 MB; a larger one would let a
# peer make us allocate up to the library's default (128 MB) per connection.
_ZSTD_MAX_WINDOW = 8 << 20


class ContentDecodingError(Exception):
    """The body cannot be decoded: unknown coding, corrupt or truncated compressed data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ContentDecoder:
    """One content-coding stage. Subclasses implement `_decode` and `_end`.

    `feed` returns decoded bytes, never more than `max_output` in total over the decoder's life.
    """

    def __init__(self, max_output: Optional[int]) -> None:
        self.max_output = max_output
        self.produced = 0
        self.limit_reached = False

    def feed(self, data: bytes) -> bytes:
        if self.limit_reached or not data:
            return b""
        return self._bound(self._decode(data))

    def finish(self) -> bytes:
        """End of body: return what is left; raise if the coded stream is not complete."""
        if self.limit_reached:
            return b""
        return self._bound(self._end())

    def _bound(self, out: bytes) -> bytes:
        if self.max_output is not None and self.produced + len(out) > self.max_output:
            out = out[: self.max_output - self.produced]
            self.limit_reached = True
        self.produced += len(out)
        return out

    def _budget(self) -> Optional[int]:
        """Output still allowed plus one byte, so that the overflow itself can be detected."""
        if self.max_output is None:
            return None
        return self.max_output - self.produced + 1

    def _decode(self, data: bytes) -> bytes:
        raise NotImplementedError

    def _end(self) -> bytes:
        raise NotImplementedError


class _Identity(ContentDecoder):
    def _decode(self, data: bytes) -> bytes:
        return data

    def _end(self) -> bytes:
        return b""


class _Zlib(ContentDecoder):
    """gzip (possibly several members) and deflate (zlib-wrapped or raw, detected)."""

    def __init__(self, coding: str, max_output: Optional[int]) -> None:
        super().__init__(max_output)
        self._gzip = coding in ("gzip", "x-gzip")
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS) if self._gzip else None
        self._pending = b""  # deflate: bytes held until the wrapper can be detected
        self._member_done = False  # gzip: a member ended; next byte starts another or is padding
        self._seen_input = False

    def _decode(self, data: bytes) -> bytes:
        self._seen_input = True
        if self._obj is None:
            self._pending += data
            if len(self._pending) < 2:
                return b""
            data, self._pending = self._pending, b""
            self._obj = zlib.decompressobj(self._deflate_wbits(data))
        out: List[bytes] = []
        while data:
            if self._member_done:
                data = data.lstrip(b"\0")  # some servers pad after the last member
                if not data:
                    break
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._member_done = False
            budget = self._budget()
            try:
                if budget is None:
                    chunk = self._obj.decompress(data)
                else:
                    chunk = self._obj.decompress(data, budget - sum(map(len, out)))
            except zlib.error as exc:
                raise ContentDecodingError("corrupt %s data: %s" % (self._name(), exc)) from None
            out.append(chunk)
            if budget is not None and sum(map(len, out)) >= budget:
                break  # over the limit; _bound truncates and stops us
            data = b""
            if self._obj.eof:
                if not self._gzip:
                    break  # deflate has one stream; anything after it is ignored
                data = self._obj.unused_data
                self._member_done = True
        return b"".join(out)

    def _end(self) -> bytes:
        if not self._seen_input:
            return b""
        if self._obj is None:
            raise ContentDecodingError("truncated deflate data")
        if self._member_done:
            return b""
        try:
            out = self._obj.flush()
        except zlib.error as exc:
            raise ContentDecodingError("corrupt %s data: %s" % (self._name(), exc)) from None
        if not self._obj.eof:
            raise ContentDecodingError("truncated %s data" % self._name())
        return out

    def _name(self) -> str:
        return "gzip" if self._gzip else "deflate"

    @staticmethod
    def _deflate_wbits(head: bytes) -> int:
        # "deflate" is specified as zlib-wrapped (RFC 1950) but some servers send raw deflate.
        cmf, flg = head[0], head[1]
        if cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0:
            return zlib.MAX_WBITS
        return -zlib.MAX_WBITS


class _Brotli(ContentDecoder):
    def __init__(self, max_output: Optional[int]) -> None:
        super().__init__(max_output)
        if brotli is None:
            raise ContentDecodingError("br not supported: python3-brotli is not installed")
        self._obj = brotli.Decompressor()
        self._seen_input = False

    def _decode(self, data: bytes) -> bytes:
        self._seen_input = True
        out: List[bytes] = []
        size = 0
        budget = self._budget()
        for i in range(0, len(data), _BROTLI_SLICE):
            try:
                chunk = self._obj.process(data[i : i + _BROTLI_SLICE])
            except brotli.error as exc:
                raise ContentDecodingError("corrupt br data: %s" % exc) from None
            out.append(chunk)
            size += len(chunk)
            if budget is not None and size >= budget:
                break
        return b"".join(out)

    def _end(self) -> bytes:
        if self._seen_input and not self._obj.is_finished():
            raise ContentDecodingError("truncated br data")
        return b""


class _Zstd(ContentDecoder):
    def __init__(self, max_output: Optional[int]) -> None:
        super().__init__(max_output)
        if zstandard is None:
            raise ContentDecodingError("zstd not supported: python3-zstandard is not installed")
        self._dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
        self._obj = self._dctx.decompressobj()
        if not hasattr(self._obj, "eof"):
            # Without it, frame ends (several frames, truncation) cannot be told apart.
            raise ContentDecodingError("zstd needs python3-zstandard >= 0.16")
        self._in_frame = False  # bytes of a frame were fed and its end was not seen yet

    def _decode(self, data: bytes) -> bytes:
        out: List[bytes] = []
        size = 0
        budget = self._budget()
        pos = 0
        while pos < len(data):
            piece = data[pos : pos + _ZSTD_SLICE]
            pos += len(piece)
            while piece:
                self._in_frame = True
                try:
                    chunk = self._obj.decompress(piece)
                except zstandard.ZstdError as exc:
                    raise ContentDecodingError("corrupt zstd data: %s" % exc) from None
                out.append(chunk)
                size += len(chunk)
                piece = b""
                if self._obj.eof:
                    # A body may hold several frames; each needs a fresh decompression object.
                    self._in_frame = False
                    piece = self._obj.unused_data
                    self._obj = self._dctx.decompressobj()
            if budget is not None and size >= budget:
                break
        return b"".join(out)

    def _end(self) -> bytes:
        if self._in_frame:
            raise ContentDecodingError("truncated zstd data")
        return b""


class _Stack(ContentDecoder):
    """Codings applied in header order; decoded in reverse, each stage bounded by the limit."""

    def __init__(self, stages: List[ContentDecoder], max_output: Optional[int]) -> None:
        super().__init__(max_output)
        self._stages = stages

    def _decode(self, data: bytes) -> bytes:
        for stage in self._stages:
            data = stage.feed(data)
            if stage.limit_reached:
                # A truncated inner stream would only make the next stage fail: stop here.
                self.limit_reached = True
        return data

    def _end(self) -> bytes:
        data = b""
        for stage in self._stages:
            data = stage.feed(data) + stage.finish()
        return data


def parse_codings(content_encoding: Optional[str]) -> List[str]:
    """Codings named by a Content-Encoding (or Transfer-Encoding) value, lower-cased, in the
    order they were applied; "identity" means none."""
    if not content_encoding:
        return []
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    return [c for c in codings if c and c != "identity"]


def _stage(coding: str, max_output: Optional[int]) -> ContentDecoder:
    if coding in ("gzip", "x-gzip", "deflate"):
        return _Zlib(coding, max_output)
    if coding == "br":
        return _Brotli(max_output)
    if coding == "zstd":
        return _Zstd(max_output)
    raise ContentDecodingError("unsupported content-coding: %s" % coding[:40])


def make_decoder(content_encoding: Optional[str],
                 max_output: Optional[int] = None) -> ContentDecoder:
    """Decoder for a Content-Encoding header value (None or "" means identity).

    Raises ContentDecodingError for an unknown coding, or one whose library is not installed.
    """
    codings = parse_codings(content_encoding)
    if len(codings) > MAX_STACKED_CODINGS:
        raise ContentDecodingError("too many stacked content-codings: %d" % len(codings))
    if not codings:
        return _Identity(max_output)
    if len(codings) == 1:
        return _stage(codings[0], max_output)
    return _Stack([_stage(c, max_output) for c in reversed(codings)], max_output)
