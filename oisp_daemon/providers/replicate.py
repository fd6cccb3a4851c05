"""Replicate: predictions (`POST /v1/predictions` with a version, `POST /v1/models/<owner>/<name>/
predictions`, `POST /v1/deployments/<owner>/<name>/predictions`). A prediction's input is the
model's own (`prompt`, `system_prompt`, `max_tokens`/`max_new_tokens`, ...); the answer is the
prediction object, whose output (a string or a list of string pieces) may still be coming: with
`Prefer: wait` it is final, otherwise the status says `starting` and the output arrives later
through GET polling or the stream URL, which this family does not follow.
"""
from __future__ import annotations

import re
from typing import Optional

from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.providers.endpoint import request_path
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo, Message, Usage
from oisp_daemon.providers.family import Route
from oisp_daemon.providers.fields import as_dict, as_int, as_list, as_number, as_str, nonempty
from oisp_daemon.providers.parsing import start_request, start_response
from oisp_daemon.providers.stream import StreamDecoder

# The ApiFamily interface (providers/family.py).
FAMILY = "replicate"
NATIVE_PROVIDERS = frozenset({"replicate"})
ANY_PROVIDER = False

API_PREDICTION = "replicate.prediction"

_ROUTE = re.compile(r"^/v1(?:/(?:models|deployments)/(?P<owner>[^/]+)/(?P<name>[^/]+))?/predictions$")


def route(method: str, target: str) -> Optional[Route]:
    if method.upper() == "POST" and _ROUTE.match(request_path(target)):
        return API_PREDICTION, "completion"
    return None


def parse_request(provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
    found = route(req.method, req.target)
    if found is None:
        return None
    match = _ROUTE.match(request_path(req.target))
    assert match is not None  # route() matched the same path
    info, body = start_request(provider, req, host, found)
    if match.group("owner"):
        info.model = "%s/%s" % (match.group("owner"), match.group("name"))
    if body is None:
        return info
    info.model = info.model or as_str(body.get("version"))
    info.streaming = body.get("stream") is True
    model_input = as_dict(body.get("input"))
    system = nonempty(as_str(model_input.get("system_prompt")))
    if system:
        info.system_prompt = system
        info.messages.append(Message(role="system", content=system))
    prompt = as_str(model_input.get("prompt"))
    if prompt is not None:
        info.messages.append(Message(role="user", content=prompt))
    for key in ("temperature", "top_p"):
        number = as_number(model_input.get(key))
        if number is not None:
            info.parameters[key] = number
    for key in ("max_tokens", "max_new_tokens", "max_length"):
        count = as_int(model_input.get(key))
        if count is not None:
            info.parameters["max_tokens"] = count
            break
    return info


def parse_response(info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
    out, body = start_response(info, resp, ())
    if body is None:
        out.model = out.model or info.model
        return out
    out.provider_request_id = as_str(body.get("id")) or out.provider_request_id
    output = body.get("output")
    pieces = as_list(output) if isinstance(output, list) else [output]
    out.text = nonempty("".join(p for p in pieces if isinstance(p, str)))
    status = as_str(body.get("status"))
    out.finish_reason = {"succeeded": "stop", "failed": "error", "canceled": "other"}.get(status or "", status)
    if status == "failed":
        out.success = False
        out.error_type, out.error_message = "prediction_failed", as_str(body.get("error"))
    metrics = as_dict(body.get("metrics"))
    out.usage = Usage(prompt_tokens=as_int(metrics.get("input_token_count")), completion_tokens=as_int(metrics.get("output_token_count")))
    out.choice_texts, out.choice_finish_reasons = [out.text], [out.finish_reason]
    out.model = out.model or as_str(body.get("model")) or info.model
    return out


def stream_decoder(info: AiRequestInfo, resp: HttpResponse) -> Optional[StreamDecoder]:
    """Predictions answer with one object; their stream is a separate URL this family does not follow."""
    return None
