"""Bedrock: Converse and model-native InvokeModel bodies, both stream kinds over the AWS event
stream, SigV4 attribution without the signature, region from the host."""
from __future__ import annotations

import base64
import json

import pytest

from oisp_daemon.decode.eventstream import encode_message
from oisp_daemon.providers import bedrock
from oisp_daemon.providers.parse import parse_request, parse_response, stream_decoder
from tests.support.fixtures import http_request, http_response

HOST = "bedrock-runtime.eu-west-1.amazonaws.com"
SIGV4 = ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/eu-west-1/bedrock/aws4_request, "
         "SignedHeaders=host;x-amz-date, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024")
EVENTSTREAM = "application/vnd.amazon.eventstream"


def _request(model, op, body):
    return parse_request("aws_bedrock", http_request(f"/model/{model}/{op}", body, headers=[("Authorization", SIGV4)]), HOST)


def _events(*events):
    return b"".join(encode_message({":event-type": name, ":message-type": "event", ":content-type": "application/json"},
                                   json.dumps(data).encode()) for name, data in events)


def _chunks(*chunks):
    return _events(*(("chunk", {"bytes": base64.b64encode(json.dumps(c).encode()).decode()}) for c in chunks))


def test_attribution_is_the_access_key_id_and_the_region_never_the_signature():
    info = _request("us.anthropic.claude-3-5-haiku-20241022-v1%3A0", "converse", {"messages": []})
    assert info.api_key == "AKIAIOSFODNN7EXAMPLE" and info.region == "eu-west-1"
    assert info.model == "us.anthropic.claude-3-5-haiku-20241022-v1:0"
    assert "fe5f80f7" not in repr(info)


def test_converse_request_and_tool_use_answer():
    info = _request("amazon.nova-pro-v1%3A0", "converse", {
        "system": [{"text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"text": "Weather?"}]},
                     {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"temp": 20}}]}}]}],
        "toolConfig": {"tools": [{"toolSpec": {"name": "weather", "description": "d"}}], "toolChoice": {"any": {}}},
        "inferenceConfig": {"maxTokens": 100, "temperature": 0.1, "topP": 0.8, "stopSequences": ["x"]},
    })
    assert [m.role for m in info.messages] == ["system", "user", "tool"] and info.messages[2].tool_call_id == "t1"
    assert info.tool_choice == "required" and info.parameters == {"temperature": 0.1, "top_p": 0.8, "max_tokens": 100, "stop": ["x"]}
    out = parse_response(info, http_response({
        "output": {"message": {"role": "assistant", "content": [{"text": "Checking."}, {"toolUse": {"toolUseId": "t2", "name": "weather", "input": {"city": "Oslo"}}}]}},
        "stopReason": "tool_use", "usage": {"inputTokens": 30, "outputTokens": 9, "cacheReadInputTokens": 100}}))
    assert out.text == "Checking." and out.finish_reason == "tool_use"
    assert [(c.name, c.id, json.loads(c.arguments)) for c in out.tool_calls] == [("weather", "t2", {"city": "Oslo"})]
    assert (out.usage.prompt_tokens, out.usage.cached_tokens, out.usage.cache_in_prompt) == (30, 100, False)


def test_converse_stream_with_a_tool_call_decodes_live_and_whole():
    body = _events(("messageStart", {"role": "assistant"}), ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
                   ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t9", "name": "lookup"}}}),
                   ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"q":'}}}),
                   ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"x"}'}}}),
                   ("messageStop", {"stopReason": "tool_use"}), ("metadata", {"usage": {"inputTokens": 5, "outputTokens": 7}}))
    info = _request("amazon.nova-micro-v1%3A0", "converse-stream", {"messages": []})
    out = parse_response(info, http_response(body, content_type=EVENTSTREAM))
    assert out.streaming and out.text == "Hi" and out.finish_reason == "tool_use" and out.parse_error is None
    assert json.loads(out.tool_calls[0].arguments) == {"q": "x"} and out.usage.completion_tokens == 7
    decoder = stream_decoder(info, http_response(b"", content_type=EVENTSTREAM))
    deltas = [d for i in range(0, len(body), 11) for d in decoder.feed(body[i:i + 11])] + decoder.close()
    assert "".join(d.tool_call.arguments or "" for d in deltas if d.tool_call) == '{"q":"x"}'


def test_an_exception_inside_a_stream_is_an_error():
    body = _events(("messageStart", {"role": "assistant"})) + encode_message(
        {":message-type": "exception", ":exception-type": "throttlingException"}, b'{"message":"slow down"}')
    out = parse_response(_request("amazon.nova-micro-v1%3A0", "converse-stream", {}), http_response(body, content_type=EVENTSTREAM))
    assert (out.error_type, out.error_message, out.success) == ("throttlingException", "slow down", False)


def test_a_corrupt_stream_is_reported_not_raised():
    body = bytearray(_events(("contentBlockDelta", {"delta": {"text": "Hi"}}), ("messageStop", {"stopReason": "end_turn"})))
    body[-10] ^= 1
    out = parse_response(_request("amazon.nova-micro-v1%3A0", "converse-stream", {}), http_response(bytes(body), content_type=EVENTSTREAM))
    assert out.text == "Hi" and "CRC" in out.parse_error


def test_invoke_stream_of_an_anthropic_model_unwraps_the_messages_events():
    body = _chunks({"type": "message_start", "message": {"id": "msg_1", "model": "claude-3-haiku", "usage": {"input_tokens": 12}}},
                   {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                   {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
                   {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
                   {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 12, "outputTokenCount": 3}})
    info = _request("anthropic.claude-3-haiku-20240307-v1%3A0", "invoke-with-response-stream",
                    {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]})
    assert info.messages[0].content == "Hi" and info.parameters["max_tokens"] == 50
    out = parse_response(info, http_response(body, content_type=EVENTSTREAM))
    assert (out.text, out.finish_reason, out.model, out.usage.prompt_tokens, out.usage.completion_tokens) == ("Hello", "end_turn", "claude-3-haiku", 12, 3)


@pytest.mark.parametrize("model,request_body,answer,text,finish", [
    ("amazon.titan-text-express-v1", {"inputText": "Hi", "textGenerationConfig": {"maxTokenCount": 20}},
     {"inputTextTokenCount": 3, "results": [{"tokenCount": 4, "outputText": "Hello", "completionReason": "FINISH"}]}, "Hello", "FINISH"),
    ("meta.llama3-8b-instruct-v1%3A0", {"prompt": "Hi", "max_gen_len": 20},
     {"generation": "Hello", "prompt_token_count": 3, "generation_token_count": 4, "stop_reason": "stop"}, "Hello", "stop"),
    ("mistral.mistral-7b-instruct-v0%3A2", {"prompt": "<s>[INST] Hi [/INST]", "max_tokens": 20},
     {"outputs": [{"text": "Hello", "stop_reason": "stop"}]}, "Hello", "stop"),
    ("cohere.command-r-v1%3A0", {"message": "Hi", "max_tokens": 20},
     {"text": "Hello", "finish_reason": "COMPLETE"}, "Hello", "COMPLETE"),
])
def test_invoke_with_model_native_bodies(model, request_body, answer, text, finish):
    info = _request(model, "invoke", request_body)
    assert info.messages and info.parameters.get("max_tokens") == 20
    resp = http_response(answer, headers=[("X-Amzn-Bedrock-Input-Token-Count", "3"), ("X-Amzn-Bedrock-Output-Token-Count", "4")])
    out = parse_response(info, resp)
    assert (out.text, out.finish_reason, out.usage.prompt_tokens, out.usage.completion_tokens) == (text, finish, 3, 4)


def test_invoke_stream_of_a_llama_model_takes_counts_from_the_invocation_metrics():
    body = _chunks({"generation": "Hel"}, {"generation": "lo", "stop_reason": "stop",
                                           "amazon-bedrock-invocationMetrics": {"inputTokenCount": 3, "outputTokenCount": 2}})
    out = parse_response(_request("meta.llama3-8b-instruct-v1%3A0", "invoke-with-response-stream", {"prompt": "Hi"}),
                         http_response(body, content_type=EVENTSTREAM))
    assert (out.text, out.finish_reason, out.usage.prompt_tokens, out.usage.completion_tokens) == ("Hello", "stop", 3, 2)


def test_titan_embeddings():
    info = _request("amazon.titan-embed-text-v2%3A0", "invoke", {"inputText": "Hi"})
    assert info.request_type == "embedding" and info.input_count == 1
    out = parse_response(info, http_response({"embedding": [0.1, 0.2], "inputTextTokenCount": 2}))
    assert (out.embedding_count, out.embedding_dimensions, out.usage.prompt_tokens) == (1, 2, 2)


def test_the_route_wants_a_model_operation():
    assert bedrock.route("POST", "/model/x/converse")[0] == bedrock.API_CONVERSE
    assert bedrock.route("GET", "/model/x/converse") is None and bedrock.route("POST", "/model/x/other") is None
