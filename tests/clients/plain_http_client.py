"""Send one recorded request over plain HTTP to a local model server and summarise the answer.

Modes:
- ``ollama``: the official ``ollama`` SDK (chat or generate, streamed or not, as recorded);
- ``openai``: the official ``openai`` SDK with ``base_url`` pointing at the server (vLLM, LM
  Studio, llama.cpp and Ollama's /v1 all serve the OpenAI API);
- ``syscalls``: the raw HTTP/1.1 request written and the answer read with one chosen family of
  socket calls (send/recv, write/read, writev/readv, sendmsg/recvmsg), so that each kernel path
  the sensor reads is driven by a real program;
- ``garbage``: bytes that are not HTTP, then a real request on a second connection;
- ``keepalive``: http.client opens a keep-alive connection with a non-AI GET, prints
  ``{"connected": ...}`` and waits for a line on stdin (the test starts a sensor then), then sends
  the recorded request on the same connection.

Usage: plain_http_client.py MODE --fixture NAME --url http://127.0.0.1:11434 [--calls writev]
"""
from __future__ import annotations

import argparse
import os
import socket
from typing import Any, Dict
from urllib.parse import urlsplit

from client_common import OPENAI_TEST_KEY, TIMEOUT_S, emit

from tests.support.llm_fixtures import Fixture, header_items, load_fixture

FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})


def ollama_sdk(fixture: Fixture, url: str) -> Dict[str, Any]:
    import ollama as sdk

    body = fixture.request_json()
    client = sdk.Client(host=url, headers={"X-Fixture": fixture.name}, timeout=TIMEOUT_S)
    params = {k: v for k, v in body.items() if k in ("model", "messages", "prompt", "stream", "options", "format", "tools")}
    if not params.get("format"):
        params.pop("format", None)
    call = client.chat if fixture.path.endswith("/api/chat") else client.generate
    answer = call(**params)
    if params.get("stream"):
        parts = []
        for chunk in answer:
            piece = chunk.message.content if chunk.get("message") else chunk.get("response")
            parts.append(piece or "")
        return {"chunks": len(parts), "text": "".join(parts)}
    return {"done_reason": answer.done_reason}


def openai_sdk(fixture: Fixture, url: str) -> Dict[str, Any]:
    import openai

    body = fixture.request_json()
    client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=OPENAI_TEST_KEY, max_retries=0,
                           timeout=TIMEOUT_S, default_headers={"X-Fixture": fixture.name})
    known = ("model", "messages", "stream", "stream_options", "temperature", "max_tokens", "tools", "n", "top_p")
    params = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known}
    answer = client.chat.completions.create(extra_body=extra or None, **params)
    if params.get("stream"):
        parts = [c.choices[0].delta.content or "" for c in answer if c.choices]
        return {"chunks": len(parts), "text": "".join(parts)}
    return {"text": answer.choices[0].message.content}


def raw_request(fixture: Fixture, authority: str) -> bytes:
    head = ["%s %s HTTP/1.1" % (fixture.method, fixture.target), "Host: " + authority,
            "X-Fixture: " + fixture.name, "Connection: close", "Content-Length: %d" % len(fixture.request_body)]
    head += ["%s: %s" % (k, v) for k, v in header_items(fixture.request_headers) if k.lower() not in FRAMING]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + fixture.request_body


def _send(sock: socket.socket, data: bytes, calls: str) -> None:
    """All of `data`, split into three pieces (so that vectored calls carry several buffers)."""
    cut = [data[: len(data) // 3], b"", data[len(data) // 3: 2 * len(data) // 3], data[2 * len(data) // 3:]]
    while data:
        if calls == "send":
            n = sock.send(data)
        elif calls == "write":
            n = os.write(sock.fileno(), data)
        elif calls == "writev":
            n = os.writev(sock.fileno(), cut)
        else:
            n = sock.sendmsg(cut)
        data = data[n:]
        cut = [data]


def _recv(sock: socket.socket, calls: str) -> bytes:
    out = []
    while True:
        if calls == "send":
            piece = sock.recv(4096)
        elif calls == "write":
            piece = os.read(sock.fileno(), 4096)
        elif calls == "writev":
            bufs = [bytearray(1000), bytearray(3000)]
            n = os.readv(sock.fileno(), bufs)
            piece = bytes(b"".join(bufs)[:n])
        else:
            piece, _, _, _ = sock.recvmsg(4096)
        if not piece:
            return b"".join(out)
        out.append(piece)


def syscalls(fixture: Fixture, url: str, calls: str) -> Dict[str, Any]:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT_S) as sock:
        sock.settimeout(None)  # blocking: os.read and os.readv know no timeouts
        _send(sock, raw_request(fixture, parts.netloc), calls)
        answer = _recv(sock, calls)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None
    return {"status": status, "bytes": len(answer)}


def garbage(fixture: Fixture, url: str) -> Dict[str, Any]:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01" + os.urandom(4096) + b"\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        try:
            sock.recv(65536)
        except OSError:
            pass
    return dict(syscalls(fixture, url, "send"), garbage=True)


def keepalive(fixture: Fixture, url: str) -> Dict[str, Any]:
    import http.client
    import json
    import sys

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
    conn.request("GET", "/big?bytes=16")
    conn.getresponse().read()
    local = conn.sock.getsockname()
    print(json.dumps({"connected": local[1]}), flush=True)
    sys.stdin.readline()
    headers = {k: v for k, v in header_items(fixture.request_headers) if k.lower() not in FRAMING}
    conn.request(fixture.method, fixture.target, body=fixture.request_body, headers=dict(headers, **{"X-Fixture": fixture.name}))
    answer = conn.getresponse()
    data = answer.read()
    same = conn.sock is not None and conn.sock.getsockname() == local
    return {"status": answer.status, "bytes": len(data), "same_connection": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("ollama", "openai", "syscalls", "garbage", "keepalive"))
    parser.add_argument("--fixture", required=True)
    parser.add_argument("--url", required=True, help="the server's origin, http://host:port")
    parser.add_argument("--calls", default="send", choices=("send", "write", "writev", "sendmsg"))
    args = parser.parse_args()
    fixture = load_fixture(args.fixture)
    if args.mode == "ollama":
        summary = ollama_sdk(fixture, args.url)
    elif args.mode == "openai":
        summary = openai_sdk(fixture, args.url)
    elif args.mode == "syscalls":
        summary = syscalls(fixture, args.url, args.calls)
    elif args.mode == "keepalive":
        summary = keepalive(fixture, args.url)
    else:
        summary = garbage(fixture, args.url)
    emit(dict(summary, pid=os.getpid()))


if __name__ == "__main__":
    main()
