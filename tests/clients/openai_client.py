"""Send one recorded OpenAI-style request with the official ``openai`` SDK and summarise the answer.

Covers chat completions (plain, stream, tools), embeddings, the Responses API and legacy
completions, for OpenAI itself, Azure OpenAI (``AzureOpenAI``) and OpenAI-compatible providers
(base URL taken from the fixture). The request body is the fixture's, passed through the SDK's
parameters (unknown fields via ``extra_body``). ``X-Fixture`` tells the replay server which
recording to answer with.

Usage: openai_client.py --ca CA.pem --fixture openai-chat-stream-002 [--raw] [--no-fixture-header]
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs

from client_common import (OPENAI_TEST_KEY, TIMEOUT_S, ExchangeLog, body_summary, client_context,
                           emit, fixture_parser, split_params, status_error)

import openai
from tests.support.llm_fixtures import Fixture, load_fixture

API_SUFFIXES = (
    ("/chat/completions", "chat.completions"),
    ("/embeddings", "embeddings"),
    ("/responses", "responses"),
    ("/completions", "completions"),
)


def endpoint(fixture: Fixture) -> Tuple[str, str]:
    """(api, base path) of a fixture URL, e.g. ("chat.completions", "/openai/v1")."""
    for suffix, api in API_SUFFIXES:
        if fixture.path.endswith(suffix):
            return api, fixture.path[: -len(suffix)]
    raise SystemExit("no OpenAI API matches %s" % fixture.path)


def make_client(fixture: Fixture, base_path: str, http_client: Any, headers: Dict[str, str]) -> openai.OpenAI:
    common = dict(api_key=OPENAI_TEST_KEY, http_client=http_client, default_headers=headers, max_retries=0,
                  timeout=TIMEOUT_S)
    origin = "%s://%s" % (fixture.scheme, fixture.host)
    if fixture.host.endswith(".openai.azure.com"):
        deployment = base_path.rsplit("/", 1)[-1]
        version = parse_qs(fixture.query).get("api-version", ["2024-02-01"])[0]
        return openai.AzureOpenAI(azure_endpoint=origin, azure_deployment=deployment, api_version=version, **common)
    return openai.OpenAI(base_url=origin + base_path, **common)


def resource(client: openai.OpenAI, api: str) -> Any:
    target: Any = client
    for part in api.split("."):
        target = getattr(target, part)
    return target


def _usage(obj: Any) -> Optional[Dict[str, Any]]:
    usage = getattr(obj, "usage", None)
    return usage.model_dump() if usage is not None else None


def parsed_result(api: str, parsed: Any) -> Dict[str, Any]:
    """What the SDK made of a whole (non-streaming) response."""
    result: Dict[str, Any] = {"model": getattr(parsed, "model", None), "usage": _usage(parsed)}
    if api == "chat.completions":
        choice = parsed.choices[0]
        calls = choice.message.tool_calls or []
        names = [call.function.name for call in calls]
        if choice.message.function_call:
            names.append(choice.message.function_call.name)
        result.update(text=choice.message.content, finish_reason=choice.finish_reason, tool_calls=names)
    elif api == "completions":
        result.update(text=parsed.choices[0].text, finish_reason=parsed.choices[0].finish_reason, tool_calls=[])
    elif api == "responses":
        names = [item.name for item in parsed.output if item.type == "function_call"]
        result.update(text=parsed.output_text or None, finish_reason=parsed.status, tool_calls=names)
    else:
        result.update(embeddings=len(parsed.data))
    return result


def streamed_result(api: str, stream: Any) -> Dict[str, Any]:
    """Consume an SDK stream the way an application would, noting text, tools and usage."""
    text, names, chunks = [], [], 0
    result: Dict[str, Any] = {"model": None, "usage": None, "finish_reason": None, "stream_error": None}
    try:
        for event in stream:
            chunks += 1
            _note_event(api, event, result, text, names)
    except openai.APIConnectionError:
        raise
    except openai.APIError as exc:  # an error event inside a 200 stream (e.g. OpenRouter)
        result["stream_error"] = exc.message
    result.update(text="".join(text) or None, tool_calls=names, chunks=chunks)
    return result


def _note_event(api: str, event: Any, result: Dict[str, Any], text: List[str], names: List[str]) -> None:
    """Fold one stream event into the running result."""
    if api == "responses":
        if event.type == "response.output_text.delta":
            text.append(event.delta)
        elif event.type == "response.output_item.added" and event.item.type == "function_call":
            names.append(event.item.name)
        elif event.type in ("response.completed", "response.incomplete"):
            result.update(model=event.response.model, usage=_usage(event.response), finish_reason=event.response.status)
        return
    result["model"] = result["model"] or getattr(event, "model", None)
    if getattr(event, "usage", None) is not None:
        result["usage"] = _usage(event)
    for choice in event.choices:
        if choice.index != 0:
            continue
        if api == "completions":
            text.append(choice.text or "")
        else:
            text.append(choice.delta.content or "")
            names.extend(call.function.name for call in choice.delta.tool_calls or []
                         if call.function and call.function.name)
        result["finish_reason"] = choice.finish_reason or result["finish_reason"]


def main() -> int:
    args = fixture_parser(__doc__.split("\n")[0]).parse_args()

    fixture = load_fixture(args.fixture, args.fixtures_dir)
    api, base_path = endpoint(fixture)
    log = ExchangeLog()
    http_client = openai.DefaultHttpxClient(verify=client_context(args.ca), event_hooks=log.hooks(),
                                            http2=args.http2)
    headers = {} if args.no_fixture_header else {"X-Fixture": fixture.name}
    client = make_client(fixture, base_path, http_client, headers)
    target = resource(client, api)
    kwargs, extra_body = split_params(target.create, fixture.request_json())
    if extra_body:
        kwargs["extra_body"] = extra_body
    stream = kwargs.get("stream") is True
    summary: Dict[str, Any] = {"client": "openai", "fixture": fixture.name, "api": api, "stream": stream}
    try:
        if stream and args.raw:
            with target.with_streaming_response.create(**kwargs) as response:
                summary["response"] = body_summary(b"".join(response.iter_bytes()))
        elif stream:
            summary["result"] = streamed_result(api, target.create(**kwargs))
        else:
            raw = target.with_raw_response.create(**kwargs)
            summary["response"] = body_summary(raw.http_response.content)
            summary["result"] = parsed_result(api, raw.parse())
    except openai.APIStatusError as exc:
        summary["error"] = status_error(exc)
    summary["requests"], summary["responses"] = log.requests, log.responses
    emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
