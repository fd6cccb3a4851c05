"""Where pipeline events go in the daemon: sessions (each in its own redaction mode) and tail
subscribers (in the global mode).

An event is redacted at most once per mode in use, lazily, so a daemon with every session in
the global mode pays one redaction per event. Nothing leaves here unredacted.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Iterable, List

from ..export.tail import SubscriberHub
from ..redact import Redactor
from .manager import SessionManager


class RedactionPolicy:
    """The global mode and custom patterns, with one Redactor per mode built on demand."""

    def __init__(self, mode: str, custom_patterns: Iterable[Dict[str, Any]]) -> None:
        self._lock = threading.Lock()
        self.custom_patterns: List[Dict[str, Any]] = list(custom_patterns)
        self.mode = Redactor(mode, self.custom_patterns).mode  # validates mode and patterns
        self._redactors: Dict[str, Redactor] = {}

    def redactor(self, mode: str) -> Redactor:
        with self._lock:
            if mode not in self._redactors:
                self._redactors[mode] = Redactor(mode, self.custom_patterns)
            return self._redactors[mode]


class Fanout:
    def __init__(self, sessions: SessionManager, hub: SubscriberHub, policy: RedactionPolicy) -> None:
        self.sessions = sessions
        self.hub = hub
        self.policy = policy
        self.published = 0

    def publish(self, event: Dict[str, Any]) -> None:
        policy = self.policy  # one policy for the whole event, even if a reload swaps it meanwhile
        done: Dict[str, Dict[str, Any]] = {}

        def redacted(mode: str) -> Dict[str, Any]:
            if mode not in done:
                done[mode] = policy.redactor(mode).redact_event(event)
            return done[mode]

        matched = self.sessions.dispatch(event, redacted)
        self.hub.publish(redacted(policy.mode), sessions=matched)
        self.published += 1
