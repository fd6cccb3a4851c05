"""Custom redaction patterns from the configuration, compiled into detectors.

Config shape: `[{"name": "employee_id", "regex": "EMP-[0-9]{6}", "replacement": "[EMP]"}]`
(`replacement` optional, used literally; the default marker is `[REDACTED:<name>]`). Everything
is checked here, at build time, so a bad pattern is reported by the config layer with its name
instead of failing later on an event.

A custom regex runs on every captured string, which any local user can choose, so its run time
must be bounded: shapes that backtrack exponentially are refused (backtracking.py), and what is
left runs in the `regex` module (Debian python3-regex) with a timeout and without holding the GIL.
A string whose match times out is redacted whole (its content is unknown, so nothing of it is
kept); timeouts are counted per pattern and logged.
"""
from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, Mapping, Tuple

import regex

from .backtracking import backtracking_problem
from .detectors import DETECTOR_NAMES, Detector
from .errors import RedactionConfigError

log = logging.getLogger(__name__)

# Longest time one custom pattern may spend on one string.
MATCH_TIMEOUT_S = 0.05
_SHOWN_PATTERN = 120  # characters of a pattern quoted in an error message
_timeouts: "Counter[str]" = Counter()
_timeouts_lock = threading.Lock()


def pattern_timeouts() -> Dict[str, int]:
    """Matches cut off by the timeout since start, by pattern name (for status)."""
    with _timeouts_lock:
        return dict(_timeouts)


def _shown(pattern: str) -> str:
    if len(pattern) <= _SHOWN_PATTERN:
        return repr(pattern)
    return "%r... (%d characters)" % (pattern[:_SHOWN_PATTERN], len(pattern))


@dataclass(frozen=True)
class BoundedDetector(Detector):
    """A custom pattern, matched by the `regex` module within `timeout` seconds per string."""

    timeout: float = MATCH_TIMEOUT_S

    def spans(self, text: str) -> Iterator[Tuple[int, int]]:
        try:
            found = [m.span() for m in self.regex.finditer(text, timeout=self.timeout, concurrent=True)]
        except TimeoutError:
            with _timeouts_lock:
                _timeouts[self.name] += 1
                count = _timeouts[self.name]
            if count & (count - 1) == 0:  # 1st, 2nd, 4th, 8th... time: logged, not flooded
                log.warning(
                    "custom redaction pattern %r gave up after %.0f ms on a %d-character string "
                    "(%d times so far); the string was redacted whole. Simplify the pattern.",
                    self.name, self.timeout * 1000, len(text), count,
                )
            yield 0, len(text)
            return
        for start, end in found:
            if start < end:
                yield start, end

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_KEYS = frozenset({"name", "regex", "replacement"})
# Names the engine uses for its own markers and findings.
RESERVED_NAMES = frozenset(DETECTOR_NAMES) | {"named_secret"}


def compile_custom_patterns(patterns: Iterable[Mapping[str, Any]]) -> Tuple[Detector, ...]:
    """Validate and compile the configured patterns, in order; raise RedactionConfigError."""
    detectors = []
    seen = set()
    for index, spec in enumerate(patterns):
        label = "custom redaction pattern #%d" % (index + 1)
        if not isinstance(spec, Mapping):
            raise RedactionConfigError("%s: expected a mapping with name and regex" % label)
        name = spec.get("name")
        if isinstance(name, str):
            label = "custom redaction pattern %r" % name
        unknown = sorted(set(spec) - _KEYS)
        if unknown:
            raise RedactionConfigError("%s: unknown key(s) %s" % (label, ", ".join(map(str, unknown))))
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RedactionConfigError(
                "%s: name must be 1-64 characters of letters, digits, '_', '.', '-'" % label
            )
        if name in RESERVED_NAMES:
            raise RedactionConfigError("%s: name is taken by a built-in detector" % label)
        if name in seen:
            raise RedactionConfigError("%s: name is used twice" % label)
        seen.add(name)
        pattern = spec.get("regex")
        if not isinstance(pattern, str) or not pattern:
            raise RedactionConfigError("%s: regex must be a non-empty string" % label)
        try:
            compiled = re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            raise RedactionConfigError("%s: invalid regex %s: %s" % (label, _shown(pattern), exc)) from None
        if compiled.match(""):
            raise RedactionConfigError("%s: regex %s matches the empty string" % (label, _shown(pattern)))
        problem = backtracking_problem(pattern)
        if problem:
            raise RedactionConfigError(
                "%s: regex %s can take exponential time: %s; rewrite it without that shape"
                % (label, _shown(pattern), problem)
            )
        replacement = spec.get("replacement")
        if replacement is not None and not isinstance(replacement, str):
            raise RedactionConfigError("%s: replacement must be a string" % label)
        try:
            bounded = regex.compile(pattern, regex.V0)
        except (regex.error, RecursionError, OverflowError) as exc:
            raise RedactionConfigError("%s: invalid regex %s: %s" % (label, _shown(pattern), exc)) from None
        detectors.append(BoundedDetector(name, bounded, secret=False, replacement=replacement))
    return tuple(detectors)
