"""Custom patterns from the configuration: compiled once, and every mistake named clearly."""
from __future__ import annotations

import pytest

from oisp_daemon.redact.custom import compile_custom_patterns
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
