"""Send one recorded request with the provider's own official SDK and summarise the answer.

google-genai (Gemini API and Vertex AI), boto3 (Bedrock runtime), cohere (v1 and v2 chat),
mistralai, groq and ollama. Each SDK builds and sends its own request from the recording's
parameters, trusting the test CA and adding the replay's X-Fixture header; streams are consumed
to the end as an application would. The summary says what the SDK made of the answer.

Usage: provider_sdk_client.py --ca CA.pem --fixture gemini-generate-002
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict
from urllib.parse import unquote

from client_common import AWS_ACCESS_KEY_ID, SDK_TEST_KEY, TIMEOUT_S, client_context, emit, fixture_parser

import httpx
from tests.support.llm_fixtures import Fixture, load_fixture

OLLAMA_TLS_HOST = "ollama.replay.test"  # tests/integration/conftest.py maps it to provider ollama


def _http(fixture: Fixture, ca: str) -> httpx.Client:
    return httpx.Client(verify=client_context(ca), headers={"X-Fixture": fixture.name}, timeout=TIMEOUT_S)


def _text_of_stream(chunks: Any, text: Callable[[Any], Any]) -> Dict[str, Any]:
    parts, count = [], 0
    for chunk in chunks:
        count += 1
        piece = text(chunk)
        if isinstance(piece, str):
            parts.append(piece)
    return {"chunks": count, "text": "".join(parts) or None}


def gemini(fixture: Fixture, ca: str) -> Dict[str, Any]:
    from google import genai
    from google.genai import errors, types

    body = fixture.request_json()
    model = fixture.path.rsplit("/models/", 1)[1].split(":", 1)[0]
    options = types.HttpOptions(headers={"X-Fixture": fixture.name}, client_args={"verify": client_context(ca)})
    if "aiplatform" in fixture.host:
        from google.oauth2.credentials import Credentials

        project, location = fixture.path.split("/projects/", 1)[1].split("/")[0], fixture.path.split("/locations/", 1)[1].split("/")[0]
        options.base_url = "https://%s/" % fixture.host
        options.api_version = fixture.path.split("/")[1]
        client = genai.Client(vertexai=True, project=project, location=location, credentials=Credentials(token=SDK_TEST_KEY),
                              http_options=options)
    else:
        client = genai.Client(api_key=SDK_TEST_KEY, http_options=options)
    config = body.get("generationConfig") or {}
    if body.get("systemInstruction"):
        config = dict(config, system_instruction=body["systemInstruction"])
    try:
        if ":streamGenerateContent" in fixture.path:
            stream = client.models.generate_content_stream(model=model, contents=body["contents"], config=config or None)
            return _text_of_stream(stream, lambda c: c.text)
        answer = client.models.generate_content(model=model, contents=body["contents"], config=config or None)
        return {"text": answer.text, "model": answer.model_version}
    except errors.APIError as exc:
        return {"status": exc.code, "error": exc.status}


def bedrock(fixture: Fixture, ca: str) -> Dict[str, Any]:
    import boto3
    from botocore.exceptions import ClientError

    region = fixture.host.split(".")[1]
    client = boto3.client("bedrock-runtime", region_name=region, verify=ca, aws_access_key_id=AWS_ACCESS_KEY_ID,
                          aws_secret_access_key="replay-test-secret")
    client.meta.events.register("before-send.*", lambda request, **_: request.headers.__setitem__("X-Fixture", fixture.name))
    model = unquote(fixture.path.split("/model/", 1)[1].rsplit("/", 1)[0])
    operation = fixture.path.rsplit("/", 1)[1]
    body = fixture.request_json()
    try:
        if operation == "converse-stream":
            stream = client.converse_stream(modelId=model, **body)["stream"]
            return _text_of_stream(stream, lambda e: e.get("contentBlockDelta", {}).get("delta", {}).get("text"))
        if operation == "converse":
            answer = client.converse(modelId=model, **body)
            return {"text": answer["output"]["message"]["content"][0].get("text"), "stop": answer["stopReason"]}
        answer = client.invoke_model(modelId=model, body=json.dumps(body).encode())
        return {"body": json.loads(answer["body"].read())}
    except ClientError as exc:
        return {"status": exc.response["ResponseMetadata"]["HTTPStatusCode"], "error": exc.response["Error"]["Code"]}


def cohere(fixture: Fixture, ca: str) -> Dict[str, Any]:
    import cohere as sdk

    body = {k: v for k, v in fixture.request_json().items() if k != "stream"}
    streaming = fixture.request_json().get("stream") is True
    if fixture.path.startswith("/v1/"):
        v1 = sdk.Client(api_key=SDK_TEST_KEY, base_url="https://%s" % fixture.host, httpx_client=_http(fixture, ca))
        if streaming:
            return _text_of_stream(v1.chat_stream(**body), lambda e: getattr(e, "text", None))
        return {"text": v1.chat(**body).text}
    v2 = sdk.ClientV2(api_key=SDK_TEST_KEY, base_url="https://%s" % fixture.host, httpx_client=_http(fixture, ca))
    if streaming:
        return _text_of_stream(v2.chat_stream(**body), lambda e: e.type)
    answer = v2.chat(**body)
    return {"text": answer.message.content[0].text if answer.message.content else None}


def mistral(fixture: Fixture, ca: str) -> Dict[str, Any]:
    from mistralai.client import Mistral

    body = {k: v for k, v in fixture.request_json().items() if k != "stream"}
    client = Mistral(api_key=SDK_TEST_KEY, server_url="https://%s" % fixture.host, client=_http(fixture, ca))
    if fixture.request_json().get("stream") is True:
        stream = client.chat.stream(**body)
        return _text_of_stream(stream, lambda e: e.data.choices[0].delta.content if e.data.choices else None)
    answer = client.chat.complete(**body)
    return {"text": answer.choices[0].message.content if isinstance(answer.choices[0].message.content, str) else None}


def groq(fixture: Fixture, ca: str) -> Dict[str, Any]:
    import groq as sdk

    body = fixture.request_json()
    client = sdk.Groq(api_key=SDK_TEST_KEY, base_url="https://%s" % fixture.host, http_client=_http(fixture, ca))
    try:
        answer = client.chat.completions.create(**body)
        if body.get("stream"):
            return _text_of_stream(answer, lambda c: c.choices[0].delta.content if c.choices else None)
        return {"text": answer.choices[0].message.content}
    except sdk.APIError as exc:  # the recording's stream ends with an error event
        return {"error": type(exc).__name__}


def ollama(fixture: Fixture, ca: str) -> Dict[str, Any]:
    import ollama as sdk

    body = fixture.request_json()
    client = sdk.Client(host="https://%s" % OLLAMA_TLS_HOST, verify=client_context(ca), headers={"X-Fixture": fixture.name})
    params = {k: v for k, v in body.items() if k in ("model", "messages", "prompt", "stream", "options", "format", "tools")}
    if not params.get("format"):
        params.pop("format", None)
    call = client.chat if fixture.path.endswith("/api/chat") else client.generate
    answer = call(**params)
    if params.get("stream"):
        return _text_of_stream(answer, lambda c: c.message.content if c.get("message") else c.get("response"))
    return {"done_reason": answer.done_reason}


SDKS = {"gemini": gemini, "vertex_ai": gemini, "bedrock": bedrock, "cohere": cohere, "mistral": mistral,
        "groq": groq, "ollama": ollama}


def main() -> None:
    args = fixture_parser(__doc__.splitlines()[0]).parse_args()
    fixture = load_fixture(args.fixture, args.fixtures_dir)
    summary = SDKS[fixture.provider](fixture, args.ca)
    emit(dict(summary, sdk=fixture.provider, pid=os.getpid()))


if __name__ == "__main__":
    main()
