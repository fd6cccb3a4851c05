"""The flow every API parser shares, so that each provider module holds only its API's fields.

Requests: route a POST to an API, record endpoint and credentials, load the JSON body (or, when
it is not JSON, salvage model and stream flag from the raw text). Responses: status, stream or
whole body, provider request id, and the provider's error body for 4xx/5xx.
"""
from __future__ import annotations

from typing import Dict, Optional, Pattern, Sequence, Tuple

from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.providers.credentials import fill_credentials
from oisp_daemon.providers.endpoint import endpoint_url, request_path
from oisp_daemon.providers.errors import ErrorInfo, http_error
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo
from oisp_daemon.providers.family import Route
from oisp_daemon.providers.fields import as_str, load_json_object, salvage_string, salvage_true
from oisp_daemon.providers.stream import is_event_stream

JsonObject = Dict[str, object]


def route_post(pattern: Pattern[str], apis: Dict[str, Route], method: str, target: str) -> Optional[Route]:
    """The API a POST to `target` calls; None for other methods and unknown paths."""
    if method.upper() != "POST":
        return None
    match = pattern.match(request_path(target))
    return apis[match.group(1)] if match else None


def start_request(provider: str, req: HttpRequest, host: str, route: Route) -> Tuple[AiRequestInfo, Optional[JsonObject]]:
    """Request info with what every API has; the JSON body for the API's own fields, or None
    when the body is not a JSON object (parse_error set, model and stream salvaged)."""
    api, request_type = route
    info = AiRequestInfo(provider=provider, api=api, request_type=request_type, endpoint=endpoint_url(host, req.target))
    fill_credentials(info, req.headers)
    body, error = load_json_object(req.body)
    if error:
        info.parse_error = error
        info.model = salvage_string(req.body, "model")
        info.streaming = salvage_true(req.body, "stream")
        return info, None
    info.model = as_str(body.get("model"))
    info.streaming = body.get("stream") is True
    return info, body


def set_error(out: AiResponseInfo, error: ErrorInfo) -> None:
    out.success = False
    out.error_type, out.error_message, out.error_code = error


def start_response(
    info: AiRequestInfo, resp: HttpResponse, id_headers: Sequence[str]
) -> Tuple[AiResponseInfo, Optional[JsonObject]]:
    """Response info with status, streaming, request id and HTTP errors filled in, and the JSON
    body of a whole successful response for the API's own fields (None for streams, errors and
    bodies that are not JSON)."""
    out = AiResponseInfo(status_code=resp.status, success=200 <= resp.status < 300)
    out.streaming = is_stream = is_event_stream(resp, info.streaming)
    for name in id_headers:
        out.provider_request_id = out.provider_request_id or resp.header(name)
    if is_stream and resp.status < 400:
        return out, None
    body, error = load_json_object(resp.body)
    if resp.status >= 400:
        set_error(out, http_error(resp.status, body, resp.headers))
        return out, None
    if error:
        out.parse_error = error
        out.model = salvage_string(resp.body, "model")
        return out, None
    return out, body
