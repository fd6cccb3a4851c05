"""gRPC over HTTP/2 framing: what can be told of a call without its protobuf schema.

A gRPC call is an HTTP/2 POST with Content-Type application/grpc[+proto|+json|...] to
`/<package>.<Service>/<Method>`; each body is a sequence of length-prefixed messages (a 1-byte
compressed flag, a 4-byte big-endian length, the message), and the status comes as the
`grpc-status` / `grpc-message` trailers (or headers, for a trailers-only answer). The decode layer
de-frames HTTP/2 only; this module reads that one level more, for the providers layer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .messages import HttpMessage

_PATH = re.compile(r"^/(?P<service>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)+)/(?P<method>[A-Za-z_]\w*)$")
_PREFIX = 5

# grpc-status codes by number (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
STATUS_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)


def is_grpc(message: HttpMessage) -> bool:
    content_type = (message.header("content-type") or "").strip().lower()
    return content_type == "application/grpc" or content_type.startswith(("application/grpc+", "application/grpc;"))


def service_method(target: str) -> Optional[Tuple[str, str]]:
    """(service, method) of a gRPC path, e.g. ("google.ai.generativelanguage.v1beta.GenerativeService",
    "GenerateContent"), or None if the path is not one."""
    match = _PATH.match(target.split("?", 1)[0])
    return (match.group("service"), match.group("method")) if match else None


@dataclass
class Messages:
    """The length-prefixed messages of one body: their sizes, which were compressed, and the
    bytes after the last whole one (a body cut short, or not gRPC framing at all)."""

    sizes: List[int] = field(default_factory=list)
    compressed: List[bool] = field(default_factory=list)
    payloads: List[bytes] = field(default_factory=list)
    trailing: int = 0


def messages(body: bytes) -> Messages:
    out = Messages()
    pos = 0
    while len(body) - pos >= _PREFIX:
        flag, size = body[pos], int.from_bytes(body[pos + 1:pos + 5], "big")
        if flag > 1 or pos + _PREFIX + size > len(body):
            break
        out.sizes.append(size)
        out.compressed.append(flag == 1)
        out.payloads.append(body[pos + _PREFIX:pos + _PREFIX + size])
        pos += _PREFIX + size
    out.trailing = len(body) - pos
    return out


def status(message: HttpMessage) -> Optional[Tuple[int, str, Optional[str]]]:
    """(code, name, grpc-message) from the trailers or a trailers-only head, None if absent."""
    raw = message.header("grpc-status")
    if raw is None or not raw.strip().isdigit():
        return None
    code = int(raw.strip())
    name = STATUS_NAMES[code] if code < len(STATUS_NAMES) else str(code)
    return code, name, message.header("grpc-message")
