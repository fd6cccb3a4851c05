"""Hugging Face (Inference API and TGI) and Replicate predictions."""
from __future__ import annotations

from oisp_daemon.providers import huggingface, replicate
from oisp_daemon.providers.parse import parse_request, parse_response, stream_decoder
from tests.support.fixtures import http_request, http_response, sse_body

HF = "api-inference.huggingface.co"


def test_inference_api_generation():
    req = http_request("/models/meta-llama/Llama-3.1-8B-Instruct", {"inputs": "Hello", "parameters": {"max_new_tokens": 20, "temperature": 0.3}})
    info = parse_request("huggingface", req, HF)
    assert (info.api, info.model, info.parameters) == (huggingface.API_INFERENCE, "meta-llama/Llama-3.1-8B-Instruct", {"temperature": 0.3, "max_tokens": 20})
    out = parse_response(info, http_response([{"generated_text": "Hi there", "details": {"finish_reason": "eos_token", "generated_tokens": 3}}]))
    assert (out.text, out.finish_reason, out.usage.completion_tokens, out.parse_error) == ("Hi there", "eos_token", 3, None)


def test_tgi_generate_stream_decodes_tokens_live_and_whole():
    body = sse_body({"token": {"id": 1, "text": "Hel", "special": False}},
                    {"token": {"id": 2, "text": "lo", "special": False}},
                    {"token": {"id": 3, "text": "</s>", "special": True}, "generated_text": "Hello",
                     "details": {"finish_reason": "eos_token", "generated_tokens": 3}})
    info = parse_request("text_generation_inference", http_request("/generate_stream", {"inputs": "Hi"}), "tgi.internal:8080")
    assert info.streaming and info.api == huggingface.API_GENERATE_STREAM
    resp = http_response(body, content_type="text/event-stream")
    out = parse_response(info, resp)
    assert (out.text, out.finish_reason, out.usage.completion_tokens, out.stream_finished) == ("Hello", "eos_token", 3, True)
    decoder = stream_decoder(info, http_response(b"", content_type="text/event-stream"))
    deltas = [d for i in range(0, len(body), 7) for d in decoder.feed(body[i:i + 7])] + decoder.close()
    assert "".join(d.content or "" for d in deltas) == "Hello"


def test_hf_errors_carry_the_message():
    info = parse_request("huggingface", http_request("/models/gpt2", {"inputs": "x"}), HF)
    out = parse_response(info, http_response({"error": "Model gpt2 is currently loading"}, status=503))
    assert not out.success and out.error_message == "Model gpt2 is currently loading"


def test_replicate_prediction_with_metrics():
    req = http_request("/v1/models/meta/meta-llama-3-8b-instruct/predictions",
                       {"input": {"prompt": "Hi", "system_prompt": "Be brief.", "max_new_tokens": 30}})
    info = parse_request("replicate", req, "api.replicate.com")
    assert (info.api, info.model, info.system_prompt, info.parameters) == (replicate.API_PREDICTION, "meta/meta-llama-3-8b-instruct", "Be brief.", {"max_tokens": 30})
    out = parse_response(info, http_response({"id": "p1", "status": "succeeded", "output": ["Hel", "lo"],
                                              "metrics": {"input_token_count": 5, "output_token_count": 2}}, status=201))
    assert (out.text, out.finish_reason, out.usage.prompt_tokens, out.usage.completion_tokens, out.provider_request_id) == ("Hello", "stop", 5, 2, "p1")


def test_a_replicate_prediction_still_starting_has_no_text_yet():
    info = parse_request("replicate", http_request("/v1/predictions", {"version": "abc123", "input": {"prompt": "Hi"}}), "api.replicate.com")
    out = parse_response(info, http_response({"id": "p2", "status": "starting", "output": None}, status=201))
    assert out.text is None and out.finish_reason == "starting" and info.model == "abc123"
