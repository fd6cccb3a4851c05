"""Identify an API key without exposing it: its public type prefix and a short hash.

The event builders put these in `auth.key_prefix` / `auth.key_hash`, so operators can tell which
kind of key and which key was used (the same key always hashes the same) while nothing that
helps to use it leaves the sensor.
"""
from __future__ import annotations

import re
from typing import Tuple

from .digest import short_sha256

MAX_PREFIX = 8  # auth.key_prefix maxLength in the OISP schema

# Public type prefixes, longest first: what every key of that kind starts with. Revealing one
# (cut to MAX_PREFIX) says which provider and key type, nothing about the key itself.
_TYPE_PREFIXES = tuple(
    sorted(
        (
            "sk-ant-api03-", "sk-ant-admin01-", "sk-ant-oat01-", "sk-ant-",
            "sk-proj-", "sk-svcacct-", "sk-admin-", "sk-None-", "sk-or-v1-", "sk-",
            "sk_live_", "sk_test_", "rk_live_", "rk_test_", "pk_live_", "pk_test_",
            "github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
            "xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-",
            "AIza", "AKIA", "ASIA", "gsk_", "hf_", "r8_", "xai-", "pplx-", "nvapi-", "csk-",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip
# A prefix is only "public" if the key goes on well past it; what is left must still be a secret.
_MIN_SECRET_TAIL = 16
_UNKNOWN_PREFIX = 4
_SCHEME = re.compile(r"\s*(?i:bearer)\s+")


def key_fingerprint(key: str) -> Tuple[str, str]:
    """(prefix, "sha256:<first 16 hex>") for an API key.

    The prefix is the key's public type prefix, at most 8 characters ("sk-proj-", "sk-ant-a",
    "AIza"); for an unknown format at most its first 4 characters, and fewer for a short key, so
    the prefix never holds more than a quarter of it. Surrounding whitespace and an HTTP
    "Bearer " scheme are not part of the key and are dropped before hashing.
    """
    key = _SCHEME.sub("", key, count=1).strip()
    for prefix in _TYPE_PREFIXES:
        if key.startswith(prefix) and len(key) >= len(prefix) + _MIN_SECRET_TAIL:
            return prefix[:MAX_PREFIX], short_sha256(key)
    return key[: min(_UNKNOWN_PREFIX, len(key) // 4)], short_sha256(key)
