"""Scanner: priority settles overlaps, markers replace findings, counts are per detector."""
from __future__ import annotations

import re

from oisp_daemon.redact.detectors import DETECTORS, Detector
from oisp_daemon.redact.scanner import Scanner


def make(name: str, pattern: str) -> Detector:
    return Detector(name, re.compile(pattern), secret=False)


def test_earlier_detector_wins_an_overlap_whatever_the_position():
    scanner = Scanner([make("inner", r"cd"), make("outer", r"abcdef")])
    assert [(f.detector.name, f.start, f.end) for f in scanner.find("xxabcdefxx")] == [("inner", 4, 6)]


def test_non_overlapping_findings_of_all_detectors_are_kept_in_order():
    scanner = Scanner([make("b", r"b+"), make("a", r"a+")])
    found = scanner.find("aa bb aa bb")
    assert [(f.detector.name, f.start) for f in found] == [("a", 0), ("b", 3), ("a", 6), ("b", 9)]


def test_redact_replaces_with_markers_and_counts():
    scanner = Scanner([make("digits", r"\d+"), Detector("word", re.compile("secret"), replacement="***")])
    text, counts = scanner.redact("a 12 secret 345 b")
    assert text == "a [REDACTED:digits] *** [REDACTED:digits] b"
    assert counts == {"digits": 2, "word": 1}


def test_text_without_findings_is_returned_as_is():
    scanner = Scanner(DETECTORS)
    text = "nothing to see here"
    assert scanner.redact(text) == (text, {})
    assert scanner.count(text) == {}


def test_hints_skip_text_that_cannot_match():
    calls = []

    class Spy:
        def finditer(self, text):
            calls.append(text)
            return iter(())

    detector = Detector("spy", Spy(), hints=("needle",))  # type: ignore[arg-type]
    list(detector.spans("haystack"))
    list(detector.spans("a needle"))
    assert calls == ["a needle"]
