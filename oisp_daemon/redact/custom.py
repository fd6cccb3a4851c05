"""Custom redaction patterns from the configuration, compiled into detectors.

Config shape: `[{"name": "employee_id", "regex": "EMP-[0-9]{6}", "replacement": "[EMP]"}]`
(`replacement` optional, used literally; the default marker is `[REDACTED:<name>]`). Everything
is checked here, at build time, so a bad pattern is reported by the config layer with its name
instead of failing later on an event. The operator owns the regex's run time: unlike the built-in
detectors it cannot be checked for backtracking.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Tuple

from .detectors import DETECTOR_NAMES, Detector
from .errors import RedactionConfigError

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
        regex = spec.get("regex")
        if not isinstance(regex, str) or not regex:
            raise RedactionConfigError("%s: regex must be a non-empty string" % label)
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise RedactionConfigError("%s: invalid regex %r: %s" % (label, regex, exc)) from None
        if compiled.match(""):
            raise RedactionConfigError("%s: regex %r matches the empty string" % (label, regex))
        replacement = spec.get("replacement")
        if replacement is not None and not isinstance(replacement, str):
            raise RedactionConfigError("%s: replacement must be a string" % label)
        detectors.append(Detector(name, compiled, secret=False, replacement=replacement))
    return tuple(detectors)
