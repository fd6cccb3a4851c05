"""A small agent loop with the official ``openai`` SDK: the model asks for tools, the agent runs
them and sends the results back, then the conversation goes on with the whole history resent.

1. The recorded request of ``--first`` (a fixture whose answer holds tool calls) is sent.
2. Each call the SDK parsed gets a result: a ``tool`` message by call id (or, for legacy
   function calling, a ``function`` message by name), sent with the history; the replay server
   answers with ``--reply``.
3. One more user turn resends the same history, results included (``--reply`` again).

Usage: openai_agent_loop.py --ca CA.pem --base-url https://host/v1 --first openai-chat-tools-002 --reply openai-chat-001
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List

from client_common import OPENAI_TEST_KEY, TIMEOUT_S, ExchangeLog, base_parser, client_context, emit, split_params

import openai
from tests.support.llm_fixtures import load_fixture


def result_for(name: str, arguments: str) -> str:
    """What the (pretend) tool returned: deterministic, so the test can check it."""
    return json.dumps({"tool": name, "echo": arguments, "ok": True})


def main() -> int:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--first", required=True, help="fixture answering the first request with tool calls")
    parser.add_argument("--reply", required=True, help="fixture answering the later requests")
    args = parser.parse_args()

    log = ExchangeLog()
    http_client = openai.DefaultHttpxClient(verify=client_context(args.ca), event_hooks=log.hooks())
    client = openai.OpenAI(base_url=args.base_url, api_key=OPENAI_TEST_KEY, http_client=http_client,
                           max_retries=0, timeout=TIMEOUT_S)
    body = load_fixture(args.first).request_json()
    body.pop("stream", None)
    kwargs, extra_body = split_params(client.chat.completions.create, body)
    if extra_body:
        kwargs["extra_body"] = extra_body
    first = client.chat.completions.create(extra_headers={"X-Fixture": args.first}, **kwargs)
    message = first.choices[0].message
    history: List[Dict[str, Any]] = list(kwargs["messages"])
    history.append(message.model_dump(include={"role", "content", "tool_calls", "function_call"}, exclude_none=True))
    results = []
    for call in message.tool_calls or []:
        content = result_for(call.function.name, call.function.arguments)
        history.append({"role": "tool", "tool_call_id": call.id, "content": content})
        results.append({"call_id": call.id, "name": call.function.name, "content": content})
    if message.function_call:
        content = result_for(message.function_call.name, message.function_call.arguments)
        history.append({"role": "function", "name": message.function_call.name, "content": content})
        results.append({"call_id": None, "name": message.function_call.name, "content": content})
    kwargs["messages"] = history
    second = client.chat.completions.create(extra_headers={"X-Fixture": args.reply}, **kwargs)
    history.append({"role": "assistant", "content": second.choices[0].message.content or ""})
    history.append({"role": "user", "content": "Thanks. Anything else?"})
    client.chat.completions.create(extra_headers={"X-Fixture": args.reply}, **kwargs)
    emit({"client": "openai_agent_loop", "results": results, "requests": len(log.requests)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
