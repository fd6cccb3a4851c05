"""Validate event dicts against the published OISP v0.1 JSON Schema (shared/oisp-spec).

The whole event is checked against envelope.schema.json, then `data` against the $def of its
event type. ai.schema.json's top-level oneOf cannot be used for that: its four branches are
property bags without required keys, so any object matches several of them and oneOf fails.
Each event-type $def carries the event type as its `title` ("ai.request"), which gives the map.
"""
from __future__ import annotations

import datetime
import functools
import json
import re
from typing import Any, Dict, Tuple

from jsonschema import Draft202012Validator, FormatChecker, RefResolver
from tests.support.paths import SCHEMA_DIR

ENVELOPE_ID = "https://oisp.dev/schema/v0.1/envelope.schema.json"

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_format_checker = FormatChecker()


@_format_checker.checks("date-time", raises=ValueError)
def _is_rfc3339(value: object) -> bool:
    """RFC 3339 date-time (jsonschema needs an optional package for this; we check it here)."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    text = re.sub(r"[Zz]$", "+00:00", value)
    # fromisoformat (3.9/3.10) takes exactly 3 or 6 fraction digits: pad or cut to microseconds.
    text = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], text)
    datetime.datetime.fromisoformat(text.replace("t", "T"))
    return True


@functools.lru_cache(maxsize=1)
def _schemas() -> Tuple[Dict[str, Any], Dict[str, str]]:
    """($id -> schema of every file, event type -> "$id#/$defs/<name>")."""
    store: Dict[str, Any] = {}
    refs: Dict[str, str] = {}
    for path in sorted(SCHEMA_DIR.rglob("*.schema.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        store[schema["$id"]] = schema
        for name, definition in schema.get("$defs", {}).items():
            title = definition.get("title")
            if isinstance(title, str) and re.match(r"^[a-z]+\.[a-z_]+$", title):
                refs[title] = f"{schema['$id']}#/$defs/{name}"
    return store, refs


def _validator(schema: Dict[str, Any]) -> Draft202012Validator:
    store, _ = _schemas()
    resolver = RefResolver(base_uri=ENVELOPE_ID, referrer=store[ENVELOPE_ID], store=store)
    return Draft202012Validator(schema, resolver=resolver, format_checker=_format_checker)


def known_event_types() -> Tuple[str, ...]:
    return tuple(sorted(_schemas()[1]))


def event_errors(event: Dict[str, Any]) -> list:
    """Readable problems with an event; empty when it is valid."""
    store, refs = _schemas()
    problems = []
    try:
        json.dumps(event, allow_nan=False)
    except (TypeError, ValueError) as exc:
        problems.append(f"not JSON-serialisable: {exc}")
    for error in _validator(store[ENVELOPE_ID]).iter_errors(event):
        problems.append(f"envelope at /{'/'.join(map(str, error.absolute_path))}: {error.message}")
    event_type = event.get("event_type")
    if event_type not in refs:
        problems.append(f"no schema for event_type {event_type!r}")
    elif "data" in event:
        for error in _validator({"$ref": refs[event_type]}).iter_errors(event["data"]):
            problems.append(f"data ({event_type}) at /{'/'.join(map(str, error.absolute_path))}: {error.message}")
    return problems


def assert_valid_event(event: Dict[str, Any]) -> None:
    """Raise AssertionError listing every schema violation of `event`."""
    problems = event_errors(event)
    if problems:
        summary = json.dumps(event, default=str)[:2000]
        raise AssertionError("invalid OISP event:\n  " + "\n  ".join(problems) + f"\nevent: {summary}")
