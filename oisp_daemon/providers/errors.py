"""Provider error objects -> (type, message, code), one rule for every API.

The type follows the fixtures' `error_type` rule so that events name errors the same way whichever
provider produced them: the error object's `type`, else its `status` (Google), else a non-numeric
`code`; for HTTP errors then AWS's x-amzn-ErrorType header, then "http_<status>"; for an error
inside a 200 stream "stream_error" when the object names no type.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

from oisp_daemon.decode.messages import Headers, header_value
from oisp_daemon.providers.fields import as_dict, as_int, as_str


class ErrorInfo(NamedTuple):
    type: Optional[str]
    message: Optional[str]
    code: Optional[str]


def _code_text(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return value or None
    number = as_int(value)
    return str(number) if number is not None else None


def named_error(error: Any) -> ErrorInfo:
    """Type/message/code of an error object; type None when the object names none.

    A string in place of the object (`{"error": "model not found"}`) is taken as the message.
    """
    if isinstance(error, str):
        return ErrorInfo(None, error or None, None)
    error = as_dict(error)
    code = _code_text(error.get("code"))
    kind = as_str(error.get("type")) or as_str(error.get("status"))
    if not kind and code and not code.lstrip("-").isdigit():
        kind = code
    return ErrorInfo(kind or None, as_str(error.get("message")), code)


def http_error(status: int, body: Any, headers: Headers) -> ErrorInfo:
    """Error of an HTTP response with status >= 400 from its JSON body (any shape) and headers."""
    found = named_error(as_dict(body).get("error")) if "error" in as_dict(body) else ErrorInfo(None, None, None)
    kind = found.type
    if not kind:
        amzn = header_value(headers, "x-amzn-ErrorType")
        kind = amzn.split(":", 1)[0] if amzn else None
    return ErrorInfo(kind or f"http_{status}", found.message, found.code)


def stream_error(error: Any) -> ErrorInfo:
    """Error carried by an event of a 2xx stream."""
    found = named_error(error)
    return ErrorInfo(found.type or "stream_error", found.message, found.code)
