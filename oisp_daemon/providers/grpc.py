"""Provider gRPC APIs (Gemini's GenerativeService, Vertex AI's PredictionService, ...): the calls
are named, their bodies are not decoded.

The protobuf schemas are not shipped, so an ai.request / ai.response says what the framing and
the headers tell: the service and method (from the path), the model where it is the leading
string field of the request message (Gemini's `model = 1`), the number and sizes of messages in
each direction, streaming (a server-streaming method), and the grpc-status. Both events are
partial with parse_error "grpc body not decoded", so nobody takes a missing prompt for an empty
one.
"""
from __future__ import annotations

from typing import Optional

from oisp_daemon.decode import grpc
from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.providers.endpoint import endpoint_url
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo
from oisp_daemon.providers.family import Route
from oisp_daemon.providers.credentials import fill_credentials
from oisp_daemon.providers.stream import StreamDecoder

# The ApiFamily interface (providers/family.py).
FAMILY = "grpc"
NATIVE_PROVIDERS = frozenset({"google", "gemini", "vertex_ai", "aws_bedrock"})
ANY_PROVIDER = False

NOT_DECODED = "grpc body not decoded"
_CHAT = ("GenerateContent", "StreamGenerateContent", "Converse", "ConverseStream", "GenerateMessage",
         "StreamGenerateMessage", "ChatCompletions", "StreamRawPredict", "RawPredict")
_EMBED = ("EmbedContent", "BatchEmbedContents", "EmbedText", "BatchEmbedText")
_NOT_CALLS = ("CountTokens", "ListModels", "GetModel", "ComputeTokens")


def route(method: str, target: str) -> Optional[Route]:
    found = grpc.service_method(target)
    if method.upper() != "POST" or found is None or found[1] in _NOT_CALLS:
        return None
    name = found[1]
    kind = "chat" if name in _CHAT else "embedding" if name in _EMBED else "other"
    return "grpc.%s" % name, kind


def _leading_string(message: bytes) -> Optional[str]:
    """The first field of a protobuf message if it is a length-delimited UTF-8 string (Gemini's
    GenerateContentRequest.model, field 1); None otherwise. Nothing else of the message is read."""
    if len(message) < 2 or message[0] != 0x0A:  # field 1, wire type 2
        return None
    size, shift, pos = 0, 0, 1
    while pos < len(message) and pos < 6:
        byte = message[pos]
        size |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            break
        shift += 7
    raw = message[pos:pos + size]
    if len(raw) != size or not 0 < size <= 256:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() and "models/" in text else None


def parse_request(provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
    found = route(req.method, req.target)
    if found is None or not grpc.is_grpc(req):
        return None
    service, method = grpc.service_method(req.target) or ("", "")
    info = AiRequestInfo(provider=provider, api=found[0], request_type=found[1],
                         endpoint=endpoint_url(host, req.target), parse_error=NOT_DECODED)
    fill_credentials(info, req.headers)
    info.streaming = method.startswith("Stream") or method.endswith("Stream")
    framed = grpc.messages(req.body)
    if framed.payloads and not framed.compressed[0]:
        model = _leading_string(framed.payloads[0])
        if model:
            info.model = model.rsplit("models/", 1)[1] or None
    info.attribution.update(grpc_service=service, grpc_method=method,
                            grpc_request_messages=str(len(framed.sizes)),
                            grpc_request_bytes=str(sum(framed.sizes)))
    return info


def stream_decoder(info: AiRequestInfo, resp: HttpResponse) -> Optional[StreamDecoder]:
    return None  # no chunk can be told apart from another without the schema


def parse_response(info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
    out = AiResponseInfo(status_code=resp.status, success=200 <= resp.status < 300, streaming=info.streaming,
                         model=info.model, parse_error=NOT_DECODED)
    out.provider_request_id = resp.header("x-request-id") or resp.header("x-goog-request-id")
    framed = grpc.messages(resp.body)
    out.attribution.update(grpc_response_messages=str(len(framed.sizes)),
                           grpc_response_bytes=str(sum(framed.sizes)))
    found = grpc.status(resp)
    if found is not None:
        code, name, message = found
        out.attribution["grpc_status"] = name
        out.stream_finished = True  # the status trailer ends a call
        if code:
            out.success = False
            out.error_type, out.error_code, out.error_message = "grpc_" + name.lower(), str(code), message
    return out
