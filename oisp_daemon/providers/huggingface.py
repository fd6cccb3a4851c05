"""Hugging Face: the serverless Inference API (`POST /models/<model>`, `{"inputs": ...}`) and
Text Generation Inference servers (`POST /generate`, `POST /generate_stream` with SSE token
events). Hugging Face's OpenAI-compatible routes (router.huggingface.co/v1, TGI's
/v1/chat/completions) go through the OpenAI family.
"""
from __future__ import annotations

import re
from typing import List, Optional

from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.providers.endpoint import request_path
from oisp_daemon.providers.errors import stream_error
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo, Message, StreamDelta, Usage
from oisp_daemon.providers.family import Route
from oisp_daemon.providers.fields import as_dict, as_int, as_number, as_str, load_json, nonempty
from oisp_daemon.providers.parsing import set_error, start_request, start_response
from oisp_daemon.providers.stream import JsonEvent, SseJson, StreamDecoder, decode_whole

# The ApiFamily interface (providers/family.py).
FAMILY = "huggingface"
NATIVE_PROVIDERS = frozenset({"huggingface", "text_generation_inference"})
ANY_PROVIDER = False  # /generate and /models/... are too generic to claim on other hosts

API_INFERENCE = "huggingface.inference"
API_GENERATE = "huggingface.tgi_generate"
API_GENERATE_STREAM = "huggingface.tgi_generate_stream"

_INFERENCE = re.compile(r"^(?:/hf-inference)?/models/(?P<model>[^:]+?)(?:/pipeline/[^/]+)?$")
_TGI = re.compile(r"^(?:/.*)?/(generate|generate_stream)$")


def route(method: str, target: str) -> Optional[Route]:
    if method.upper() != "POST":
        return None
    path = request_path(target)
    tgi = _TGI.match(path)
    if tgi:
        return (API_GENERATE_STREAM if tgi.group(1) == "generate_stream" else API_GENERATE), "completion"
    return (API_INFERENCE, "other") if _INFERENCE.match(path) else None


def parse_request(provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
    found = route(req.method, req.target)
    if found is None:
        return None
    info, body = start_request(provider, req, host, found)
    inference = _INFERENCE.match(request_path(req.target))
    if info.api == API_INFERENCE and inference:
        info.model = inference.group("model")
    info.streaming = info.api == API_GENERATE_STREAM or (body or {}).get("stream") is True
    if body is None:
        return info
    inputs = body.get("inputs")
    if isinstance(inputs, str):
        info.messages = [Message(role="user", content=inputs)]
        info.request_type = "completion" if info.api == API_INFERENCE else info.request_type
    elif isinstance(inputs, list):
        info.input_count = len(inputs)
    params = as_dict(body.get("parameters"))
    for key in ("temperature", "top_p"):
        number = as_number(params.get(key))
        if number is not None:
            info.parameters[key] = number
    count = as_int(params.get("max_new_tokens"))
    if count is not None:
        info.parameters["max_tokens"] = count
    stop = params.get("stop")
    if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        info.parameters["stop"] = list(stop)
    return info


def parse_response(info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
    streamed = "event-stream" in (resp.header("Content-Type") or "")
    if info.streaming and streamed and 200 <= resp.status < 300:
        out = AiResponseInfo(status_code=resp.status, success=True, streaming=True)
        decode_whole(_decoder(out), resp.body)
    elif resp.status >= 400:
        out, _ = start_response(info, resp, ("x-request-id",))
    else:
        # A list of generations (Inference API) or one object (TGI): not start_response's object.
        out = AiResponseInfo(status_code=resp.status, success=True)
        value, error = load_json(resp.body)
        first = as_dict(value[0]) if isinstance(value, list) and value else as_dict(value)
        details = as_dict(first.get("details"))
        out.text = nonempty(as_str(first.get("generated_text")))
        out.finish_reason = as_str(details.get("finish_reason"))
        out.usage = Usage(completion_tokens=as_int(details.get("generated_tokens")))
        out.choice_texts, out.choice_finish_reasons = [out.text], [out.finish_reason]
        out.parse_error = error
    out.model = out.model or info.model or resp.header("x-model-id")
    return out


def stream_decoder(info: AiRequestInfo, resp: HttpResponse) -> Optional[StreamDecoder]:
    if not info.streaming or resp.status >= 400 or "event-stream" not in (resp.header("Content-Type") or ""):
        return None
    return _decoder(AiResponseInfo(status_code=resp.status, success=True, streaming=True))


def _decoder(out: AiResponseInfo) -> StreamDecoder:
    return StreamDecoder(SseJson(), _TokenStream(out), out)


class _TokenStream:
    """TGI's generate_stream: one event per token; the last has generated_text and details."""

    def __init__(self, out: AiResponseInfo) -> None:
        self.out = out
        self.texts: List[str] = []

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        data, out = event.data, self.out
        if data.get("error"):
            set_error(out, stream_error({"message": data.get("error"), "type": as_str(data.get("error_type"))}))
            return []
        token = as_dict(data.get("token"))
        text = as_str(token.get("text")) if token.get("special") is not True else None
        details = as_dict(data.get("details"))
        finish = as_str(details.get("finish_reason"))
        if text:
            self.texts.append(text)
        if details:
            out.usage = Usage(completion_tokens=as_int(details.get("generated_tokens")))
            out.finish_reason = finish
            out.stream_finished = True
        return [StreamDelta(content=text or None, finish_reason=finish)] if text or finish else []

    def close(self) -> None:
        self.out.text = nonempty("".join(self.texts))
        self.out.choice_texts, self.out.choice_finish_reasons = [self.out.text], [self.out.finish_reason]
