"""Load the recorded provider exchanges in shared/fixtures/llm/ (format: that folder's README.md).

Both the replay server and the client programs read fixtures through this module, so the bytes a
client sends and the bytes the server replays come from one interpretation of the files.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit
from tests.support.paths import FIXTURES_DIR as SHARED_FIXTURES_DIR


# The fixtures live in shared/ beside the repository (in /work and in CI's clone alike).
FIXTURES_DIR = Path(os.environ.get("OISP_FIXTURES_DIR", str(SHARED_FIXTURES_DIR)))

STREAMING_CONTENT_TYPES = (
    "text/event-stream",
    "application/x-ndjson",
    "application/stream+json",
    "application/vnd.amazon.eventstream",
)


@dataclass(frozen=True)
class Fixture:
    """One recorded request/response pair, with bodies as bytes and the URL split up."""

    name: str
    provider: str
    method: str
    url: str
    host: str
    scheme: str
    path: str
    query: str
    request_headers: Dict[str, Any]
    request_body: bytes
    status: int
    reason: str
    response_headers: Dict[str, Any]
    response_body: bytes
    decoded_from: Optional[str]
    expect: Dict[str, Any]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @property
    def target(self) -> str:
        """Request target as sent on the wire (path plus query, no fragment)."""
        return self.path + ("?" + self.query if self.query else "")

    @property
    def response_content_type(self) -> str:
        return header_value(self.response_headers, "content-type") or ""

    @property
    def streaming(self) -> bool:
        ctype = self.response_content_type.split(";")[0].strip().lower()
        return ctype in STREAMING_CONTENT_TYPES

    def request_json(self) -> Dict[str, Any]:
        """The request body parsed as JSON ({} when there is no body)."""
        return json.loads(self.request_body) if self.request_body.strip() else {}


def header_value(headers: Dict[str, Any], name: str) -> Optional[str]:
    """Case-insensitive lookup in a fixture header dict; a repeated header yields its first value."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value[0] if isinstance(value, list) else value
    return None


def header_items(headers: Dict[str, Any]) -> List[Tuple[str, str]]:
    """Flatten a fixture header dict (lists for repeated headers) into (name, value) pairs."""
    items: List[Tuple[str, str]] = []
    for key, value in headers.items():
        for one in value if isinstance(value, list) else [value]:
            items.append((key, str(one)))
    return items


def _body_bytes(text: Optional[str], encoding: str = "utf-8") -> bytes:
    if not text:
        return b""
    if encoding == "base64":
        return base64.b64decode(text)
    return text.encode("utf-8")


def parse_fixture(name: str, data: Dict[str, Any]) -> Fixture:
    request = data["request"]
    response = data["response"]
    url = urlsplit(request["url"])
    return Fixture(
        name=name,
        provider=data["provider"],
        method=request["method"].upper(),
        url=request["url"],
        host=url.hostname or "",
        scheme=url.scheme,
        path=url.path or "/",
        query=url.query,
        request_headers=request.get("headers") or {},
        request_body=_body_bytes(request.get("body")),
        status=int(response["status"]),
        reason=response.get("reason") or "",
        response_headers=response.get("headers") or {},
        response_body=_body_bytes(response.get("body"), response.get("body_encoding", "utf-8")),
        decoded_from=response.get("decoded_from"),
        expect=data.get("expect") or {},
        raw=data,
    )


def load_fixture(name: str, directory: Optional[Path] = None) -> Fixture:
    """Load one fixture by file stem (``openai-chat-001``) or path."""
    path = Path(name)
    if not path.suffix:
        path = Path(directory or FIXTURES_DIR) / (name + ".json")
    with open(path, encoding="utf-8") as handle:
        return parse_fixture(path.stem, json.load(handle))


def load_fixtures(directory: Optional[Path] = None) -> Dict[str, Fixture]:
    """All fixtures of a directory, keyed by name, in name order."""
    folder = Path(directory or FIXTURES_DIR)
    return {path.stem: load_fixture(str(path)) for path in sorted(folder.glob("*.json"))}
