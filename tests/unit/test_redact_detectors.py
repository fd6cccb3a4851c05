"""Built-in detectors: each finds its kind exactly (span and name) and leaves look-alikes alone.

Key-shaped test values are assembled at run time so that secret scanners do not flag this file.
"""
from __future__ import annotations

import base64
import json

import pytest

from oisp_daemon.redact.detectors import (
    DETECTOR_NAMES,
    DETECTORS,
    card_iin_known,
    iban_valid,
    jwt_header_valid,
    looks_random,
    luhn_valid,
)
from oisp_daemon.redact.scanner import Scanner

RANDOM = "Xq7Lm2Pz9Rt4Vb8Nc1Kd6Hf3Jg5Ws0Ea"  # 34 characters of generated-looking base62
OPENAI_LEGACY = "sk-" + RANDOM + "Zy81QmTr0bGh4u"  # sk- + 48
OPENAI_PROJECT = "sk-proj-" + RANDOM * 4 + "_-AbC"
OPENAI_SVCACCT = "sk-svcacct-" + RANDOM * 2
OPENAI_ADMIN = "sk-admin-" + RANDOM * 2
ANTHROPIC = "sk-ant-api03-" + RANDOM * 3 + "-AA"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SESSION_ID = "ASIA" + "Y34FZKBOKMUTVV7A"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
GITHUB_CLASSIC = "ghp_" + "16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_OAUTH = "gho_" + "16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_FINE = "github_pat_" + "11ABCDEFG0" + RANDOM[:12] + "_" + RANDOM + RANDOM[:25]
SLACK_BOT = "xoxb-" + "123456789012-1234567890123-" + RANDOM[:24]
SLACK_USER = "xoxp-" + "123456789012-1234567890123-" + RANDOM[:24]
SLACK_HOOK = "https://hooks.slack.com/services/" + "T01ABCDEF/B02GHIJKL/" + RANDOM[:24]
STRIPE_LIVE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_TEST = "sk_test_" + "4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_RESTRICTED = "rk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_PUBLISHABLE = "pk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"


def b64url(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


JWT = "%s.%s.%s" % (
    b64url({"alg": "HS256", "typ": "JWT"}),
    b64url({"sub": "1234567890", "name": "John Doe", "iat": 1516239022}),
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
)
JWT_UNSIGNED = "%s.%s." % (b64url({"alg": "none"}), b64url({"sub": "x"}))
PEM_BODY = "MIIEpAIBAAKCAQEA" + RANDOM * 3 + "\n" + RANDOM * 2 + "==\n"
PEM = "-----BEGIN RSA PRIVATE KEY-----\n" + PEM_BODY + "-----END RSA PRIVATE KEY-----"
PEM_PKCS8 = "-----BEGIN PRIVATE KEY-----\n" + PEM_BODY + "-----END PRIVATE KEY-----"
PEM_OPENSSH = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + PEM_BODY + "-----END OPENSSH PRIVATE KEY-----"
# As found inside a JSON string: newlines escaped.
PEM_ESCAPED = PEM.replace("\n", "\\n")

SCANNER = Scanner(DETECTORS)


def findings(text: str):
    return [(f.detector.name, text[f.start : f.end]) for f in SCANNER.find(text)]


POSITIVE = [
    ("openai_key", "key=%s;", OPENAI_LEGACY),
    ("openai_key", "OPENAI_API_KEY=%s", OPENAI_PROJECT),
    ("openai_key", '"%s"', OPENAI_SVCACCT),
    ("openai_key", "admin: %s", OPENAI_ADMIN),
    ("anthropic_key", "x-api-key: %s", ANTHROPIC),
    ("google_api_key", "https://generativelanguage.googleapis.com/v1beta/models?key=%s&x=1", GOOGLE),
    ("aws_access_key_id", "aws_access_key_id = %s", AWS_ID),
    ("aws_access_key_id", '{"AccessKeyId": "%s"}', AWS_SESSION_ID),
    ("aws_secret_access_key", "aws_secret_access_key = %s\n", AWS_SECRET),
    ("aws_secret_access_key", '{"SecretAccessKey": "%s"}', AWS_SECRET),
    ("github_token", "token %s", GITHUB_CLASSIC),
    ("github_token", "GH=%s", GITHUB_OAUTH),
    ("github_token", "%s", GITHUB_FINE),
    ("slack_token", "SLACK_BOT_TOKEN=%s", SLACK_BOT),
    ("slack_token", "%s is mine", SLACK_USER),
    ("slack_token", "post to %s now", SLACK_HOOK),
    ("stripe_key", "stripe.api_key = '%s'", STRIPE_LIVE),
    ("stripe_key", "%s", STRIPE_TEST),
    ("stripe_key", "%s", STRIPE_RESTRICTED),
    ("stripe_key", "%s", STRIPE_PUBLISHABLE),
    ("bearer_token", "Authorization: Bearer %s\r\n", "ya29.A0ARrdaM-9xk3Pq_7Lm2Pz9Rt4Vb8"),
    ("bearer_token", "authorization: bearer %s", "abcDEF123ghiJKL456mno"),
    ("jwt", "token=%s&next=1", JWT),
    ("jwt", "%s", JWT_UNSIGNED),
    ("private_key", "key:\n%s\nthanks", PEM),
    ("private_key", "%s", PEM_PKCS8),
    ("private_key", "%s", PEM_OPENSSH),
    ("private_key", '{"key": "%s"}', PEM_ESCAPED),
    ("email", "write to %s today", "alice.smith+ai@example.co.uk"),
    ("email", "<%s>", "bob@mail.example.com"),
    ("phone_number", "call %s now", "+1 415-555-0132"),
    ("phone_number", "tel %s", "+14155550132"),
    ("phone_number", "office %s.", "+44 20 7946 0958"),
    ("phone_number", "%s", "+49 (0)30 1234567"),
    ("phone_number", "call %s", "(415) 555-0132"),
    ("phone_number", "call %s", "415.555.0132"),
    ("phone_number", "call %s", "415 555 0132"),
    ("phone_number", "call %s", "1-800-555-0199"),
    ("phone_number", "London %s", "020 7946 0958"),
    ("phone_number", "portable %s", "06 12 34 56 78"),
    ("phone_number", "portable %s", "06.12.34.56.78"),
    ("card_number", "card %s exp 12/26", "4111 1111 1111 1111"),
    ("card_number", "card %s", "4111-1111-1111-1111"),
    ("card_number", "card:%s.", "4111111111111111"),
    ("card_number", "mc %s", "5555555555554444"),
    ("card_number", "amex %s", "3782 822463 10005"),
    ("card_number", "discover %s", "6011111111111117"),
    ("card_number", "with cvv %s 123", "4111 1111 1111 1111"),
    ("iban", "IBAN: %s.", "DE89 3704 0044 0532 0130 00"),
    ("iban", "%s", "DE89370400440532013000"),
    ("iban", "pay to %s please", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "%s", "FR14 2004 1010 0505 0001 3M02 606"),
]


@pytest.mark.parametrize("name,template,value", POSITIVE)
def test_detector_finds_exactly_the_value(name, template, value):
    assert findings(template % value) == [(name, value)]


def test_bearer_finding_is_the_token_not_the_scheme():
    text = "Authorization: Bearer abcDEF123ghiJKL456mno"
    assert findings(text) == [("bearer_token", "abcDEF123ghiJKL456mno")]


NEGATIVE = [
    # API key look-alikes
    "sk-",
    "use sk- keys",
    "pip install sk-learn",
    "sk-1234",
    "sk-this-is-not-a-real-key-at-all-really",
    "the risk-assessment-framework-document-v2",
    "sk_test_xxxxxxxxxxxxxxxxxxxxxxxx",
    "AIza" + "tooShort123",
    "AKIA" + "IOSFODNN7EXAMPL",  # 15 characters after the prefix
    "akia" + "iosfodnn7example",
    "ghp_" + "short123",
    "xoxb-",
    "xoxb-abcdefghijkl",  # no digits: not a Slack token
    "https://hooks.slack.com/",
    # AWS secret shape without AWS context, and a SHA-1 next to AWS context
    "commit token " + AWS_SECRET + " merged",
    "aws sha1 0123456789abcdef0123456789abcdef01234567",
    # Bearer in prose and placeholders
    "send a Bearer token in the Authorization header",
    "Authorization: Bearer <token>",
    "Authorization: Bearer YOUR_API_KEY",
    # JWT look-alikes: dotted words, a header without "alg"
    "com.example.application.module",
    "%s.%s.%s" % (b64url({"typ": "JWT"}), b64url({"sub": "x"}), "c2lnbmF0dXJl"),
    # Keys that are not private
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END CERTIFICATE-----",
    # Emails that are not
    "follow @handle",
    "npm i pkg@1.2.3",
    "user@localhost",
    "@app.route('/x')",
    # Phone look-alikes: plain long numbers, dates, versions, IPs, times, math
    "order 4155550132",
    "2024-01-15",
    "15.01.2024",
    "01-02-2024",
    "2024/01/15",
    "1.2.3",
    "v10.15.7",
    "10.0.19041.1234",
    "1.2.3-alpha.4+build.5",
    "192.168.1.100",
    "fe80::1ff:fe23:4567:890a",
    "3+4",
    "+05:30",
    "12:30:45",
    "2025-12-22T14:30:16.345678Z",
    "+1 415 555 0132 1234 5678",  # too many digits for any phone
    "ISBN 978-3-16-148410-0",
    "37.7749, -122.4194",
    "$1,234,567.89",
    # Card look-alikes: Luhn-invalid, unknown IIN, inside a word or decimal, timestamps
    "card 4111 1111 1111 1112",
    "card 4111111111111112",
    "number 1234567890123452",  # Luhn-valid, no network issues 1xxx
    "hash a4111111111111111b",
    "pi 3.4111111111111111",
    "ts 1703254216345678000",
    # IBAN look-alikes: bad check digits, wrong length, unknown country
    "DE88 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 33",
    "DE89 3704 0044 0532 0130",
    "ZZ89 3704 0044 0532 0130 00",
    # Structural identifiers
    "550e8400-e29b-41d4-a716-446655440000",
    "01JFWK8X4J5K6L7M8N9O0P1Q2R",
    "chatcmpl-abc123xyz789",
    "claude-3-5-sonnet-20241022",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
]


@pytest.mark.parametrize("text", NEGATIVE)
def test_look_alike_is_not_redacted(text):
    assert findings(text) == []


def test_every_detector_has_positive_and_negative_cases():
    assert {name for name, _, _ in POSITIVE} == set(DETECTOR_NAMES)


def test_detector_names_are_unique_and_stable():
    assert DETECTOR_NAMES == (
        "private_key", "anthropic_key", "openai_key", "stripe_key", "github_token", "slack_token",
        "google_api_key", "aws_access_key_id", "aws_secret_access_key", "jwt", "bearer_token",
        "card_number", "iban", "email", "phone_number",
    )  # fmt: skip


def test_truncated_private_key_is_redacted_to_end_of_body():
    text = '{"k": "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEI' + RANDOM + '"}'
    [(name, value)] = findings(text)
    assert name == "private_key"
    assert value.endswith(RANDOM) and text.endswith(value + '"}')


def test_private_key_block_is_one_finding_whatever_it_contains():
    pem = PEM.replace(RANDOM[:10], "a@example.com " + AWS_ID, 1)
    assert findings(pem) == [("private_key", pem)]


def test_anthropic_key_is_not_also_an_openai_key():
    assert findings(ANTHROPIC) == [("anthropic_key", ANTHROPIC)]


def test_key_after_bearer_is_reported_as_the_key():
    assert findings("Bearer " + OPENAI_PROJECT) == [("openai_key", OPENAI_PROJECT)]
    assert findings("Bearer " + JWT) == [("jwt", JWT)]


def test_aws_secret_needs_context_within_window():
    far = "aws" + " filler" * 30 + " " + AWS_SECRET
    assert findings(far) == []
    assert findings(AWS_SECRET + " is the AWS secret") == [("aws_secret_access_key", AWS_SECRET)]


@pytest.mark.parametrize("anchor", ["AWS_SECRET_ACCESS_KEY=", "aws: ", "awsSecretAccessKey: ", "export AWS "])
def test_aws_secret_context_is_a_word_or_a_label(anchor):
    assert findings(anchor + AWS_SECRET) == [("aws_secret_access_key", AWS_SECRET)]


def test_aws_inside_a_random_word_is_no_context():
    # Seen in 4 MiB of random text: "...x.AwSxLv0k..." made the next 40-char token a "secret".
    assert findings("AwSxLv0kZeReVo " + AWS_SECRET) == []


def test_card_and_phone_do_not_double_report():
    assert findings("4111 1111 1111 1111") == [("card_number", "4111 1111 1111 1111")]


@pytest.mark.parametrize(
    "digits,valid", [("4111111111111111", True), ("79927398713", True), ("4111111111111112", False)]
)
def test_luhn(digits, valid):
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(
    "digits,known",
    [
        ("4111111111111111", True),
        ("5105105105105100", True),
        ("2221000000000009", True),
        ("378282246310005", True),
        ("3530111333300000", True),
        ("6200000000000005", True),
        ("411111111111111", False),  # Visa does not issue 15 digits
        ("1234567890123452", False),
        ("9111111111111111", False),
    ],
)
def test_card_iin_ranges(digits, known):
    assert card_iin_known(digits) is known


@pytest.mark.parametrize(
    "iban,valid",
    [
        ("DE89 3704 0044 0532 0130 00", True),
        ("NO93 8601 1117 947", True),
        ("DE89 3704 0044 0532 0130 01", False),
        ("NO93 8601 1117 9471", False),  # valid country, wrong length
    ],
)
def test_iban_mod97_and_length(iban, valid):
    assert iban_valid(iban) is valid


def test_jwt_header_validation():
    assert jwt_header_valid(b64url({"alg": "RS256", "kid": "k1"}))
    assert not jwt_header_valid(b64url({"typ": "JWT"}))
    assert not jwt_header_valid(b64url([1, 2]))
    assert not jwt_header_valid("eyJub3QganNvbg")  # base64 of non-JSON
    assert not jwt_header_valid("e")  # impossible base64 length


@pytest.mark.parametrize(
    "token,generated",
    [("Xq7Lm2Pz9Rt4", True), ("AbCdEfGhIjKl", True), ("this-is-a-name", False), ("xxxxxxxxxxxx", False)],
)
def test_looks_random(token, generated):
    assert looks_random(token) is generated
