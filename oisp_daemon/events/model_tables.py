"""Per-model facts from the bundle-derived tables (prices, families), found the same way for both.

A model is looked up under its provider's namespace (with the bundle's aliases) by each candidate
id in turn: the response model, then the request model, then the family's base model (a Bedrock
id without its cross-region prefix); each also without a dated snapshot suffix.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional

from oisp_daemon.data import load_table

# Snapshot suffixes that name a dated version of a base model: gpt-4o-mini-2024-07-18,
# claude-3-5-sonnet-20240620, gpt-4-0613.
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


def lookup(table: str, section: str, provider: str, *candidates: Optional[str]) -> Optional[Any]:
    """The entry of the first candidate model found in `table`'s `section` for `provider`."""
    data = load_table(table)
    entries: Dict[str, Any] = data[section].get(data["aliases"].get(provider, provider), {})
    for candidate in candidates:
        if not candidate:
            continue
        for key in (candidate, _DATE_SUFFIX.sub("", candidate)):
            if key in entries:
                return entries[key]
    return None


def model_family(provider: str, *candidates: Optional[str]) -> Optional[str]:
    """The bundle's family of a model ("gpt-4o", "claude-3.5", "gemini-2.5"), or None."""
    family = lookup("model_families", "families", provider, *candidates)
    return family if isinstance(family, str) else None
