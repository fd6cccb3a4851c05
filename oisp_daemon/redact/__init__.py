"""Redaction: every OISP event passes through here before any session, sink or subscriber.

Secrets never leave the sensor in clear. See engine.py for the modes, detectors.py for what is
detected, keys.py for the API key fingerprint used by the event builders.
"""
from __future__ import annotations

from .engine import MODES, Redactor
from .errors import RedactionConfigError
from .keys import key_fingerprint

__all__ = ["MODES", "Redactor", "RedactionConfigError", "key_fingerprint"]
