"""gRPC over HTTP/2 through a real Pipeline: a Gemini GenerativeService call is named (service,
method, model, message sizes, grpc-status) although its protobuf bodies are not decoded."""
from __future__ import annotations

from typing import Any, Dict, List

import pytest

from oisp_daemon.decode import grpc
from oisp_daemon.decode.messages import HttpResponse
from tests.support.oisp_schema import assert_valid_event
from tests.unit.test_http2_pipeline import H2Capture
from tests.unit.test_pipeline_streaming import make_pipeline, of_type

SERVICE = "google.ai.generativelanguage.v1beta.GenerativeService"


def framed(*payloads: bytes) -> bytes:
    return b"".join(b"\x00" + len(p).to_bytes(4, "big") + p for p in payloads)


def generate_request(model: str = "models/gemini-1.5-flash") -> bytes:
    contents = b"\x12\x08\x12\x06\x0a\x04ping"  # contents { parts { text: "ping" } }, opaque here
    return framed(b"\x0a" + bytes([len(model)]) + model.encode() + contents)


def grpc_call(tmp_path, method: str, status: str, message: str = "") -> List[Dict[str, Any]]:
    events: List[Dict[str, Any]] = []
    wire = H2Capture(make_pipeline(events, tmp_path))
    sid = wire.client.get_next_available_stream_id()
    wire.client.send_headers(sid, [(":method", "POST"), (":path", "/%s/%s" % (SERVICE, method)), (":scheme", "https"),
                                   (":authority", "generativelanguage.googleapis.com"), ("content-type", "application/grpc"),
                                   ("te", "trailers"), ("x-goog-api-key", "AIzaSyTest0123456789abcdefghijklmnop")])
    wire.client.send_data(sid, generate_request(), end_stream=True)
    wire.flush()
    wire.server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    for piece in (b"\x0a\x05hello", b"\x0a\x06 world"):
        wire.server.send_data(sid, framed(piece))
        wire.flush()
    trailers = [("grpc-status", status)] + ([("grpc-message", message)] if message else [])
    wire.server.send_headers(sid, trailers, end_stream=True)
    wire.flush()
    for event in events:
        assert_valid_event(event)
    return events


def test_a_gemini_grpc_stream_is_named_not_decoded(tmp_path):
    events = grpc_call(tmp_path, "StreamGenerateContent", "0")
    (request,), (response,) = of_type(events, "ai.request"), of_type(events, "ai.response")
    assert request["data"]["api"] == "grpc.StreamGenerateContent" and request["data"]["model"]["id"] == "gemini-1.5-flash"
    assert request["data"]["streaming"] is True and request["data"]["provider"]["name"] == "google"
    assert request["attrs"]["grpc_service"] == SERVICE and request["attrs"]["grpc_method"] == "StreamGenerateContent"
    assert request["attrs"]["grpc_request_messages"] == "1"
    assert response["data"]["success"] is True and response["attrs"]["grpc_status"] == "OK"
    assert response["attrs"]["grpc_response_messages"] == "2" and response["attrs"]["grpc_response_bytes"] == "15"
    for event in (request, response):
        assert event["confidence"]["completeness"] == "partial"
        assert event["attrs"]["parse_error"] == "grpc body not decoded"
    assert not of_type(events, "ai.streaming_chunk")


def test_a_failed_grpc_call_reports_its_status(tmp_path):
    events = grpc_call(tmp_path, "GenerateContent", "7", "API key not valid")
    (response,) = of_type(events, "ai.response")
    assert response["data"]["success"] is False
    assert response["data"]["error"] == {"type": "grpc_permission_denied", "code": "7", "message": "API key not valid"}


@pytest.mark.parametrize("body, sizes, trailing", [
    (framed(b"ab", b""), [2, 0], 0),
    (framed(b"abc")[:-1], [], 7),
    (b"\x07\x00\x00\x00\x01x", [], 6),  # not a flag gRPC knows
])
def test_length_prefixed_messages(body, sizes, trailing):
    found = grpc.messages(body)
    assert found.sizes == sizes and found.trailing == trailing


def test_paths_and_trailers():
    assert grpc.service_method("/%s/GenerateContent" % SERVICE) == (SERVICE, "GenerateContent")
    assert grpc.service_method("/v1beta/models/gemini:generateContent") is None
    trailers = HttpResponse(headers=[("grpc-status", "16")], body=b"", ts_start_ns=0, ts_end_ns=0)
    assert grpc.status(trailers) == (16, "UNAUTHENTICATED", None)
