"""Tolerant access to JSON taken from captured bodies.

Bodies come from arbitrary processes and may be truncated (body limit, capture gap) or simply not
the JSON an API documents, so every accessor returns None (or an empty container) for a missing
key or a value of the wrong type instead of raising.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple, Union

Number = Union[int, float]


def load_json(body: bytes) -> Tuple[Any, Optional[str]]:
    """(value, None) for a JSON body, else (None, why it could not be parsed)."""
    if not body or not body.strip():
        return None, "empty body"
    try:
        return json.loads(body), None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"invalid JSON: {str(exc)[:120]}"


def load_json_object(body: bytes) -> Tuple[Dict[str, Any], Optional[str]]:
    """({...}, None) for a JSON object body, else ({}, why not)."""
    value, error = load_json(body)
    if error is None and not isinstance(value, dict):
        return {}, f"expected a JSON object, got {type(value).__name__}"
    return (value if isinstance(value, dict) else {}), error


def as_dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def as_int(value: Any) -> Optional[int]:
    """An integer count; integral floats (12.0) count, booleans do not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_number(value: Any) -> Optional[Number]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def nonempty(text: Optional[str]) -> Optional[str]:
    return text if text else None


_STRING_FIELD = '"{}"\\s*:\\s*"((?:[^"\\\\]|\\\\.){{0,200}})"'


def salvage_string(body: bytes, key: str) -> Optional[str]:
    """A top-level-looking `"key": "value"` from a body that is not valid JSON (cut by a body limit
    or a capture gap), so that e.g. the model of a huge request is still known."""
    match = re.search(_STRING_FIELD.format(re.escape(key)).encode(), body[:65536])
    if not match:
        return None
    try:
        return json.loads(b'"' + match.group(1) + b'"')
    except ValueError:
        return None


def salvage_true(body: bytes, key: str) -> bool:
    """Whether a body that is not valid JSON carries `"key": true`."""
    return re.search(b'"' + re.escape(key.encode()) + rb'"\s*:\s*true\b', body[:65536]) is not None
