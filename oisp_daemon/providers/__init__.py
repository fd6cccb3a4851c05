"""AI provider detection and per-API parsing: HTTP messages in, AiRequestInfo/AiResponseInfo out.

`registry.detect_provider` names the provider of a connection; `parse_request`/`parse_response`
(providers/parse.py) pick the parser for its API.
"""
from __future__ import annotations

from oisp_daemon.providers.parse import parse_request, parse_response

__all__ = ["parse_request", "parse_response"]
