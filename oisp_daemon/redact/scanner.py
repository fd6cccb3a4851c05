"""Run a priority-ordered set of detectors over one string and replace what they find.

Overlaps are settled by priority, not position: detectors are applied in order and a finding
that overlaps one already accepted is dropped. So a private key block is one finding however many
tokens it contains, and "Bearer sk-..." is reported as the OpenAI key it carries. Each detector's
spans are merged into the accepted list in one linear pass, so the cost stays linear in the number
of findings too.
"""
from __future__ import annotations

from collections import Counter
from typing import List, NamedTuple, Sequence, Tuple

from .detectors import Detector


class Finding(NamedTuple):
    start: int
    end: int
    detector: Detector


class Scanner:
    """Finds and replaces sensitive values with a fixed, ordered set of detectors."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.detectors: Tuple[Detector, ...] = tuple(detectors)

    def find(self, text: str) -> List[Finding]:
        """Non-overlapping findings in `text`, sorted by position."""
        accepted: List[Finding] = []
        for detector in self.detectors:
            added = []
            i = 0
            for start, end in detector.spans(text):
                while i < len(accepted) and accepted[i].end <= start:
                    i += 1
                if i < len(accepted) and accepted[i].start < end:
                    continue
                added.append(Finding(start, end, detector))
            if added:
                accepted = sorted(accepted + added, key=lambda f: f.start)
        return accepted

    def redact(self, text: str) -> Tuple[str, "Counter[str]"]:
        """`text` with each finding replaced by its detector's marker, and counts by detector."""
        findings = self.find(text)
        if not findings:
            return text, Counter()
        parts = []
        pos = 0
        for f in findings:
            parts.append(text[pos : f.start])
            parts.append(f.detector.marker)
            pos = f.end
        parts.append(text[pos:])
        return "".join(parts), Counter(f.detector.name for f in findings)

    def count(self, text: str) -> "Counter[str]":
        """Findings by detector, for modes that drop the text anyway."""
        return Counter(f.detector.name for f in self.find(text))
