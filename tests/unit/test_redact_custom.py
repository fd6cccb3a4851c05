"""Custom patterns from the configuration: compiled once, and every mistake named clearly."""
from __future__ import annotations

import time

import pytest
import regex

from oisp_daemon.redact.custom import BoundedDetector, compile_custom_patterns, pattern_timeouts
from oisp_daemon.redact.scanner import Scanner
from oisp_daemon.redact.errors import RedactionConfigError


def test_patterns_compile_in_order_with_default_or_given_marker():
    a, b = compile_custom_patterns(
        [{"name": "employee_id", "regex": r"EMP-\d{6}"}, {"name": "ticket", "regex": r"T#\d+", "replacement": "[T]"}]
    )
    assert (a.name, a.marker, a.secret) == ("employee_id", "[REDACTED:employee_id]", False)
    assert (b.name, b.marker) == ("ticket", "[T]")
    assert list(a.spans("id EMP-123456 ok")) == [(3, 13)]


def test_invalid_regex_error_names_the_pattern():
    with pytest.raises(RedactionConfigError, match=r"'broken'.*invalid regex '\(unclosed'"):
        compile_custom_patterns([{"name": "ok", "regex": "x"}, {"name": "broken", "regex": "(unclosed"}])


@pytest.mark.parametrize(
    "spec,message",
    [
        ("not a mapping", r"#1: expected a mapping"),
        ({"regex": "x"}, r"#1: name must be"),
        ({"name": "has space", "regex": "x"}, r"'has space': name must be"),
        ({"name": "email", "regex": "x"}, r"'email': name is taken by a built-in detector"),
        ({"name": "named_secret", "regex": "x"}, r"taken by a built-in"),
        ({"name": "p", "regex": ""}, r"'p': regex must be a non-empty string"),
        ({"name": "p", "regex": 5}, r"'p': regex must be a non-empty string"),
        ({"name": "p", "regex": "a*"}, r"'p': regex 'a\*' matches the empty string"),
        ({"name": "p", "regex": "x", "replacement": 1}, r"'p': replacement must be a string"),
        ({"name": "p", "regex": "x", "flags": "i"}, r"'p': unknown key\(s\) flags"),
    ],
)
def test_bad_pattern_is_rejected_with_a_reason(spec, message):
    with pytest.raises(RedactionConfigError, match=message):
        compile_custom_patterns([spec])


def test_duplicate_names_are_rejected():
    with pytest.raises(RedactionConfigError, match=r"'dup': name is used twice"):
        compile_custom_patterns([{"name": "dup", "regex": "a"}, {"name": "dup", "regex": "b"}])


def test_no_patterns_is_fine():
    assert compile_custom_patterns(()) == ()


# --- run time -----------------------------------------------------------------------------------

CATASTROPHIC = [r"(a+)+$", r"(\w+\s?)+$", r"(a{1,9}){1,99}", r"(a|ab)*c", r"(x|)+y", r"^(a|a?)+b",
                r"(?:(?:ab)+c?)+", r"(.*a){20}", r"((a+))+!", r"(?=x)(a*b?)*z"]  # fmt: skip
BENIGN = [r"EMP-\d{6}", r"(\d{3}-){2}\d{4}", r"(?:foo|bar)+", r".*foo.*", r"(?:\d{3}[- ]){3}",
          r"(?i)acct-(?:[a-z0-9]{4}-){3}[a-z0-9]{4}", r"(?:ab|cd)*x", r"(\w|\d)+", r"a++b"]  # fmt: skip


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_exponential_shapes_are_refused_naming_the_pattern(pattern):
    with pytest.raises(RedactionConfigError, match=r"'slow': regex .* can take exponential time"):
        compile_custom_patterns([{"name": "slow", "regex": pattern}])


@pytest.mark.parametrize("pattern", BENIGN)
def test_ordinary_patterns_are_accepted(pattern):
    (detector,) = compile_custom_patterns([{"name": "ok", "regex": pattern}])
    assert detector.name == "ok"


def test_a_long_pattern_is_quoted_short_in_the_error():
    pattern = "(" + "a" * 5000 + "+)+"
    with pytest.raises(RedactionConfigError) as info:
        compile_custom_patterns([{"name": "long", "regex": pattern}])
    assert len(str(info.value)) < 500 and "(%d characters)" % len(pattern) in str(info.value)


def test_a_pattern_that_slips_through_costs_bounded_time_and_is_counted():
    """(a|aa)+$ passes nothing of the static check on purpose here: it is built directly, as a
    shape the check does not know would be. The match gives up, the string is redacted whole."""
    detector = BoundedDetector("slips", regex.compile(r"(a|aa)+$", regex.V0), secret=False, timeout=0.05)
    before = pattern_timeouts().get("slips", 0)
    started = time.monotonic()
    text = "a" * 60 + "!"
    assert list(detector.spans(text)) == [(0, len(text))]
    # Unbounded, this match takes longer than the age of the universe; bounded, one timeout.
    assert time.monotonic() - started < 5
    assert pattern_timeouts()["slips"] == before + 1


def test_a_timed_out_string_leaves_nothing_in_the_event():
    detector = BoundedDetector("slips", regex.compile(r"(a|aa)+$", regex.V0), secret=False, timeout=0.05)
    scanner = Scanner([detector])
    assert scanner.redact("a" * 60 + "! secret EMP-1")[0] == "[REDACTED:slips]"
