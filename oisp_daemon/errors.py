"""The daemon's own refusals, raised below control/ and turned into protocol errors only by
control/operations.py (as TuneD's controller translates the daemon's exceptions).

Modules on the event path (sessions) and the service raise these; they never import the wire
format. Each kind maps to one protocol error code in operations.py.
"""
from __future__ import annotations


class DaemonError(Exception):
    """A request the daemon will not carry out; the message says why and what to do instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DaemonError):
    """The request names something malformed or impossible (a bad name, a missing file)."""


class Conflict(DaemonError):
    """The request clashes with the daemon's state (already running, owned by the config)."""


class NotFound(DaemonError):
    """The request names something the daemon does not have."""


class LimitExceeded(DaemonError):
    """The request would take the caller past one of the daemon's per-caller limits."""
