"""WebSocket wire bytes for tests: frames as RFC 6455 lays them out (masking, fragmentation,
permessage-deflate), and a recorded Responses API stream turned into its WebSocket form.

Written from the RFC, independently of the sensor's decoder, so that the tests check one against
the other; the replay server (tests/support/ws_replay_server.py) uses aiohttp's own framing.
"""
from __future__ import annotations

import json
import zlib
from typing import Dict, List, Optional, Tuple

from oisp_daemon.decode.sse import parse_sse
from tests.support.llm_fixtures import Fixture

ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455's example Sec-WebSocket-Accept


def frame(payload: bytes, opcode: int = 1, fin: bool = True, mask: Optional[bytes] = None,
          rsv1: bool = False, rsv_bits: int = 0, length: Optional[int] = None) -> bytes:
    """One frame; `length` overrides the announced payload length (for broken frames)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | rsv_bits | opcode])
    masked = 0x80 if mask else 0
    if n < 126:
        head += bytes([masked | n])
    elif n < 1 << 16:
        head += bytes([masked | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([masked | 127]) + n.to_bytes(8, "big")
    if mask:
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


class Deflater:
    """permessage-deflate of one sender: one compressor kept (context takeover) or one per message."""

    def __init__(self, takeover: bool = True, window_bits: int = 15) -> None:
        self.takeover = takeover
        self.window_bits = window_bits
        self._zlib = zlib.compressobj(wbits=-window_bits)

    def compress(self, data: bytes) -> bytes:
        if not self.takeover:
            self._zlib = zlib.compressobj(wbits=-self.window_bits)
        out = self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]


def message(data: bytes, mask: Optional[bytes] = None, deflater: Optional[Deflater] = None,
            fragments: int = 1, opcode: int = 1) -> bytes:
    """A whole message as `fragments` frames (compressed first if a deflater is given)."""
    payload = deflater.compress(data) if deflater else data
    size = max(1, -(-len(payload) // fragments))
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    out = b""
    for i, piece in enumerate(pieces):
        out += frame(piece, opcode if i == 0 else 0, fin=i == len(pieces) - 1, mask=mask,
                     rsv1=deflater is not None and i == 0)
    return out


def read_frames(buf: bytearray) -> List[Tuple[int, bytes]]:
    """(opcode, unmasked payload) of the whole frames at the start of `buf`, removed from it;
    for the test peers, which send unfragmented, uncompressed frames only."""
    out: List[Tuple[int, bytes]] = []
    while len(buf) >= 2:
        code, pos = buf[1] & 0x7F, 2
        if code >= 126:
            size = 2 if code == 126 else 8
            if len(buf) < 2 + size:
                break
            code, pos = int.from_bytes(buf[2 : 2 + size], "big"), 2 + size
        key = bytes(buf[pos : pos + 4]) if buf[1] & 0x80 else b""
        pos += len(key)
        if len(buf) < pos + code:
            break
        payload = bytes(buf[pos : pos + code])
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        out.append((buf[0] & 0x0F, payload))
        del buf[: pos + code]
    return out


def upgrade_request(target: str = "/v1/responses", host: str = "api.openai.com",
                    deflate: bool = False, headers: Optional[Dict[str, str]] = None) -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
             "Authorization: Bearer sk-test-websocket-key"]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def upgrade_response(extensions: Optional[str] = None) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Accept: {ACCEPT}"]
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response_create(fx: Fixture) -> Dict[str, object]:
    """The fixture's POST /v1/responses body as a response.create message (no "stream")."""
    body = {k: v for k, v in fx.request_json().items() if k != "stream"}
    return {"type": "response.create", **body}


def server_events(fx: Fixture) -> List[bytes]:
    """The recorded SSE events' JSON, one WebSocket text message each."""
    return [event.data.encode() for event in parse_sse(fx.response_body) if event.data.strip() not in ("", "[DONE]")]


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
