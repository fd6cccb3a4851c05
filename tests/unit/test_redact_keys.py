"""API key fingerprint: a public type prefix of at most 8 characters and a short hash."""
from __future__ import annotations

import hashlib

import pytest

from oisp_daemon.redact.keys import key_fingerprint

TAIL = "Xq7Lm2Pz9Rt4Vb8Nc1Kd6Hf3Jg5Ws0Ea"


def sha16(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    "key,prefix",
    [
        ("sk-proj-" + TAIL, "sk-proj-"),
        ("sk-ant-api03-" + TAIL, "sk-ant-a"),
        ("sk-svcacct-" + TAIL, "sk-svcac"),
        ("sk-" + TAIL, "sk-"),
        ("AIza" + TAIL, "AIza"),
        ("AKIA" + "IOSFODNN7EXAMPLE", "AKIA"),
        ("ghp_" + TAIL, "ghp_"),
        ("github_pat_" + TAIL, "github_p"),
        ("sk_live_" + TAIL, "sk_live_"),
        ("xoxb-" + TAIL, "xoxb-"),
        ("gsk_" + TAIL, "gsk_"),
    ],
)
def test_known_key_types_reveal_only_their_type_prefix(key, prefix):
    assert key_fingerprint(key) == (prefix, sha16(key))


def test_unknown_format_reveals_at_most_four_characters():
    key = "f3a9c2e1" + TAIL
    assert key_fingerprint(key) == ("f3a9", sha16(key))


@pytest.mark.parametrize("key,prefix", [("abcdefgh", "ab"), ("abc", ""), ("", "")])
def test_short_keys_reveal_at_most_a_quarter(key, prefix):
    assert key_fingerprint(key)[0] == prefix


def test_a_bare_type_prefix_is_not_revealed_as_public():
    # "sk-proj-" followed by too little to be a key: treated as unknown, not echoed whole.
    assert key_fingerprint("sk-proj-abc")[0] == "sk"


def test_bearer_scheme_and_whitespace_are_not_part_of_the_key():
    key = "sk-proj-" + TAIL
    assert key_fingerprint("Bearer " + key + "\n") == key_fingerprint(key)


def test_prefix_fits_the_schema_and_hash_is_stable():
    prefix, digest = key_fingerprint("sk-ant-admin01-" + TAIL)
    assert len(prefix) <= 8
    assert digest == key_fingerprint("sk-ant-admin01-" + TAIL)[1]
    assert digest != key_fingerprint("sk-ant-admin01-" + TAIL[::-1])[1]
