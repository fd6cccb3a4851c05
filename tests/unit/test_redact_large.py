"""Large content (a 4 MiB response) and hostile shapes: redaction finishes and finds what is planted.

No timing assertions: a quadratic or exponential regex would not finish here at all.
"""
from __future__ import annotations

import pytest

from oisp_daemon.redact import Redactor

MIB = 1024 * 1024
OPENAI_KEY = "sk-proj-" + "Xq7Lm2Pz9Rt4Vb8Nc1Kd6Hf3Jg5Ws0Ea" * 2
PROSE = "The model said: version 1.2.3 shipped on 2024-01-15 to 10.0.0.1, see issue 4155550132. "


def response(text: str) -> dict:
    return {
        "event_id": "01JFWK8X5S6T7U8V9W0X1Y2Z3A",
        "event_type": "ai.response",
        "confidence": {"level": "high", "completeness": "full"},
        "data": {"request_id": "r", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]},
    }


def content(event: dict) -> str:
    return event["data"]["choices"][0]["message"]["content"]


@pytest.fixture(scope="module")
def big_text() -> str:
    filler = PROSE * (2 * MIB // len(PROSE))
    return (
        "mail a@example.com first. "
        + filler
        + " key "
        + OPENAI_KEY
        + " card 4111 1111 1111 1111 "
        + filler
        + " last: +44 20 7946 0958"
    )


def test_four_mib_response_is_redacted_everywhere(big_text):
    assert len(big_text) >= 4 * MIB
    out = Redactor("safe").redact_event(response(big_text))
    text = content(out)
    assert OPENAI_KEY not in text and "4111 1111" not in text and "a@example.com" not in text
    assert text.endswith("last: [REDACTED:phone_number]")
    assert {f["type"]: f["count"] for f in out["attrs"]["redaction"]["findings"]} == {
        "openai_key": 1,
        "card_number": 1,
        "email": 1,
        "phone_number": 1,
    }


def test_four_mib_response_in_minimal_mode(big_text):
    inner = content(Redactor("minimal").redact_event(response(big_text)))["$redacted"]
    assert inner["original_length"] == len(big_text)
    assert len(inner["findings"]) == 4


HOSTILE = {
    "one long word": "a" * (4 * MIB),
    "one long number": "1" * (4 * MIB),
    "digit groups": "1234 " * (4 * MIB // 5),
    "base64": "QUJD+/" * (4 * MIB // 6),
    "dotted tokens": ("eyJ" + "x" * 20 + ".") * (4 * MIB // 24),
    "at signs": "a@" * (2 * MIB),
    "key prefixes": "sk-" * (4 * MIB // 3),
    "unterminated pem headers": "-----BEGIN RSA PRIVATE KEY-----" * (4 * MIB // 31),
    "pem header then prose": "-----BEGIN PRIVATE KEY-----\n" + "abc def " * (MIB // 2),
    "plus signs": "+1 " * (4 * MIB // 3),
    "long local parts": ("x" * 70 + "@") * (4 * MIB // 71),
    "bearer words": "Bearer " * (4 * MIB // 7),
    "dashes": "0-" * (2 * MIB),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_text_finishes(name):
    text = HOSTILE[name]
    out = content(Redactor("safe").redact_event(response(text)))
    assert isinstance(out, str) and len(out) > 0
