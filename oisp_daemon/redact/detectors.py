"""Built-in secret and PII detectors: one per kind, each a compiled regex plus an optional validator.

A detector's `name` is stable: it appears in redaction markers (`[REDACTED:<name>]`) and in the
findings counts that leave the sensor, so renaming one is a format change.

Every regex is written to run in linear time on multi-megabyte strings (Python's `re` backtracks):
it begins with a negative look-behind on its own character class, so it is only tried at the start
of a run and never at each position inside it, and every repetition is either bounded or followed by
something it cannot consume. No nested unbounded quantifiers. The regexes are compiled once, at import.

`DETECTORS` is ordered by priority: when two findings overlap, the one from the earlier detector
wins (a key inside "Bearer <key>" is reported as the key; a phone number inside a card number is
not reported at all).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple, Union

Validator = Callable[["re.Match[str]"], bool]


def marker_for(name: str) -> str:
    """The text that replaces a finding of detector `name` in safe mode."""
    return "[REDACTED:%s]" % name


@dataclass(frozen=True)
class Detector:
    """One kind of sensitive value.

    `group` names the part of the match that is sensitive (the token after "Bearer ", not the
    word). `hints` are literal substrings at least one of which every match contains: a string
    with none of them is skipped without running the regex. `secret` marks credentials, which
    are also looked for outside content fields (URLs, headers); PII is looked for in content only.
    `replacement` overrides the marker (custom patterns from the configuration may set one).
    """

    name: str
    regex: re.Pattern[str]
    validator: Optional[Validator] = None
    group: Union[int, str] = 0
    hints: Tuple[str, ...] = ()
    secret: bool = True
    replacement: Optional[str] = None

    @property
    def marker(self) -> str:
        return self.replacement if self.replacement is not None else marker_for(self.name)

    def spans(self, text: str) -> Iterator[Tuple[int, int]]:
        """Yield the (start, end) of each validated, non-empty finding, in order."""
        if self.hints and not any(h in text for h in self.hints):
            return
        for m in self.regex.finditer(text):
            start, end = m.span(self.group)
            if start < end and (self.validator is None or self.validator(m)):
                yield start, end


def looks_random(token: str) -> bool:
    """True for machine-generated tokens, false for words and placeholders.

    Generated keys mix digits or cases; "sk-this-is-my-project" and "sk_test_xxxxxxxxxxxx" do not.
    """
    if len(set(token)) < 6:
        return False
    has_digit = any(c.isdigit() for c in token)
    return has_digit or (any(c.isupper() for c in token) and any(c.islower() for c in token))


def _random_tail(prefix_re: re.Pattern[str]) -> Validator:
    """Validator: what follows the detector's literal prefix looks generated."""

    def check(m: "re.Match[str]") -> bool:
        value = m.group(0)
        p = prefix_re.match(value)
        return looks_random(value[p.end() if p else 0 :])

    return check


# --- card numbers -------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) checksum over a string of decimal digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# (lowest prefix, highest prefix, lengths) of the major card networks' IIN ranges.
_IIN_RANGES = (
    ("4", "4", (13, 16, 19)),  # Visa
    ("51", "55", (16,)),  # Mastercard
    ("2221", "2720", (16,)),  # Mastercard 2-series
    ("34", "34", (15,)),  # American Express
    ("37", "37", (15,)),
    ("6011", "6011", (16, 17, 18, 19)),  # Discover
    ("644", "649", (16, 17, 18, 19)),
    ("65", "65", (16, 17, 18, 19)),
    ("300", "305", (14, 15, 16, 17, 18, 19)),  # Diners Club
    ("36", "36", (14, 15, 16, 17, 18, 19)),
    ("38", "39", (14, 15, 16, 17, 18, 19)),
    ("3528", "3589", (16, 17, 18, 19)),  # JCB
    ("62", "62", (16, 17, 18, 19)),  # UnionPay
    ("2200", "2204", (16, 17, 18, 19)),  # Mir
    ("50", "50", (13, 14, 15, 16, 17, 18, 19)),  # Maestro
    ("56", "58", (13, 14, 15, 16, 17, 18, 19)),
    ("67", "67", (13, 14, 15, 16, 17, 18, 19)),
)


def card_iin_known(digits: str) -> bool:
    """The number starts with a major network's IIN and has a length that network issues."""
    for low, high, lengths in _IIN_RANGES:
        if len(digits) in lengths and low <= digits[: len(low)] <= high:
            return True
    return False


def _valid_card(m: "re.Match[str]") -> bool:
    digits = m.group(0).replace(" ", "").replace("-", "")
    return card_iin_known(digits) and luhn_valid(digits)


# --- IBAN ---------------------------------------------------------------------------------------

# IBAN length per country, from the SWIFT IBAN Registry (as tabulated by python-stdnum's iban.dat).
IBAN_LENGTHS: Dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    """Known country, that country's length, and the ISO 7064 mod-97 check equals 1."""
    compact = iban.replace(" ", "")
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# --- JWT ----------------------------------------------------------------------------------------


def jwt_header_valid(segment: str) -> bool:
    """The first segment is base64url of a JSON object carrying "alg", as every JWS/JWT has."""
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and "alg" in header


# --- AWS secret access key ----------------------------------------------------------------------

_AWS_CONTEXT = re.compile(r"(?i:(?<![a-z])aws(?![a-z])|secret.?access)|AKIA|ASIA")
_AWS_WINDOW = 100
_HEX = re.compile(r"[0-9a-fA-F]+")


def _aws_secret_in_context(m: "re.Match[str]") -> bool:
    """A 40-character base64 token is an AWS secret only next to an AWS key id or label.

    Alone it is indistinguishable from other tokens, so the anchor must be within
    `_AWS_WINDOW` characters either side; hex strings (SHA-1 digests, commit ids) never qualify.
    """
    value = m.group(0)
    if _HEX.fullmatch(value) or not (
        any(c.isdigit() for c in value)
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
    ):
        return False
    text, start, end = m.string, m.start(), m.end()
    return bool(
        _AWS_CONTEXT.search(text, max(0, start - _AWS_WINDOW), start)
        or _AWS_CONTEXT.search(text, end, end + _AWS_WINDOW)
    )


# --- phone numbers ------------------------------------------------------------------------------


def _phone_plausible(m: "re.Match[str]") -> bool:
    value = m.group(0)
    digits = sum(c.isdigit() for c in value)
    if value.count("(") != value.count(")"):
        return False
    if value.startswith("+"):
        return 8 <= digits <= 15
    if value.startswith("0"):
        return 9 <= digits <= 12
    return True  # NANP: the 3-3-4 shape is fixed by the regex


# --- the detectors ------------------------------------------------------------------------------

_TOKEN = r"A-Za-z0-9_\-"  # characters of API keys and base64url

OPENAI_KEY = Detector(
    "openai_key",
    re.compile(r"(?<![%s])sk-(?!ant-)(?:proj-|svcacct-|admin-|None-)?[%s]{20,}" % (_TOKEN, _TOKEN)),
    _random_tail(re.compile(r"sk-(?:proj-|svcacct-|admin-|None-)?")),
    hints=("sk-",),
)
ANTHROPIC_KEY = Detector(
    "anthropic_key",
    re.compile(r"(?<![%s])sk-ant-[%s]{20,}" % (_TOKEN, _TOKEN)),
    _random_tail(re.compile(r"sk-ant-(?:[a-z]+\d\d-)?")),
    hints=("sk-ant-",),
)
GOOGLE_API_KEY = Detector(
    "google_api_key",
    re.compile(r"(?<![%s])AIza[%s]{35}(?![%s])" % (_TOKEN, _TOKEN, _TOKEN)),
    hints=("AIza",),
)
AWS_ACCESS_KEY_ID = Detector(
    "aws_access_key_id",
    re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
    hints=("AKIA", "ASIA"),
)
AWS_SECRET_ACCESS_KEY = Detector(
    "aws_secret_access_key",
    re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
    _aws_secret_in_context,
    hints=("AKIA", "ASIA", "aws", "AWS", "Aws", "ecret", "ECRET"),
)
GITHUB_TOKEN = Detector(
    "github_token",
    re.compile(
        r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})"
        r"(?![A-Za-z0-9_])"
    ),
    _random_tail(re.compile(r"gh[pousr]_|github_pat_")),
    hints=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
)
SLACK_TOKEN = Detector(
    "slack_token",
    re.compile(
        r"(?<![A-Za-z0-9_\-])xox[abprs]-[A-Za-z0-9\-]{10,}"
        r"|https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]{8,}"
    ),
    lambda m: any(c.isdigit() for c in m.group(0)),
    hints=("xox", "hooks.slack.com"),
)
STRIPE_KEY = Detector(
    "stripe_key",
    re.compile(r"(?<![A-Za-z0-9_])(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}(?![A-Za-z0-9_])"),
    _random_tail(re.compile(r"[a-z]+_[a-z]+_")),
    hints=("_live_", "_test_"),
)
JWT = Detector(
    "jwt",
    re.compile(r"(?<![%s])(e[wy][%s]{8,})\.[%s]{2,}\.[%s]*" % ((_TOKEN,) * 4)),
    lambda m: jwt_header_valid(m.group(1)),
    hints=(".",),
)
BEARER_TOKEN = Detector(
    "bearer_token",
    re.compile(r"(?<![A-Za-z0-9])(?i:bearer)[ \t]{1,8}(?P<v>[A-Za-z0-9\-._~+/]+=*)"),
    lambda m: len(m.group("v")) >= 16 and looks_random(m.group("v")),
    group="v",
    hints=("earer", "EARER"),
)
PRIVATE_KEY = Detector(
    "private_key",
    # The whole PEM block through its END line, whatever the body holds. A block cut off before
    # its END line (truncated capture) is redacted to the end of its base64 body (with
    # "Proc-Type:"/"DEK-Info:" headers and real or JSON-escaped newlines). Bodies never contain
    # "-----", so both stop at the next one: however many BEGIN lines a text holds, each part of
    # it is scanned a bounded number of times.
    re.compile(
        r"-----BEGIN[ A-Z0-9]{0,40} PRIVATE KEY(?: BLOCK)?-----"
        r"(?:(?:(?!-----)[\s\S]){0,16384}-----END[ A-Z0-9]{0,40} PRIVATE KEY(?: BLOCK)?-----"
        r"|(?:[A-Za-z0-9+/=\s\\:,]|-(?!----)){0,16384})"
    ),
    hints=("PRIVATE KEY",),
)
EMAIL = Detector(
    "email",
    re.compile(
        r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}"
        r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}"
        r"(?![A-Za-z0-9\-])"
    ),
    hints=("@",),
    secret=False,
)
PHONE_NUMBER = Detector(
    "phone_number",
    re.compile(
        # Never after a word character, one of the separators that chain numbers into versions,
        # dates and IP addresses, or a digit group ("... 0132 1234"); never followed by more.
        r"(?<![\w+./\-])(?<!\d[ .\-])(?:"
        # E.164 / international: +CC then 7..14 digits, single separators, (0) allowed.
        r"\+[1-9](?:[ .\-]?\(?\d\)?){7,14}"
        # NANP: (415) 555-0132, 415-555-0132, 415.555.0132, 415 555 0132, 1-800-555-0199.
        r"|(?:1[ .\-])?(?:\(\d{3}\) ?\d{3}[ .\-]\d{4}|\d{3}(?P<s>[ .\-])\d{3}(?P=s)\d{4})"
        # National with trunk prefix 0: 020 7946 0958, 030-1234567, 06 12 34 56 78, 06.12.34.56.78.
        r"|0\d{1,4}(?:[ \-]\d{2,8}){1,4}"
        r"|0\d(?:\.\d\d){4}"
        r")(?![\w]|[ .,/\-]?\(?\d)"
    ),
    _phone_plausible,
    secret=False,
)
CARD_NUMBER = Detector(
    "card_number",
    # 13-19 digits in one run, or the printed groupings 4-4-4-4, 4-6-5 and 4-6-4 with one kind of
    # separator. A 4-4-4-4 number followed by " 123" (a CVV) is taken as the 16 digits.
    re.compile(
        r"(?<!\w)(?<!\d[.,])(?:"
        r"\d{13,19}"
        r"|\d{4}(?P<g>[ \-])\d{4}(?P=g)\d{4}(?P=g)\d{4}"
        r"|\d{4}(?P<a>[ \-])\d{6}(?P=a)\d{4,5}"
        r")(?!\w|[.,]\d)"
    ),
    _valid_card,
    secret=False,
)
IBAN = Detector(
    "iban",
    re.compile(
        r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"
    ),
    lambda m: iban_valid(m.group(0)),
    secret=False,
)

# Priority order: specific credentials first, generic token shapes next, PII last.
DETECTORS: Tuple[Detector, ...] = (
    PRIVATE_KEY,
    ANTHROPIC_KEY,
    OPENAI_KEY,
    STRIPE_KEY,
    GITHUB_TOKEN,
    SLACK_TOKEN,
    GOOGLE_API_KEY,
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    JWT,
    BEARER_TOKEN,
    CARD_NUMBER,
    IBAN,
    EMAIL,
    PHONE_NUMBER,
)

DETECTOR_NAMES: Tuple[str, ...] = tuple(d.name for d in DETECTORS)
