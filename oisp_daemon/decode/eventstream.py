"""Incremental decoder of AWS event streams (application/vnd.amazon.eventstream), the framing
of Bedrock's ConverseStream and InvokeModelWithResponseStream answers.

A message is: total length (4 bytes, big-endian), headers length (4), a CRC32 of those eight
bytes, the headers, the payload, and a CRC32 of everything before it. Both CRCs are checked; a
message that fails either, or claims an impossible length, is counted and the decoder stops
(there is no way to find the next message boundary in a corrupt stream). It never raises.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

HeaderValue = Union[str, bytes, int, bool]

_PRELUDE = struct.Struct(">III")
_MIN_MESSAGE = _PRELUDE.size + 4
MAX_MESSAGE = 16 << 20  # AWS caps a message at 16 MiB

# Header value types: fixed sizes, or a 2-byte length prefix (6 bytes, 7 string).
_FIXED = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


@dataclass
class EventMessage:
    headers: Dict[str, HeaderValue]
    payload: bytes
    offset: int  # body offset just past the message

    @property
    def message_type(self) -> Optional[str]:
        value = self.headers.get(":message-type")
        return value if isinstance(value, str) else None

    def header(self, name: str) -> Optional[str]:
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


@dataclass
class EventStreamDecoder:
    _buf: bytearray = field(default_factory=bytearray)
    _base: int = 0  # body offset of _buf[0]
    error: Optional[str] = None  # set once the stream is corrupt; nothing more is decoded

    def feed(self, data: bytes) -> List[EventMessage]:
        if self.error:
            return []
        self._buf += data
        messages: List[EventMessage] = []
        while len(self._buf) >= _PRELUDE.size:
            total, headers_len, prelude_crc = _PRELUDE.unpack_from(self._buf)
            if zlib.crc32(bytes(self._buf[:8])) != prelude_crc:
                return self._fail(messages, "event stream prelude CRC mismatch")
            if total < _MIN_MESSAGE + headers_len or total > MAX_MESSAGE:
                return self._fail(messages, f"event stream message of impossible length {total}")
            if len(self._buf) < total:
                break
            raw = bytes(self._buf[:total])
            (message_crc,) = struct.unpack_from(">I", raw, total - 4)
            if zlib.crc32(raw[:-4]) != message_crc:
                return self._fail(messages, "event stream message CRC mismatch")
            headers = _headers(raw[_PRELUDE.size:_PRELUDE.size + headers_len])
            if headers is None:
                return self._fail(messages, "event stream headers malformed")
            del self._buf[:total]
            self._base += total
            messages.append(EventMessage(headers, raw[_PRELUDE.size + headers_len:-4], self._base))
        return messages

    def finish(self) -> Optional[str]:
        """End of body: an error if the stream was corrupt or cut inside a message."""
        if not self.error and self._buf:
            self.error = f"event stream cut inside a message ({len(self._buf)} bytes left)"
        return self.error

    def _fail(self, messages: List[EventMessage], reason: str) -> List[EventMessage]:
        self.error = reason
        self._buf = bytearray()
        return messages


def _headers(raw: bytes) -> Optional[Dict[str, HeaderValue]]:
    headers: Dict[str, HeaderValue] = {}
    pos = 0
    try:
        while pos < len(raw):
            name_len = raw[pos]
            name = raw[pos + 1:pos + 1 + name_len].decode("utf-8", "replace")
            pos += 1 + name_len
            kind = raw[pos]
            pos += 1
            value: HeaderValue
            if kind in (0, 1):
                value = kind == 0
            elif kind in _FIXED:
                size = _FIXED[kind]
                chunk = raw[pos:pos + size]
                if len(chunk) != size:
                    return None
                value = chunk if kind == 9 else int.from_bytes(chunk, "big", signed=True)
                pos += size
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", raw, pos)
                chunk = raw[pos + 2:pos + 2 + length]
                if len(chunk) != length:
                    return None
                value = chunk.decode("utf-8", "replace") if kind == 7 else chunk
                pos += 2 + length
            else:
                return None
            headers[name] = value
    except (IndexError, struct.error):
        return None
    return headers


def encode_message(headers: Dict[str, str], payload: bytes) -> bytes:
    """One message with string headers: for replay servers and tests that build streams."""
    raw_headers = b"".join(
        bytes([len(name.encode())]) + name.encode() + b"\x07" + struct.pack(">H", len(value.encode())) + value.encode()
        for name, value in headers.items()
    )
    total = _MIN_MESSAGE + len(raw_headers) + len(payload)
    prelude = struct.pack(">II", total, len(raw_headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return head + struct.pack(">I", zlib.crc32(head))
