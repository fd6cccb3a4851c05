"""N concurrent chat completions from one AsyncOpenAI client on ONE asyncio event loop (one thread).

Each request's user message carries a mark ``pair-<run>-<i>``; the replay server's ``@echo-chat``
answers with that message, so every captured request/response pair shows the same mark in both
bodies. Responses are delayed in reverse order (``X-Replay-Delay-Ms``) so they complete out of
order and the connections are really interleaved.

Usage: openai_concurrent.py --ca CA.pem [--count 20] [--run-id ID] [--stream]
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any, Dict, List

from client_common import OPENAI_TEST_KEY, TIMEOUT_S, ExchangeLog, base_parser, client_context, emit

import openai
from tests.support.synthetic_bodies import ECHO_CHAT

MODEL = "gpt-4o-mini"
DELAY_STEP_MS = 10


def mark(run_id: str, index: int) -> str:
    return "pair-%s-%02d" % (run_id, index)


async def one(client: openai.AsyncOpenAI, run_id: str, index: int, count: int, stream: bool) -> Dict[str, Any]:
    tag = mark(run_id, index)
    params: Dict[str, Any] = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "%s: what is %d plus %d?" % (tag, index, index)}],
        extra_headers={"X-Fixture": ECHO_CHAT, "X-Replay-Delay-Ms": str((count - index) * DELAY_STEP_MS)},
    )
    entry: Dict[str, Any] = {"index": index, "mark": tag, "thread": threading.get_ident()}
    if stream:
        chunks = await client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **params)
        text: List[str] = []
        async for chunk in chunks:
            entry["id"] = chunk.id
            text.extend(choice.delta.content or "" for choice in chunk.choices)
        entry["text"] = "".join(text)
    else:
        completion = await client.chat.completions.create(**params)
        entry.update(id=completion.id, text=completion.choices[0].message.content)
    return entry


async def run(ca: str, count: int, run_id: str, stream: bool) -> Dict[str, Any]:
    log = ExchangeLog()
    http_client = openai.DefaultAsyncHttpxClient(verify=client_context(ca), event_hooks=log.async_hooks())
    async with openai.AsyncOpenAI(api_key=OPENAI_TEST_KEY, http_client=http_client, max_retries=0,
                                  timeout=TIMEOUT_S) as client:
        results = await asyncio.gather(*(one(client, run_id, i, count, stream) for i in range(count)))
    marks = {}
    for request in log.requests:
        content = json.loads(request["body"])["messages"][0]["content"]
        marks[content.split(":", 1)[0]] = request["body_sha256"]
    for entry in results:
        entry["request_body_sha256"] = marks.get(entry["mark"])
    return {"client": "openai-concurrent", "count": count, "run_id": run_id, "stream": stream,
            "results": results, "threads": len({entry["thread"] for entry in results}),
            "requests": log.requests, "responses": log.responses}


def main() -> int:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--run-id", default="run")
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    emit(asyncio.run(run(args.ca, args.count, args.run_id, args.stream)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
