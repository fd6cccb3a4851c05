"""Ollama's native API: /api/chat, /api/generate, /api/embed and the older /api/embeddings.

Answers stream as NDJSON (application/x-ndjson) unless the request says `"stream": false`: the
API streams by default. The last object has `done: true`, `done_reason` and the token counts
(`prompt_eval_count`, `eval_count`). Thinking models put their reasoning in `thinking`, which is
never response text. Ollama's OpenAI-compatible /v1 endpoints go through the OpenAI family.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional

from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.providers.errors import stream_error
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo, Message, StreamDelta, ToolCall, ToolDefinition, Usage
from oisp_daemon.providers.family import Route
from oisp_daemon.providers.fields import as_dict, as_int, as_list, as_str, nonempty
from oisp_daemon.providers.parsing import route_post, set_error, start_request, start_response
from oisp_daemon.providers.prompt import make_message, named_parameters, system_prompt
from oisp_daemon.providers.stream import JsonEvent, JsonLines, StreamDecoder, decode_whole

# The ApiFamily interface (providers/family.py).
FAMILY = "ollama"
NATIVE_PROVIDERS = frozenset({"ollama"})
ANY_PROVIDER = False  # /api/... paths are too generic to claim on hosts not known as Ollama

API_CHAT = "ollama.chat"
API_GENERATE = "ollama.generate"
API_EMBED = "ollama.embed"

_ROUTE = re.compile(r"^(?:/.*)?/api/(chat|generate|embed|embeddings)$")
_APIS = {
    "chat": (API_CHAT, "chat"),
    "generate": (API_GENERATE, "completion"),
    "embed": (API_EMBED, "embedding"),
    "embeddings": (API_EMBED, "embedding"),
}


def route(method: str, target: str) -> Optional[Route]:
    return route_post(_ROUTE, _APIS, method, target)


def parse_request(provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
    found = route(req.method, req.target)
    if found is None:
        return None
    info, body = start_request(provider, req, host, found)
    if body is None:
        return info
    # Streaming is the default: only an explicit false asks for one JSON object.
    info.streaming = info.api != API_EMBED and body.get("stream") is not False
    if info.api == API_CHAT:
        for raw in as_list(body.get("messages")):
            raw = as_dict(raw)
            if raw:
                images = len(as_list(raw.get("images")))
                message = make_message(raw.get("role"), raw.get("content"), name=as_str(raw.get("tool_name")))
                message.image_count, message.has_images = images, images > 0
                info.messages.append(message)
        info.system_prompt = system_prompt(info.messages)
        for tool in as_list(body.get("tools")):
            function = as_dict(as_dict(tool).get("function"))
            if as_str(function.get("name")):
                info.tools.append(ToolDefinition(name=function["name"], description=as_str(function.get("description"))))
    elif info.api == API_GENERATE:
        system = nonempty(as_str(body.get("system")))
        if system:
            info.system_prompt = system
            info.messages.append(Message(role="system", content=system))
        prompt = as_str(body.get("prompt"))
        if prompt is not None:
            images = len(as_list(body.get("images")))
            info.messages.append(Message(role="user", content=prompt, has_images=images > 0, image_count=images))
    else:
        inputs = body.get("input", body.get("prompt"))
        info.input_count = len(inputs) if isinstance(inputs, list) else 1
    info.parameters = named_parameters(as_dict(body.get("options")), max_tokens="num_predict")
    return info


def parse_response(info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
    if _is_stream(info, resp) and 200 <= resp.status < 300:
        out = AiResponseInfo(status_code=resp.status, success=True, streaming=True)
        decode_whole(_decoder(info, out), resp.body)
    else:
        out, body = start_response(info, resp, ())
        if body is not None:
            if info.api == API_EMBED:
                vectors = as_list(body.get("embeddings")) or ([body["embedding"]] if isinstance(body.get("embedding"), list) else [])
                out.embedding_count = len(vectors)
                out.embedding_dimensions = len(vectors[0]) if vectors and isinstance(vectors[0], list) else None
                out.usage = Usage(prompt_tokens=as_int(body.get("prompt_eval_count")))
            else:
                handler = _Answer(out, info.api)
                handler.apply(body)
                handler.close()
    out.model = out.model or info.model
    return out


def stream_decoder(info: AiRequestInfo, resp: HttpResponse) -> Optional[StreamDecoder]:
    if not _is_stream(info, resp) or resp.status >= 400:
        return None
    return _decoder(info, AiResponseInfo(status_code=resp.status, success=True, streaming=True))


def _is_stream(info: AiRequestInfo, resp: HttpResponse) -> bool:
    content_type = (resp.header("Content-Type") or "").lower()
    return info.api != API_EMBED and ("ndjson" in content_type or (info.streaming and not content_type.startswith("application/json")))


def _decoder(info: AiRequestInfo, out: AiResponseInfo) -> StreamDecoder:
    return StreamDecoder(JsonLines(), _Answer(out, info.api), out)


class _Answer:
    """Chat / generate objects: the one whole answer, or each NDJSON line of a stream."""

    def __init__(self, out: AiResponseInfo, api: str) -> None:
        self.out = out
        self.api = api
        self.texts: List[str] = []
        self.finish: Optional[str] = None

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        return self.apply(event.data)

    def apply(self, data: Dict[str, Any]) -> List[StreamDelta]:
        out = self.out
        if data.get("error"):
            set_error(out, stream_error(data["error"]))
        out.model = out.model or nonempty(as_str(data.get("model")))
        message = as_dict(data.get("message"))
        text = as_str(message.get("content")) if self.api == API_CHAT else as_str(data.get("response"))
        deltas: List[StreamDelta] = []
        if text:
            self.texts.append(text)
            deltas.append(StreamDelta(content=text))
        for raw in as_list(message.get("tool_calls")):
            function = as_dict(as_dict(raw).get("function"))
            if as_str(function.get("name")):
                args = function.get("arguments")
                call = ToolCall(name=function["name"], id=as_str(as_dict(raw).get("id")),
                                arguments=args if isinstance(args, str) else json.dumps(args) if args is not None else None)
                out.tool_calls.append(call)
                deltas.append(StreamDelta(tool_call=call))
        if data.get("done") is True:
            self.finish = as_str(data.get("done_reason")) or "stop"
            out.usage = Usage(prompt_tokens=as_int(data.get("prompt_eval_count")), completion_tokens=as_int(data.get("eval_count")))
            out.stream_finished = True
            deltas.append(StreamDelta(finish_reason=self.finish))
        return deltas

    def close(self) -> None:
        out = self.out
        out.text = nonempty("".join(self.texts))
        out.choice_texts = [out.text]
        out.finish_reason = self.finish
        out.choice_finish_reasons = [self.finish]
