"""Pieces shared by the client programs in this folder.

The programs run as scripts under the project venv's Python (system CPython linked to the system
libssl, which the sensor hooks). They trust the test CA through an explicit ssl context, never
through environment variables, and print one JSON summary line on stdout: what they sent (as seen
by the HTTP client's event hooks, i.e. the real request bytes) and what they received.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.synthetic_bodies import sha256_hex  # noqa: E402

# Fake credentials: recognisable in captured headers, so redaction can be checked.
OPENAI_TEST_KEY = "sk-replay-test-0123456789abcdef"
ANTHROPIC_TEST_KEY = "sk-ant-replay-test-0123456789abcdef"
SDK_TEST_KEY = "sdk-replay-test-key-0123456789abcdef"  # the other providers' SDKs
AWS_ACCESS_KEY_ID = "AKIAREPLAYSDK0000000"  # boto3 signs with it (SigV4); the sensor reports it
SUMMARY_BODY_LIMIT = 65536  # bodies up to this size are copied into the summary
TIMEOUT_S = 60.0


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ca", required=True, help="PEM file of the CA to trust (the test CA)")
    return parser


def fixture_parser(description: str) -> argparse.ArgumentParser:
    """Arguments of the clients that replay one recorded request."""
    parser = base_parser(description)
    parser.add_argument("--fixture", required=True, help="fixture name (file stem)")
    parser.add_argument("--fixtures-dir", default=None, help="folder of the recorded fixtures")
    parser.add_argument("--raw", action="store_true", help="read a streamed body as bytes instead of parsing it")
    parser.add_argument("--no-fixture-header", action="store_true", help="let the server match by path and body")
    parser.add_argument("--http2", action="store_true", help="let httpx offer h2 by ALPN (http2=True)")
    return parser


def client_context(ca_file: str) -> ssl.SSLContext:
    """Trust exactly the given CA (httpx may ignore SSL_CERT_FILE, so this is passed explicitly)."""
    return ssl.create_default_context(cafile=ca_file)


def body_summary(body: bytes) -> Dict[str, Any]:
    text = None
    if len(body) <= SUMMARY_BODY_LIMIT:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return {"body_sha256": sha256_hex(body), "body_len": len(body), "body": text}


class ExchangeLog:
    """httpx event hooks that note every request as sent and every response head as received."""

    def __init__(self) -> None:
        self.requests: List[Dict[str, Any]] = []
        self.responses: List[Dict[str, Any]] = []

    def on_request(self, request: Any) -> None:
        entry = {"method": request.method, "url": str(request.url),
                 "headers": [list(item) for item in request.headers.multi_items()]}
        entry.update(body_summary(request.read()))
        self.requests.append(entry)

    def on_response(self, response: Any) -> None:
        self.responses.append({"status": response.status_code, "http_version": response.http_version,
                               "headers": [list(item) for item in response.headers.multi_items()]})

    async def on_request_async(self, request: Any) -> None:
        self.on_request(request)

    async def on_response_async(self, response: Any) -> None:
        self.on_response(response)

    def hooks(self) -> Dict[str, List[Callable[[Any], Any]]]:
        return {"request": [self.on_request], "response": [self.on_response]}

    def async_hooks(self) -> Dict[str, List[Callable[[Any], Any]]]:
        return {"request": [self.on_request_async], "response": [self.on_response_async]}


def split_params(method: Callable[..., Any], body: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split a recorded JSON body into the SDK method's keyword arguments and ``extra_body``.

    Fields the SDK knows go through its typed parameters; the rest (provider extensions) through
    ``extra_body``, so the SDK still serialises and sends the whole recorded body.
    """
    known = set(inspect.signature(method).parameters) - {"extra_headers", "extra_query", "extra_body", "timeout"}
    kwargs = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known}
    return kwargs, extra


def status_error(exc: Any) -> Dict[str, Any]:
    """Summary of an SDK APIStatusError: the status and the error body the server sent."""
    response = exc.response
    body = response.content
    entry: Dict[str, Any] = {"status": response.status_code}
    entry.update(body_summary(body))
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    entry["error_type"] = error.get("type") if isinstance(error, dict) else None
    return entry


def emit(summary: Dict[str, Any]) -> None:
    """Print the summary as the last stdout line (the test parses that line)."""
    summary.setdefault("pid", os.getpid())
    sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    sys.stdout.flush()
