"""Several OpenAI chat calls on one HTTP/2 connection with httpx (``http2=True``).

- ``--mode multiplex``: two streamed calls at once (AsyncClient, two concurrent streams); the
  second asks the replay for a delayed answer (``X-Replay-Delay-Ms``), so its time to first token
  is the longer one although both share the connection.
- ``--mode keepalive``: ``--count`` calls one after another, each with a distinct header value
  so that the HPACK dynamic tables of both sides evict entries along the way.

Prints a JSON summary: the HTTP version and status of each call.

Usage: h2_client.py --ca CA.pem --mode multiplex|keepalive [--count N]
"""
from __future__ import annotations

import asyncio
import json
import sys

import httpx
from client_common import OPENAI_TEST_KEY, TIMEOUT_S, base_parser, client_context, emit

URL = "https://api.openai.com/v1/chat/completions"
STREAM_FIXTURE = "openai-chat-stream-002"
PLAIN_FIXTURE = "openai-chat-001"
DELAY_MS = 400


def body(stream: bool, text: str) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": text}]}).encode()


async def multiplex(ca: str) -> list:
    async with httpx.AsyncClient(http2=True, verify=client_context(ca), timeout=TIMEOUT_S) as client:
        async def one(index: int) -> dict:
            headers = {"Authorization": "Bearer " + OPENAI_TEST_KEY, "Content-Type": "application/json",
                       "X-Fixture": STREAM_FIXTURE}
            if index:
                headers["X-Replay-Delay-Ms"] = str(DELAY_MS)
            async with client.stream("POST", URL, headers=headers, content=body(True, "stream %d" % index)) as response:
                chunks = [chunk async for chunk in response.aiter_bytes()]
            return {"http_version": response.http_version, "status": response.status_code, "bytes": sum(map(len, chunks))}

        return list(await asyncio.gather(one(0), one(1)))


def keepalive(ca: str, count: int) -> list:
    results = []
    with httpx.Client(http2=True, verify=client_context(ca), timeout=TIMEOUT_S) as client:
        for index in range(count):
            headers = {"Authorization": "Bearer " + OPENAI_TEST_KEY, "Content-Type": "application/json",
                       "X-Fixture": PLAIN_FIXTURE, "X-Request-Tag": "tag-%04d-" % index + "x" * 200}
            response = client.post(URL, headers=headers, content=body(False, "call %d" % index))
            results.append({"http_version": response.http_version, "status": response.status_code})
    return results


def main() -> int:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("multiplex", "keepalive"), required=True)
    parser.add_argument("--count", type=int, default=40)
    args = parser.parse_args()
    calls = asyncio.run(multiplex(args.ca)) if args.mode == "multiplex" else keepalive(args.ca, args.count)
    emit({"calls": calls})
    return 0


if __name__ == "__main__":
    sys.exit(main())
