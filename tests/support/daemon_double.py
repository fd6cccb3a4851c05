"""A stand-in for the running daemon behind the real Operations, for the control transport tests.

Operations (oisp_daemon/control/operations.py) needs a `Daemon`: sessions, the tail hub, the
redaction mode, binary paths, reload and status. This double has the real SessionManager (session
files go under a temporary state directory) and the real SubscriberHub, and keeps the rest in
memory; only capture is missing. The socket server and oisp-ctl thus run against the daemon's own
authorization, validation and error messages.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from oisp_daemon import __version__
from oisp_daemon.control.authz import Authorizer
from oisp_daemon.control.operations import Operations
from oisp_daemon.export.tail import SubscriberHub
from oisp_daemon.sessions.manager import SessionManager


class DaemonDouble:
    """What Operations needs from the daemon, without capture."""

    def __init__(self, state_dir: str, max_buffer: int = 1000) -> None:
        self.sessions = SessionManager(state_dir)
        self.hub = SubscriberHub(replay_size=50)
        self.mode = "safe"
        self.paths: List[str] = []
        self.reloads = 0
        self.reload_error: Optional[str] = None
        self.reload_fails = False  # reload raises: an operations bug the transports must survive
        self.events = 0
        self.max_buffer = max_buffer
        self._started = time.monotonic()

    def global_redaction(self) -> str:
        return self.mode

    def set_global_redaction(self, mode: str) -> None:
        self.mode = mode

    def custom_pattern_count(self) -> int:
        return 0

    def binary_paths(self) -> List[str]:
        return list(self.paths)

    def add_binary_path(self, path: str) -> List[str]:
        if path not in self.paths:
            self.paths.append(path)
        return list(self.paths)

    def remove_binary_path(self, path: str) -> List[str]:
        self.paths.remove(path)
        return list(self.paths)

    def reload(self) -> Optional[str]:
        if self.reload_fails:
            raise RuntimeError("stand-in reload bug")
        self.reloads += 1
        return self.reload_error

    def status(self) -> Dict[str, Any]:
        return {"version": __version__, "uptime_s": round(time.monotonic() - self._started, 1),
                "probes": [{"path": "/usr/lib/x86_64-linux-gnu/libssl.so.3", "origin": "ldconfig",
                            "symbols": ["SSL_read", "SSL_write"]}],
                "redaction": self.mode, "counters": self.counters(),
                "binary_paths": self.binary_paths()}

    def counters(self) -> Dict[str, int]:
        return {"events": self.events, "ai_requests": 0, "sessions": len(self.sessions.list()),
                "tail_subscribers": self.hub.count()}

    def tail_max_buffer(self) -> int:
        return self.max_buffer

    def close(self) -> None:
        self.sessions.close()


def make_operations(daemon: DaemonDouble, operations_class: type = Operations) -> Operations:
    """The real Operations (or a subclass a test overrides) over `daemon`, with default groups."""
    return operations_class(daemon, Authorizer())
