"""TLS HTTP/1.1 server that replays recorded provider responses to real clients (``--plain``:
plain HTTP, as Ollama and the other local model servers speak it).

Run it as its own process (``python -m tests.support.replay_server ...``, see replay_process.py):
it uses the system libssl like the clients do, so the sensor sees it too and tests tell the two
apart by pid (the process also renames itself to comm ``oisp-replay``).

Per request it picks a response:

- ``X-Fixture: <name>`` names a fixture file stem, or a synthetic body (synthetic_bodies.py:
  ``@echo-chat``, ``@big-chat``);
- otherwise method + path, then host, query, model and stream flag of the JSON body are matched
  against the fixtures (an identical body wins);
- ``GET /big?bytes=N&seed=S`` and ``POST /bench/echo-sha256`` are plain non-AI endpoints.

Recorded headers are replayed minus hop-by-hop and framing headers; the server frames the body
itself: ``Content-Length`` for whole bodies (gzip-compressed again when the recording was gzip and
the client accepts it), ``Transfer-Encoding: chunked`` with one chunk per SSE event / NDJSON line /
eventstream message, ``chunk_delay`` apart, so a stream arrives in many TLS records.

A reply can be held back for a live-stream test: ``X-Replay-Hold: <token>`` (letters, digits,
``-``/``_``) with ``X-Replay-Hold-After: N`` sends the first N chunks of a stream (N bytes of a
whole body), then waits until the file ``release-<token>`` appears next to the request log
(ReplayServerProcess.release), at most ``MAX_HOLD_S``, before it sends the rest.

Every request is appended to a JSON-lines log before its response is sent, so a client that has
its response can rely on the log line being there.
"""
from __future__ import annotations

import argparse
import ctypes
import gzip
import itertools
import json
import re
import signal
import socketserver
import ssl
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlsplit

from tests.support import synthetic_bodies as synth
from tests.support.llm_fixtures import FIXTURES_DIR, Fixture, header_items, load_fixtures

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "content-length", "content-encoding",
})
MAX_HEADER_LINE = 65536
MAX_HEADERS = 200
MAX_DOWNLOAD = 1 << 30
MAX_DELAY_S = 10.0
IDLE_TIMEOUT_S = 60.0
MAX_HOLD_S = 60.0
_HOLD_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
LOGGED_BODY_LIMIT = 65536  # request bodies up to this size are stored verbatim in the log
DEFAULT_BIG_RESPONSE = 4 << 20
PROCESS_COMM = b"oisp-replay"


class BadRequest(Exception):
    """The client sent something that is not HTTP/1.1 we can parse."""


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query

    @property
    def host(self) -> str:
        host = self.header("host") or ""
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    def json_body(self) -> Dict[str, Any]:
        try:
            parsed = json.loads(self.body) if self.body else {}
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    def wants_close(self) -> bool:
        connection = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" not in connection
        return "close" in connection


@dataclass
class Reply:
    """What to send, before framing: ``parts`` has one element per chunk when ``streaming``."""

    status: int
    reason: str
    headers: List[Tuple[str, str]]
    parts: List[bytes]
    streaming: bool = False
    compressible: bool = False
    source: Optional[str] = None

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)


# --- reading requests -------------------------------------------------------------------------


def _readline(rfile) -> bytes:
    line = rfile.readline(MAX_HEADER_LINE + 1)
    if len(line) > MAX_HEADER_LINE:
        raise BadRequest("header line too long")
    return line


def _read_exact(rfile, size: int) -> bytes:
    data = rfile.read(size)
    if len(data) != size:
        raise BadRequest("connection closed inside the body")
    return data


def _read_chunked(rfile) -> bytes:
    parts = []
    while True:
        size_line = _readline(rfile).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise BadRequest("bad chunk size %r" % size_line) from None
        if size == 0:
            while _readline(rfile) not in (b"\r\n", b"\n", b""):
                pass  # trailers are read and dropped
            return b"".join(parts)
        parts.append(_read_exact(rfile, size))
        if _readline(rfile) not in (b"\r\n", b"\n"):
            raise BadRequest("chunk not followed by CRLF")


def read_request(rfile, sock) -> Optional[Request]:
    """Read one request; None when the client closed the connection between requests.

    ``sock`` gets the ``100 Continue`` interim response a client waits for before its body.
    """
    line = _readline(rfile)
    while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests (RFC 9112 2.2)
        line = _readline(rfile)
    if not line:
        return None
    try:
        method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ")
    except ValueError:
        raise BadRequest("bad request line %r" % line[:200]) from None
    if not version.startswith("HTTP/1."):
        raise BadRequest("unsupported version %r" % version)
    headers: List[Tuple[str, str]] = []
    while True:
        raw = _readline(rfile)
        if raw in (b"\r\n", b"\n", b""):
            break
        if len(headers) >= MAX_HEADERS or b":" not in raw:
            raise BadRequest("bad header line %r" % raw[:200])
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    request = Request(method.upper(), target, version, headers, b"")
    transfer = (request.header("transfer-encoding") or "").lower()
    length = request.header("content-length")
    has_body = "chunked" in transfer or (length is not None and length.strip() != "0")
    if has_body and (request.header("expect") or "").lower() == "100-continue":
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in transfer:
        request.body = _read_chunked(rfile)
    elif length is not None:
        try:
            size = int(length)
        except ValueError:
            raise BadRequest("bad Content-Length %r" % length) from None
        request.body = _read_exact(rfile, size)
    return request


# --- choosing a response ----------------------------------------------------------------------

_SSE_SPLIT = re.compile(rb"(?<=\r\n\r\n)|(?<=\n\n)")
_LINE_SPLIT = re.compile(rb"(?<=\n)")


def _eventstream_messages(body: bytes) -> List[bytes]:
    """Split an AWS eventstream body at its messages (each starts with its 4-byte total length)."""
    parts, offset = [], 0
    while offset + 4 <= len(body):
        (total,) = struct.unpack_from(">I", body, offset)
        if total < 16:
            break
        parts.append(body[offset:offset + total])
        offset += total
    if offset < len(body):
        parts.append(body[offset:])
    return parts


def split_stream_body(content_type: str, body: bytes) -> List[bytes]:
    """Cut a streaming body into the units a live server would flush one by one."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/vnd.amazon.eventstream":
        parts = _eventstream_messages(body)
    elif ctype == "text/event-stream":
        parts = _SSE_SPLIT.split(body)
    else:  # NDJSON-like streams: one JSON document per line
        parts = _LINE_SPLIT.split(body)
    return [part for part in parts if part]


def _fixture_score(fixture: Fixture, request: Request, payload: Dict[str, Any]) -> Tuple[int, ...]:
    wants_stream = payload.get("stream") is True
    try:
        recorded = fixture.request_json()
    except ValueError:
        recorded = {}
    return (
        fixture.request_body == request.body,
        fixture.streaming == wants_stream or "stream" not in payload,
        fixture.host == request.host,
        "model" in payload and recorded.get("model") == payload.get("model"),
        fixture.query == request.query,
    )


def choose_fixture(fixtures: Dict[str, Fixture], request: Request) -> Optional[Fixture]:
    """Best fixture for a request without ``X-Fixture``: same method and path, then the best score."""
    candidates = [f for f in fixtures.values() if f.method == request.method and f.path == request.path]
    if not candidates:
        return None
    payload = request.json_body()
    return max(candidates, key=lambda f: _fixture_score(f, request, payload))  # first wins ties


def fixture_reply(fixture: Fixture) -> Reply:
    headers = [(k, v) for k, v in header_items(fixture.response_headers) if k.lower() not in HOP_BY_HOP]
    headers.append(("X-Replay-Fixture", fixture.name))
    if fixture.streaming:
        parts = split_stream_body(fixture.response_content_type, fixture.response_body)
        return Reply(fixture.status, fixture.reason, headers, parts, streaming=True, source=fixture.name)
    return Reply(fixture.status, fixture.reason, headers, [fixture.response_body],
                 compressible=fixture.decoded_from == "gzip", source=fixture.name)


def _json_reply(status: int, reason: str, payload: Dict[str, Any], source: Optional[str]) -> Reply:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Reply(status, reason, [("Content-Type", "application/json")], [body], source=source)


def _not_found(message: str) -> Reply:
    return _json_reply(404, "Not Found", {"error": {"type": "replay_no_fixture", "message": message}}, None)


def _openai_headers(source: str) -> List[Tuple[str, str]]:
    return [("openai-version", "2020-10-01"), ("x-request-id", "req_replay_%s" % source.strip("@"))]


def _number(text: Optional[str], default: float) -> float:
    """A numeric request header, ``default`` when absent or malformed (tests tune replies with them)."""
    try:
        return float(text) if text else default
    except ValueError:
        return default


def echo_chat_reply(request: Request) -> Reply:
    """``@echo-chat``: answer each chat completion with its own last user message."""
    payload = request.json_body()
    headers = _openai_headers(synth.ECHO_CHAT)
    if payload.get("stream") is True:
        headers.insert(0, ("Content-Type", "text/event-stream; charset=utf-8"))
        return Reply(200, "OK", headers, synth.echo_chat_stream_events(request.body), streaming=True,
                     source=synth.ECHO_CHAT)
    headers.insert(0, ("Content-Type", "application/json"))
    return Reply(200, "OK", headers, [synth.echo_chat_response(request.body)], compressible=True,
                 source=synth.ECHO_CHAT)


def big_chat_reply(request: Request) -> Reply:
    """``@big-chat``: a chat completion whose answer is ``X-Replay-Response-Bytes`` of text.

    Never compressed: the test asserts the SHA-256 of the plaintext the client really received.
    """
    size = int(_number(request.header("x-replay-response-bytes"), DEFAULT_BIG_RESPONSE))
    seed = request.header("x-replay-seed") or "big"
    digest = synth.sha256_hex(request.body)
    body = synth.big_chat_response(str(request.json_body().get("model", "")), digest, len(request.body), size, seed)
    headers = [("Content-Type", "application/json"), ("x-request-body-sha256", digest)]
    return Reply(200, "OK", headers + _openai_headers(synth.BIG_CHAT), [body], source=synth.BIG_CHAT)


def download_reply(request: Request) -> Reply:
    """``GET /big?bytes=N&seed=S``: N deterministic bytes, as a file download."""
    query = parse_qs(request.query)
    try:
        size = int(query.get("bytes", ["0"])[0])
    except ValueError:
        size = -1
    if not 0 <= size <= MAX_DOWNLOAD:
        return _json_reply(400, "Bad Request", {"error": "bytes must be 0..%d" % MAX_DOWNLOAD}, "download")
    seed = query.get("seed", ["download"])[0]
    headers = [("Content-Type", "application/octet-stream"),
               ("Content-Disposition", 'attachment; filename="big-%s.bin"' % seed)]
    return Reply(200, "OK", headers, [synth.deterministic_bytes(size, seed)], source="download")


def build_reply(fixtures: Dict[str, Fixture], request: Request) -> Reply:
    """Decide the response to one request (see the module docstring for the rules)."""
    name = request.header("x-fixture")
    if name == synth.ECHO_CHAT:
        return echo_chat_reply(request)
    if name == synth.BIG_CHAT:
        return big_chat_reply(request)
    if name:
        fixture = fixtures.get(name)
        return fixture_reply(fixture) if fixture else _not_found("unknown fixture %r" % name)
    if request.method == "GET" and request.path == "/big":
        return download_reply(request)
    if request.method == "POST" and request.path == "/bench/echo-sha256":
        payload = {"sha256": synth.sha256_hex(request.body), "bytes": len(request.body)}
        return _json_reply(200, "OK", payload, "echo-sha256")
    fixture = choose_fixture(fixtures, request)
    if fixture is None:
        return _not_found("no fixture for %s %s" % (request.method, request.path))
    return fixture_reply(fixture)


# --- sending ----------------------------------------------------------------------------------


def accepts_gzip(accept_encoding: Optional[str]) -> bool:
    for item in (accept_encoding or "").split(","):
        token, _, params = item.strip().partition(";")
        if token.strip().lower() in ("gzip", "x-gzip"):
            quality = params.strip().lower()
            return not re.fullmatch(r"q\s*=\s*0(\.0*)?", quality)
    return False


def _head(reply: Reply, framing: List[Tuple[str, str]]) -> bytes:
    lines = ["HTTP/1.1 %d %s" % (reply.status, reply.reason)]
    lines += ["%s: %s" % item for item in reply.headers + framing]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Hold:
    """Hold a reply back after `after` chunks (bytes of a whole body) until `release` exists (a
    test says when)."""

    after: int
    release: Path

    def wait(self) -> None:
        deadline = time.monotonic() + MAX_HOLD_S
        while not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def hold_of(request: Request, release_dir: Path) -> Optional[Hold]:
    """The hold a request asks for (X-Replay-Hold / X-Replay-Hold-After), if any and valid."""
    token = request.header("x-replay-hold")
    if not token or not _HOLD_TOKEN.match(token):
        return None
    return Hold(int(_number(request.header("x-replay-hold-after"), 1)), release_dir / ("release-" + token))


def send_reply(sock, reply: Reply, gzip_ok: bool, close: bool, chunk_delay: float,
               hold: Optional[Hold] = None) -> None:
    framing = [("Connection", "close")] if close else []
    if reply.streaming:
        sock.sendall(_head(reply, framing + [("Transfer-Encoding", "chunked")]))
        for index, part in enumerate(reply.parts):
            if hold is not None and index == hold.after:
                hold.wait()
            time.sleep(chunk_delay)
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        sock.sendall(b"0\r\n\r\n")
        return
    body = reply.body
    if gzip_ok:
        body = gzip.compress(body, mtime=0)
        framing.append(("Content-Encoding", "gzip"))
    framing.append(("Content-Length", str(len(body))))
    if hold is None:
        sock.sendall(_head(reply, framing) + body)
        return
    sock.sendall(_head(reply, framing) + body[:hold.after])
    hold.wait()
    sock.sendall(body[hold.after:])


# --- server -----------------------------------------------------------------------------------


class RequestLog:
    """Append-only JSON-lines file shared by the connection threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle = open(path, "a", encoding="utf-8")
        self._seq = itertools.count(1)

    def write(self, record: Dict[str, Any]) -> None:
        with self._lock:
            record["seq"] = next(self._seq)
            self._handle.write(json.dumps(record, sort_keys=True) + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def _body_text(body: bytes) -> Optional[str]:
    if len(body) > LOGGED_BODY_LIMIT:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def request_record(conn_id: int, peer: str, tls: ssl.SSLSocket, request: Request, reply: Reply,
                   gzip_used: bool) -> Dict[str, Any]:
    body = reply.body
    return {
        "time": time.time(),
        "conn": conn_id,
        "peer": peer,
        "alpn": tls.selected_alpn_protocol() if isinstance(tls, ssl.SSLSocket) else None,
        "tls_version": tls.version() if isinstance(tls, ssl.SSLSocket) else None,
        "method": request.method,
        "target": request.target,
        "path": request.path,
        "host": request.host,
        "headers": [list(item) for item in request.headers],
        "body_len": len(request.body),
        "body_sha256": synth.sha256_hex(request.body),
        "body_text": _body_text(request.body),
        "fixture": reply.source,
        "status": reply.status,
        "response_streaming": reply.streaming,
        "response_chunks": len(reply.parts) if reply.streaming else 0,
        "response_content_encoding": "gzip" if gzip_used else None,
        "response_body_len": len(body),
        "response_body_sha256": synth.sha256_hex(body),
    }


class ConnectionHandler(socketserver.BaseRequestHandler):
    """One TLS connection: handshake in this thread, then keep-alive request/response rounds."""

    server: "ReplayServer"

    def handle(self) -> None:
        conn_id = next(self.server.connection_ids)
        peer = "%s:%d" % self.client_address[:2]
        self.request.settimeout(IDLE_TIMEOUT_S)
        try:
            # --plain: the local model servers' plain HTTP (no context)
            tls = self.server.ssl_context.wrap_socket(self.request, server_side=True) \
                if self.server.ssl_context is not None else self.request
        except (OSError, ssl.SSLError) as exc:
            self.server.note("conn %d from %s: handshake failed: %s" % (conn_id, peer, exc))
            return
        try:
            self._serve(conn_id, peer, tls)
        except (OSError, ssl.SSLError) as exc:
            self.server.note("conn %d from %s: %s" % (conn_id, peer, exc))
        finally:
            tls.close()

    def _serve(self, conn_id: int, peer: str, tls: ssl.SSLSocket) -> None:
        rfile = tls.makefile("rb", buffering=65536)
        while True:
            try:
                request = read_request(rfile, tls)
            except BadRequest as exc:
                tls.sendall(_head(Reply(400, "Bad Request", [], []), [("Content-Length", "0"), ("Connection", "close")]))
                self.server.note("conn %d from %s: bad request: %s" % (conn_id, peer, exc))
                return
            if request is None:
                return
            reply = build_reply(self.server.fixtures, request)
            gzip_ok = reply.compressible and accepts_gzip(request.header("accept-encoding"))
            close = request.wants_close()
            self.server.log.write(request_record(conn_id, peer, tls, request, reply, gzip_ok))
            delay = _number(request.header("x-replay-delay-ms"), 0.0) / 1000.0
            time.sleep(min(max(delay, 0.0), MAX_DELAY_S))
            send_reply(tls, reply, gzip_ok, close, self.server.chunk_delay,
                       hold_of(request, self.server.log.path.parent))
            if close:
                return


class ReplayServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: Tuple[str, int], ssl_context: Optional[ssl.SSLContext], fixtures: Dict[str, Fixture],
                 log: RequestLog, chunk_delay: float) -> None:
        self.ssl_context = ssl_context
        self.fixtures = fixtures
        self.log = log
        self.chunk_delay = chunk_delay
        self.connection_ids = itertools.count(1)
        super().__init__(address, ConnectionHandler)

    def note(self, message: str) -> None:
        print("replay-server: " + message, file=sys.stderr, flush=True)


def server_context(cert_file: str, key_file: str, alpn: Sequence[str] = ("http/1.1",)) -> ssl.SSLContext:
    """Server TLS context offering `alpn` (by default only http/1.1: the decoder under test is
    HTTP/1.1; the h2 replays offer h2 first)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(list(alpn))
    return context


def _set_comm(name: bytes) -> None:
    """Rename the process (and the threads it starts later) so the sensor can filter it by comm."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass  # non-glibc platforms: tests still filter by pid


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=443, help="0 picks a free port")
    parser.add_argument("--cert", help="server certificate chain (PEM)")
    parser.add_argument("--key", help="server private key (PEM)")
    parser.add_argument("--plain", action="store_true", help="serve plain HTTP (no TLS), as local model servers do")
    parser.add_argument("--log", required=True, help="JSON-lines file that gets one line per request")
    parser.add_argument("--fixtures-dir", default=str(FIXTURES_DIR))
    parser.add_argument("--chunk-delay-ms", type=float, default=2.0)
    return parser.parse_args(argv)


def serve(server: socketserver.BaseServer, ready: Dict[str, Any]) -> None:
    """Print the ready line the parent waits for, then serve until SIGTERM or SIGINT, and close."""
    def stop(signum, frame):  # a SIGTERM the parent may have set to be ignored still stops it
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps(dict(ready, ready=True)), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: Optional[List[str]] = None, server_class: type = ReplayServer,
         alpn: Sequence[str] = ("http/1.1",)) -> int:
    """The replay over HTTP/1.1, or with another server class (the h2 replay's) and ALPN list."""
    args = _parse_args(argv)
    _set_comm(PROCESS_COMM)
    log = RequestLog(Path(args.log))
    if not args.plain and not (args.cert and args.key):
        raise SystemExit("--cert and --key are required unless --plain")
    context = None if args.plain else server_context(args.cert, args.key, alpn)
    server = server_class((args.host, args.port), context, load_fixtures(Path(args.fixtures_dir)), log,
                          args.chunk_delay_ms / 1000.0)
    host, port = server.server_address[:2]
    try:
        serve(server, {"host": host, "port": port, "fixtures": len(server.fixtures)})
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
