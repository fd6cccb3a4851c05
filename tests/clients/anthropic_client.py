"""Send one recorded Anthropic request with the official ``anthropic`` SDK and summarise the answer.

Messages (plain, stream, tools) go through ``client.messages.create`` with the fixture's body as
parameters. The legacy Text Completions API is gone from the SDK, so ``/v1/complete`` is sent
with the SDK's generic ``client.post`` (the SDK still does the HTTP, headers and auth).

Usage: anthropic_client.py --ca CA.pem --fixture anthropic-messages-stream-001 [--raw] [--no-fixture-header]
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List

from client_common import (ANTHROPIC_TEST_KEY, TIMEOUT_S, ExchangeLog, body_summary, client_context,
                           emit, fixture_parser, split_params, status_error)

import anthropic
import httpx2
from tests.support.llm_fixtures import load_fixture


def message_result(message: Any) -> Dict[str, Any]:
    """What the SDK made of a whole Messages response."""
    text = "".join(block.text for block in message.content if block.type == "text")
    names = [block.name for block in message.content if block.type in ("tool_use", "server_tool_use")]
    return {"model": message.model, "text": text or None, "finish_reason": message.stop_reason,
            "tool_calls": names, "usage": message.usage.model_dump()}


def streamed_result(stream: Any) -> Dict[str, Any]:
    """Consume the raw Messages event stream the way an application would."""
    text: List[str] = []
    names: List[str] = []
    result: Dict[str, Any] = {"model": None, "usage": {}, "finish_reason": None, "stream_error": None}
    chunks = 0
    try:
        for event in stream:
            chunks += 1
            if event.type == "message_start":
                result["model"] = event.message.model
                result["usage"].update(event.message.usage.model_dump(exclude_none=True))
            elif event.type == "content_block_start" and event.content_block.type in ("tool_use", "server_tool_use"):
                names.append(event.content_block.name)
            elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                text.append(event.delta.text)
            elif event.type == "message_delta":
                result["finish_reason"] = event.delta.stop_reason or result["finish_reason"]
                result["usage"].update(event.usage.model_dump(exclude_none=True))
    except anthropic.APIConnectionError:
        raise
    except anthropic.APIError as exc:  # an error event inside a 200 stream
        result["stream_error"] = exc.message
    result.update(text="".join(text) or None, tool_calls=names, chunks=chunks)
    return result


def main() -> int:
    args = fixture_parser(__doc__.split("\n")[0]).parse_args()

    fixture = load_fixture(args.fixture, args.fixtures_dir)
    log = ExchangeLog()
    http_client = anthropic.DefaultHttpxClient(verify=client_context(args.ca), event_hooks=log.hooks(),
                                               http2=args.http2)
    headers = {} if args.no_fixture_header else {"X-Fixture": fixture.name}
    client = anthropic.Anthropic(api_key=ANTHROPIC_TEST_KEY, base_url="%s://%s" % (fixture.scheme, fixture.host),
                                 http_client=http_client, default_headers=headers, max_retries=0, timeout=TIMEOUT_S)
    body = fixture.request_json()
    stream = body.get("stream") is True
    api = "messages" if fixture.path.endswith("/messages") else "complete"
    summary: Dict[str, Any] = {"client": "anthropic", "fixture": fixture.name, "api": api, "stream": stream}
    try:
        if api == "complete":
            response = client.post(fixture.path, body=body, cast_to=httpx2.Response)
            summary["response"] = body_summary(response.content)
            parsed = json.loads(response.content)
            summary["result"] = {"model": parsed.get("model"), "text": parsed.get("completion"),
                                 "finish_reason": parsed.get("stop_reason"), "tool_calls": [], "usage": None}
        else:
            kwargs, extra_body = split_params(client.messages.create, body)
            if extra_body:
                kwargs["extra_body"] = extra_body
            if stream and args.raw:
                with client.messages.with_streaming_response.create(**kwargs) as raw_stream:
                    summary["response"] = body_summary(b"".join(raw_stream.iter_bytes()))
            elif stream:
                summary["result"] = streamed_result(client.messages.create(**kwargs))
            else:
                raw = client.messages.with_raw_response.create(**kwargs)
                summary["response"] = body_summary(raw.http_response.content)
                summary["result"] = message_result(raw.parse())
    except anthropic.APIStatusError as exc:
        summary["error"] = status_error(exc)
    summary["requests"], summary["responses"] = log.requests, log.responses
    emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
