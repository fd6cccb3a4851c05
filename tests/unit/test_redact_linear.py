"""The built-in detectors and command-line rules run in linear time, on adversarial input too.

Each pattern is run on inputs of size n and 8n built from shapes meant to make a backtracking
matcher retry (repeated prefixes, unterminated quotes, runs just short of a match). Linear time
gives a ratio near 8, quadratic near 64. Times are process CPU time, the best of several runs, so
that other load on a shared VM does not count; no absolute threshold is used.
"""
from __future__ import annotations

import re
import time

import pytest

from oisp_daemon.redact.commandline import RULES, named_value_spans
from oisp_daemon.redact.detectors import DETECTORS

SMALL = 1 << 12
FACTOR = 8
# Between linear (8) and quadratic (64), with room for cache effects at the larger size.
MAX_RATIO = 24
# Below this (CPU seconds at 8n) a run is too short to measure and too fast to matter.
NOISE_FLOOR = 0.002

SHAPES = [
    "a", "1", "1 ", "1-", "0 ", "+1", "(1", "4111", "GB00", ".", "-", " ", "'", '"', "\\", "/", ":", "=",
    "a.", "a@", "a@a.", "ey" + "J" * 8 + ".", "sk-", "sk-ant-", "sk-proj-", "AIza", "AKIA", "ghp_",
    "github_pat_", "xoxb-", "sk_live_", "aws ", "A" * 39 + "a1 ", "Bearer ", "bearer\t",
    "-----BEGIN", "-----BEGIN PRIVATE KEY-----", "-----BEGIN PRIVATE KEY-----a",
    # command-line rules
    "a:", "api-key:", "api-key: a;", "Cookie: a=1; ", '"a":', '"token": "', '\\"token\\":', "'a':", "?a=",
    "&api_key=", "--token ", "--token=", "-u a", "-ua", "-b a;", "a=", "TOKEN=", "x://", "x://a:",
    "x://a:b", "/-u", "a://a:a@",
]  # fmt: skip


def cpu_time(run, text: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        run(text)
        best = min(best, time.process_time() - started)
    return best


def detector_run(detector):
    return lambda text: sum(1 for _ in detector.spans(text))


def rule_run(rule):
    return lambda text: named_value_spans(text, (rule,))


PATTERNS = {**{"detector " + d.name: detector_run(d) for d in DETECTORS},
            **{"rule " + r.kind: rule_run(r) for r in RULES}}  # fmt: skip


def slowest_growth(run, shapes=SHAPES, size=SMALL):
    """(ratio, shape, t(8n)) for the shape whose run time grows fastest with size."""
    worst = (0.0, None, 0.0)
    for shape in shapes:
        unit = max(1, size // len(shape))
        small, large = shape * unit, shape * (unit * FACTOR)
        t_large = cpu_time(run, large)
        if t_large < NOISE_FLOOR:
            continue
        ratio = t_large / max(cpu_time(run, small), 1e-6)
        if ratio > worst[0]:
            worst = (ratio, shape, t_large)
    return worst


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_is_linear_on_adversarial_input(name):
    ratio, shape, t_large = slowest_growth(PATTERNS[name])
    if ratio > MAX_RATIO:  # one retry: a burst of load on the VM can spoil one measurement
        ratio, shape, t_large = slowest_growth(PATTERNS[name])
    assert ratio <= MAX_RATIO, "%s grows %.1fx from n to %dn on %r (%.3f s)" % (name, ratio, FACTOR, shape, t_large)


def test_the_measurement_tells_quadratic_from_linear():
    """An e-mail-like regex without the look-behind the detectors use is tried, and fails, at
    every position of a long word: quadratic, and caught."""
    naive = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9]")
    ratio, _, _ = slowest_growth(lambda text: sum(1 for _ in naive.finditer(text)), ["a"], SMALL // 4)
    assert ratio > MAX_RATIO
