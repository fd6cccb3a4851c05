"""One chat completion with a big request and a big response, through the official ``openai`` SDK.

The user message is ``deterministic_text(request_bytes, seed + "-request")`` (about 1 MiB of JSON);
the replay server's ``@big-chat`` answers with ``response_bytes`` of deterministic text, never
compressed. The test rebuilds the expected response body with
``synthetic_bodies.big_chat_response(model, request_sha256, request_len, response_bytes, seed)``
from this summary's ``request`` fields and compares SHA-256 digests.

Usage: openai_big.py --ca CA.pem [--request-bytes 1048576] [--response-bytes 4194304] [--seed S]
"""
from __future__ import annotations

import sys
from typing import Any, Dict

from client_common import (OPENAI_TEST_KEY, ExchangeLog, base_parser, body_summary, client_context, emit)

import openai
from tests.support.synthetic_bodies import BIG_CHAT, deterministic_text, sha256_hex

MODEL = "gpt-4o-mini"
TIMEOUT_S = 120.0


def main() -> int:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--request-bytes", type=int, default=1 << 20)
    parser.add_argument("--response-bytes", type=int, default=4 << 20)
    parser.add_argument("--seed", default="big")
    args = parser.parse_args()

    log = ExchangeLog()
    http_client = openai.DefaultHttpxClient(verify=client_context(args.ca), event_hooks=log.hooks())
    client = openai.OpenAI(api_key=OPENAI_TEST_KEY, http_client=http_client, max_retries=0, timeout=TIMEOUT_S)
    headers = {"X-Fixture": BIG_CHAT, "X-Replay-Response-Bytes": str(args.response_bytes), "X-Replay-Seed": args.seed}
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": deterministic_text(args.request_bytes, args.seed + "-request")}],
        extra_headers=headers,
    )
    content = raw.parse().choices[0].message.content or ""
    request = log.requests[0]
    summary: Dict[str, Any] = {
        "client": "openai-big", "model": MODEL, "seed": args.seed,
        "request_bytes": args.request_bytes, "response_bytes": args.response_bytes,
        "request": {k: request[k] for k in ("method", "url", "body_sha256", "body_len")},
        "response": {k: v for k, v in body_summary(raw.http_response.content).items() if k != "body"},
        "content_sha256": sha256_hex(content.encode("utf-8")), "content_len": len(content),
        "responses": log.responses,
    }
    emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
