"""Gemini and Vertex AI (google publisher): routes, request fields, both stream framings,
thought parts and tokens, function calls, the API key in the query."""
from __future__ import annotations

import json

import pytest

from oisp_daemon.events.cost import cost_usd
from oisp_daemon.providers import gemini
from oisp_daemon.providers.parse import parse_request, parse_response, stream_decoder
from tests.support.fixtures import fixture_paths, fixture_request, fixture_response, http_request, http_response, load_fixture

MODEL_PATH = "/v1beta/models/gemini-2.5-flash"
VERTEX_PATH = "/v1/projects/acme-prod/locations/europe-west4/publishers/google/models/gemini-2.5-pro"


@pytest.mark.parametrize("path,api", [
    (MODEL_PATH + ":generateContent", gemini.API_GENERATE),
    (MODEL_PATH + ":streamGenerateContent?alt=sse", gemini.API_STREAM),
    (VERTEX_PATH + ":streamGenerateContent", gemini.API_STREAM),
    ("/v1/models/text-embedding-004:embedContent", gemini.API_EMBED),
    ("/v1beta/models/gemini-embedding-001:batchEmbedContents", gemini.API_BATCH_EMBED),
])
def test_routes(path, api):
    assert gemini.route("POST", path)[0] == api


@pytest.mark.parametrize("method,path", [
    ("POST", MODEL_PATH + ":countTokens"),
    ("GET", MODEL_PATH),
    ("POST", "/v1/projects/p/locations/l/publishers/anthropic/models/claude:rawPredict"),
    ("POST", "/v1/chat/completions"),
])
def test_other_calls_are_not_routed(method, path):
    assert gemini.route(method, path) is None


REQUEST = {
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}, {"inlineData": {"mimeType": "image/png", "data": "AA=="}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]},
    ],
    "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather by city"}]}],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    "generationConfig": {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 256, "stopSequences": ["END"]},
}


def test_request_fields_come_from_the_path_and_the_body():
    req = http_request(VERTEX_PATH + ":generateContent", REQUEST)
    info = parse_request("google", req, "europe-west4-aiplatform.googleapis.com")
    assert (info.api, info.model, info.project_id, info.streaming) == (gemini.API_GENERATE, "gemini-2.5-pro", "acme-prod", False)
    assert info.system_prompt == "Be brief."
    assert [m.role for m in info.messages] == ["system", "user", "assistant", "tool"]
    assert info.messages[1].image_count == 1
    assert info.messages[3].name == "get_weather" and json.loads(info.messages[3].content) == {"temp": 21}
    assert [t.name for t in info.tools] == ["get_weather"] and info.tool_choice == "required"
    assert info.parameters == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 256, "stop": ["END"]}
    assert "?" not in info.endpoint


def test_the_api_key_is_taken_from_the_query_or_the_header():
    info = parse_request("google", http_request(MODEL_PATH + ":generateContent?key=AIzaSyQUERYKEY", {}), "generativelanguage.googleapis.com")
    assert info.api_key == "AIzaSyQUERYKEY" and "AIza" not in info.endpoint
    req = http_request(MODEL_PATH + ":generateContent", {}, headers=[("x-goog-api-key", "AIzaSyHEADERKEY")])
    assert parse_request("google", req, "generativelanguage.googleapis.com").api_key == "AIzaSyHEADERKEY"


CHUNKS = [
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "thinking...", "thought": True}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]}}], "modelVersion": "gemini-2.5-flash"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": " world"},
                                                            {"functionCall": {"name": "lookup", "args": {"q": "x"}}}]},
                     "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 40,
                       "cachedContentTokenCount": 4, "totalTokenCount": 55},
     "responseId": "resp-1"},
]


def _stream_info():
    return parse_request("google", http_request(MODEL_PATH + ":streamGenerateContent", {"contents": []}), "generativelanguage.googleapis.com")


@pytest.mark.parametrize("framing", ["sse", "array"])
def test_both_stream_framings_give_the_same_answer(framing):
    if framing == "sse":
        body = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in CHUNKS).encode()
        resp = http_response(body, content_type="text/event-stream")
    else:
        body = ("[" + ",\r\n".join(json.dumps(c, indent=2) for c in CHUNKS) + "]").encode()
        resp = http_response(body, content_type="application/json; charset=UTF-8")
    out = parse_response(_stream_info(), resp)
    assert out.streaming and out.text == "Hello world" and out.finish_reason == "STOP"
    assert [c.name for c in out.tool_calls] == ["lookup"] and json.loads(out.tool_calls[0].arguments) == {"q": "x"}
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.reasoning_tokens, out.usage.cached_tokens) == (10, 5, 40, 4)
    assert out.model == "gemini-2.5-flash" and out.provider_request_id == "resp-1"
    assert out.parse_error is None and out.first_token_offset is not None


def test_an_array_stream_decodes_live_in_small_pieces():
    body = ("[" + ",\r\n".join(json.dumps(c) for c in CHUNKS) + "]").encode()
    resp = http_response(body, content_type="application/json")
    decoder = stream_decoder(_stream_info(), http_response(b"", content_type="application/json"))
    deltas = []
    for i in range(0, len(body), 5):
        deltas += decoder.feed(body[i:i + 5])
    deltas += decoder.close()
    assert "".join(d.content or "" for d in deltas) == "Hello world"
    assert parse_response(_stream_info(), resp).text == "Hello world"


def test_a_cut_array_stream_is_reported_not_raised():
    body = ("[" + json.dumps(CHUNKS[1]) + ",\r\n" + json.dumps(CHUNKS[2])[:30]).encode()
    out = parse_response(_stream_info(), http_response(body, content_type="application/json"))
    assert out.text == "Hello" and out.parse_error


def test_thought_tokens_are_billed_as_output():
    out = parse_response(_stream_info(), http_response(
        "".join(f"data: {json.dumps(c)}\n\n" for c in CHUNKS).encode(), content_type="text/event-stream"))
    with_thoughts = cost_usd("google", "gemini-2.5-flash", out.usage)
    out.usage.reasoning_tokens = 0
    without = cost_usd("google", "gemini-2.5-flash", out.usage)
    assert with_thoughts is not None and with_thoughts[1] > without[1]


def test_the_error_fixture_names_the_google_status():
    fx = load_fixture(str(fixture_paths("vertex-ai-generate-error-001.json")[0]))
    info = parse_request("google", fixture_request(fx), "us-central1-aiplatform.googleapis.com")
    out = parse_response(info, fixture_response(fx))
    assert out.error_type == "INVALID_ARGUMENT" and out.error_message and not out.success


def test_embeddings():
    info = parse_request("google", http_request("/v1beta/models/gemini-embedding-001:batchEmbedContents",
                                                {"requests": [{}, {}]}), "generativelanguage.googleapis.com")
    out = parse_response(info, http_response({"embeddings": [{"values": [0.1, 0.2, 0.3]}, {"values": [0.4, 0.5, 0.6]}]}))
    assert (info.input_count, out.embedding_count, out.embedding_dimensions) == (2, 2, 3)



def test_integer_finish_reasons_stay_raw_and_are_named():
    body = {"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": 1}]}
    info = parse_request("google", http_request(VERTEX_PATH + ":generateContent", {}), "europe-west4-aiplatform.googleapis.com")
    out = parse_response(info, http_response(body))
    assert out.finish_reason == "1" and out.finish_reason_names == {"1": "STOP"}
