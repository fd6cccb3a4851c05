"""Two chat completions of the official ``openai`` SDK on one keep-alive connection, the first
answer held back by the replay server part-way (X-Replay-Hold after HELD_BYTES of its body): the
test starts the sensor there, so that it joins the connection mid-answer and must pick up the
second exchange.

Usage: openai_keepalive.py --ca CA.pem --fixture openai-chat-001 --first openai-chat-002 --hold TOKEN;
prints {"first_text": ..., "second_text": ...}.
"""
from __future__ import annotations

import json
from typing import Any, Dict

import httpx
from client_common import OPENAI_TEST_KEY, TIMEOUT_S, client_context, fixture_parser, split_params

import openai
from tests.support.llm_fixtures import load_fixture

HELD_BYTES = 40  # of the first answer's body, sent before the hold


def chat(client: openai.OpenAI, fixture_name: str, headers: Dict[str, str]) -> Any:
    kwargs, extra = split_params(client.chat.completions.create, json.loads(load_fixture(fixture_name).request_body))
    return client.chat.completions.create(**kwargs, extra_body=extra or None,
                                          extra_headers=dict(headers, **{"X-Fixture": fixture_name}))


def main() -> None:
    parser = fixture_parser(__doc__)
    parser.add_argument("--first", required=True, help="the fixture of the answer the sensor joins mid-way")
    parser.add_argument("--hold", required=True, help="the replay server's hold token")
    args = parser.parse_args()
    # One connection at most: the second request must reuse the first's.
    http_client = httpx.Client(verify=client_context(args.ca), limits=httpx.Limits(max_connections=1))
    client = openai.OpenAI(base_url="https://api.openai.com/v1", api_key=OPENAI_TEST_KEY, http_client=http_client,
                           max_retries=0, timeout=TIMEOUT_S)
    first = chat(client, args.first, {"X-Replay-Hold": args.hold, "X-Replay-Hold-After": str(HELD_BYTES)})
    second = chat(client, args.fixture, {})
    print(json.dumps({"first_text": first.choices[0].message.content,
                      "second_text": second.choices[0].message.content}))


if __name__ == "__main__":
    main()
