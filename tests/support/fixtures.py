"""Recorded provider traffic (shared/fixtures/llm, see its README) as the HTTP messages the
decode layer hands to the provider parsers."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple
from urllib.parse import urlsplit

from oisp_daemon.decode.messages import Headers, HttpRequest, HttpResponse
from tests.support.paths import FIXTURES_DIR

FIXTURE_DIR = FIXTURES_DIR
# Kernel-monotonic timestamps given to fixture messages: the request is sent at REQUEST_TS, the
# response starts RESPONSE_DELAY_NS later and each further SSE event (or 4 KiB of a plain body)
# arrives CHUNK_INTERVAL_NS after the previous one.
REQUEST_TS = 5_000_000_000
REQUEST_DURATION_NS = 2_000_000
RESPONSE_DELAY_NS = 150_000_000
CHUNK_INTERVAL_NS = 10_000_000
_PLAIN_CHUNK = 4096


def fixture_paths(*globs: str) -> List[Path]:
    """Fixture files matching any of the globs (e.g. "openai-*.json"), sorted by name."""
    found = set()
    for pattern in globs:
        found.update(FIXTURE_DIR.glob(pattern))
    return sorted(found)


def load_fixture(name: str) -> Dict[str, Any]:
    path = Path(name) if "/" in name else FIXTURE_DIR / name
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def headers_list(headers: Dict[str, Any]) -> Headers:
    """Fixture headers (a repeated header is a list) as the decode layer's (name, value) list."""
    pairs: Headers = []
    for name, value in headers.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, str(item)))
    return pairs


def body_bytes(message: Dict[str, Any]) -> bytes:
    body = message.get("body") or ""
    if message.get("body_encoding") == "base64":
        return base64.b64decode(body)
    return body.encode("utf-8")


def fixture_host(fx: Dict[str, Any]) -> str:
    """The Host header, or the URL's authority when the cassette did not keep it."""
    for name, value in fx["request"]["headers"].items():
        if name.lower() == "host":
            return str(value)
    return urlsplit(fx["request"]["url"]).netloc


def fixture_request(fx: Dict[str, Any]) -> HttpRequest:
    url = urlsplit(fx["request"]["url"])
    target = url.path + ("?" + url.query if url.query else "")
    body = body_bytes(fx["request"])
    return HttpRequest(
        headers=headers_list(fx["request"]["headers"]),
        body=body,
        ts_start_ns=REQUEST_TS,
        ts_end_ns=REQUEST_TS + REQUEST_DURATION_NS,
        wire_body_bytes=len(body),
        method=fx["request"]["method"],
        target=target,
    )


def stream_event_ends(body: bytes, content_type: str) -> List[int]:
    """Where each streamed event ends, by the framing its Content-Type names: SSE events end at
    a blank line, NDJSON (Ollama, Cohere v1) at a newline, AWS event stream messages at the
    length in their prelude. Empty for a body that is not a stream."""
    content_type = content_type.lower()
    if "event-stream" in content_type and "amazon" not in content_type:
        return [m.end() for m in re.finditer(rb"\r?\n\r?\n", body)]
    if "ndjson" in content_type or "stream+json" in content_type:
        return [m.end() for m in re.finditer(rb"\n", body)]
    if "amazon.eventstream" in content_type:
        ends, offset = [], 0
        while offset + 4 <= len(body):
            offset += int.from_bytes(body[offset:offset + 4], "big")
            ends.append(min(offset, len(body)))
        return ends
    return []


def _chunk_ends(body: bytes, content_type: str) -> List[int]:
    """Where each simulated TLS read ends: after each streamed event, or every 4 KiB."""
    ends = stream_event_ends(body, content_type) or list(range(_PLAIN_CHUNK, len(body), _PLAIN_CHUNK))
    if not ends or ends[-1] != len(body):
        ends.append(len(body))
    return ends


def body_marks(body: bytes, content_type: str, start_ns: int) -> List[Tuple[int, int]]:
    """(offset, ts) marks of a body delivered in chunks, as the decode layer records them."""
    marks = []
    offset = 0
    for i, end in enumerate(_chunk_ends(body, content_type)):
        marks.append((offset, start_ns + i * CHUNK_INTERVAL_NS))
        offset = end
    return marks


def fixture_response(fx: Dict[str, Any]) -> HttpResponse:
    response = fx["response"]
    body = body_bytes(response)
    headers = headers_list(response["headers"])
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    start = REQUEST_TS + RESPONSE_DELAY_NS
    marks = body_marks(body, content_type, start)
    return HttpResponse(
        headers=headers,
        body=body,
        ts_start_ns=start,
        ts_end_ns=marks[-1][1],
        body_marks=marks,
        wire_body_bytes=len(body),
        status=int(response["status"]),
        reason=response.get("reason") or "",
    )


def sse_body(*events: Any) -> bytes:
    """An SSE body from (event name, JSON-able data) pairs or bare data (dicts, or raw strings)."""
    out = []
    for item in events:
        name, data = item if isinstance(item, tuple) else (None, item)
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return "".join(out).encode()


def http_request(target: str, body: Any = b"", headers: Headers = (), method: str = "POST") -> HttpRequest:
    """A request as decode would deliver it; a dict/list body is sent as JSON."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    return HttpRequest(
        headers=list(headers),
        body=data,
        ts_start_ns=REQUEST_TS,
        ts_end_ns=REQUEST_TS + REQUEST_DURATION_NS,
        wire_body_bytes=len(data),
        method=method,
        target=target,
    )


def http_response(body: Any = b"", status: int = 200, content_type: str = "application/json", headers: Headers = ()) -> HttpResponse:
    """A response as decode would deliver it; a dict/list body is sent as JSON. SSE bodies get one
    body mark per event, CHUNK_INTERVAL_NS apart."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    all_headers = ([("Content-Type", content_type)] if content_type else []) + list(headers)
    start = REQUEST_TS + RESPONSE_DELAY_NS
    marks = body_marks(data, content_type, start)
    return HttpResponse(
        headers=all_headers,
        body=data,
        ts_start_ns=start,
        ts_end_ns=marks[-1][1],
        body_marks=marks,
        wire_body_bytes=len(data),
        status=status,
    )
