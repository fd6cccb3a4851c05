"""What an event says about its capture when its bytes came from the socket syscalls.

The event builders describe the TLS path (a uprobe at the TLS library's boundary). A plain-HTTP
connection (capture/plain_http.py, bpf/sockets.c) was read from syscall tracepoints instead, as
plaintext on the wire: its events say so, in the OISP terms for it.
"""
from __future__ import annotations

from typing import Any, Dict

CAPTURE_METHOD = "ebpf_tracepoint"
_POINTS = {"ssl_write": "socket_write", "ssl_read": "socket_read"}
_REASONS = {"tls_boundary_capture": "plaintext_capture"}


def mark_plaintext(event: Dict[str, Any]) -> None:
    """Rewrite `source` and `confidence` of an event built for the TLS path, in place."""
    source = event.get("source")
    if isinstance(source, dict):
        source["capture_method"] = CAPTURE_METHOD
        point = source.get("capture_point")
        if point in _POINTS:
            source["capture_point"] = _POINTS[point]
    confidence = event.get("confidence")
    if isinstance(confidence, dict):
        if "content_source" in confidence:
            confidence["content_source"] = "plaintext_capture"
        if isinstance(confidence.get("reasons"), list):
            confidence["reasons"] = [_REASONS.get(r, r) for r in confidence["reasons"]]
