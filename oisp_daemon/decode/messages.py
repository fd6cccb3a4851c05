"""HTTP messages as the decode layer hands them to the provider parsers.

Bodies are de-framed (chunked removed) and content-decoded (gzip, br, ...). Timestamps are kernel
monotonic nanoseconds of the TLS calls that carried the bytes, so latency and time to first token
measure the process's view, not the time this sensor got around to decoding.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

Headers = List[Tuple[str, str]]


def header_value(headers: Headers, name: str) -> Optional[str]:
    """First value of a header, matched case-insensitively (HTTP field names are)."""
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None


@dataclass
class HttpMessage:
    headers: Headers
    body: bytes
    ts_start_ns: int
    ts_end_ns: int
    # (offset into the decoded body, kernel ts of the TLS call that delivered it), ascending.
    body_marks: List[Tuple[int, int]] = field(default_factory=list)
    complete: bool = True
    # Why the message is not whole: "gap", "body_limit", "connection_closed", "bad_encoding", ...
    partial_reasons: List[str] = field(default_factory=list)
    # Size of the body on the wire before content decoding (and before any limit applied).
    wire_body_bytes: int = 0

    def header(self, name: str) -> Optional[str]:
        return header_value(self.headers, name)

    def ts_at_offset(self, offset: int) -> int:
        """Kernel ts of the call that delivered the body byte at `offset` (decoded body)."""
        if not self.body_marks:
            return self.ts_end_ns
        i = bisect.bisect_right(self.body_marks, (offset, 1 << 64)) - 1
        return self.body_marks[max(i, 0)][1]

    def mark_partial(self, reason: str) -> None:
        self.complete = False
        if reason not in self.partial_reasons:
            self.partial_reasons.append(reason)


@dataclass
class HttpRequest(HttpMessage):
    method: str = ""
    target: str = ""  # origin-form path and query, as on the request line
    version: str = "HTTP/1.1"


@dataclass
class HttpResponse(HttpMessage):
    status: int = 0
    reason: str = ""
    version: str = "HTTP/1.1"
