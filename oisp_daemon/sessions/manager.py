"""Recording sessions: named captures with filters, a redaction mode, a sink and an owner.

Sessions from the config start with the daemon (fleet use) and follow the config on reload;
sessions started at runtime are written to the state directory and come back after a restart.
Events reach sessions from the pipeline thread while the control plane starts and stops them
from its own threads, hence the lock.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ..errors import Conflict, DaemonError, InvalidArgument, NotFound
from .event_filter import EventFilter
from ..export.jsonl import JsonlSink
from ..redact import MODES

log = logging.getLogger(__name__)

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
Redacted = Callable[[str], Dict[str, Any]]  # redaction mode -> the event redacted in that mode


@dataclass
class Session:
    name: str
    owner_uid: int
    filter: EventFilter
    redaction: str
    sink_path: str
    origin: str  # "config" | "runtime"
    created: float = field(default_factory=time.time)
    events: int = 0
    sink_errors: int = 0
    sink: Optional[JsonlSink] = field(default=None, repr=False)

    def spec(self) -> Dict[str, Any]:
        """What persists and what the control plane shows."""
        return {
            "name": self.name,
            "owner_uid": self.owner_uid,
            "filters": self.filter.to_args(),
            "redaction": self.redaction,
            "sink": {"path": self.sink_path},
            "origin": self.origin,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
        }

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.spec(), events=self.events, sink_errors=self.sink_errors)


def validate_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > 64 or not set(name) <= NAME_CHARS or name[0] in ".-":
        raise InvalidArgument(
            f"invalid session name {name!r}: use 1-64 letters, digits, '_', '.', '-' (not starting with '.' or '-')"
        )
    return name


class SessionManager:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self._store = os.path.join(state_dir, "sessions.json")
        self._lock = threading.Lock()
        self._sessions: Dict[str, Session] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, spec: Dict[str, Any], owner_uid: int, origin: str, global_mode: str) -> Session:
        """Start a session from a spec (name, filters, redaction, sink); raises DaemonError."""
        name = validate_name(spec.get("name"))
        try:
            event_filter = EventFilter.from_args(spec.get("filters") or {})
        except ValueError as exc:
            raise InvalidArgument(f"session {name}: {exc}") from exc
        mode = spec.get("redaction") or global_mode
        if mode not in MODES:
            raise InvalidArgument(f"session {name}: unknown redaction mode {mode!r}; use one of {', '.join(MODES)}")
        sink_path = (spec.get("sink") or {}).get("path") or os.path.join(self.state_dir, "sessions", f"{name}.jsonl")
        session = Session(name, owner_uid, event_filter, mode, os.path.abspath(sink_path), origin)
        with self._lock:
            if name in self._sessions:
                raise Conflict(f"session {name} is already running; stop it first or pick another name")
            session.sink = self._open_sink(session)
            self._sessions[name] = session
            self._persist()
        log.info("session %s started (%s, owner uid %d, redaction %s) -> %s", name, origin, owner_uid, mode, session.sink_path)
        return session

    def _open_sink(self, session: Session) -> JsonlSink:
        try:
            sink = JsonlSink(session.sink_path)
        except OSError as exc:
            raise InvalidArgument(f"session {session.name}: cannot open {session.sink_path}: {exc.strerror}") from exc
        # Captured content belongs to the session's owner: readable by them and root only.
        try:
            os.chown(sink.path, session.owner_uid, -1)
            os.chmod(sink.path, 0o600)
        except OSError as exc:
            log.warning("session %s: cannot give %s to uid %d: %s", session.name, sink.path, session.owner_uid, exc)
        return sink

    def stop(self, name: str) -> Session:
        with self._lock:
            session = self._sessions.pop(name, None)
            if session is None:
                raise NotFound(f"no session named {name!r}; see oisp-ctl session list")
            self._persist()
        if session.sink is not None:
            session.sink.close()
        log.info("session %s stopped after %d events", name, session.events)
        return session

    def get(self, name: str) -> Session:
        with self._lock:
            session = self._sessions.get(name)
        if session is None:
            raise NotFound(f"no session named {name!r}; see oisp-ctl session list")
        return session

    def list(self) -> List[Session]:
        with self._lock:
            return list(self._sessions.values())

    def close(self) -> None:
        """Daemon shutdown: close sinks, keep the persisted runtime sessions for the next start."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            if session.sink is not None:
                session.sink.close()

    # -- persistence and config ---------------------------------------------------------------

    def _persist(self) -> None:
        """Write the runtime sessions (config ones come from the config). Caller holds the lock."""
        specs = [s.spec() for s in self._sessions.values() if s.origin == "runtime"]
        os.makedirs(self.state_dir, exist_ok=True)
        tmp = self._store + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"sessions": specs}, fh, indent=1)
        os.replace(tmp, self._store)

    def restore(self, global_mode: str) -> List[Session]:
        """Start the runtime sessions persisted by a previous run."""
        try:
            with open(self._store, encoding="utf-8") as fh:
                specs = json.load(fh).get("sessions", [])
        except FileNotFoundError:
            return []
        except (OSError, ValueError, AttributeError) as exc:
            log.error("cannot read %s (%s); runtime sessions not restored", self._store, exc)
            return []
        restored = []
        for spec in specs:
            try:
                session = self.start(spec, int(spec.get("owner_uid", 0)), "runtime", global_mode)
            except (DaemonError, TypeError, ValueError) as exc:
                log.error("persisted session %r not restored: %s", spec.get("name"), exc)
                continue
            restored.append(session)
        return restored

    def apply_config(self, specs: List[Dict[str, Any]], global_mode: str) -> None:
        """Make the config's sessions run as configured: start new, restart changed, stop removed."""
        wanted = {spec["name"]: spec for spec in specs}
        for session in self.list():
            if session.origin != "config":
                continue
            spec = wanted.get(session.name)
            if spec is None or self._differs(session, spec, global_mode):
                self.stop(session.name)
        running = {s.name for s in self.list()}
        for name, spec in wanted.items():
            if name in running:
                continue
            try:
                self.start(spec, int(spec.get("owner_uid", 0)), "config", global_mode)
            except DaemonError as exc:
                log.error("configured session %s not started: %s", name, exc.message)

    def _differs(self, session: Session, spec: Dict[str, Any], global_mode: str) -> bool:
        sink = (spec.get("sink") or {}).get("path") or os.path.join(self.state_dir, "sessions", f"{session.name}.jsonl")
        return (
            session.filter.to_args() != EventFilter.from_args(spec.get("filters") or {}).to_args()
            or session.redaction != (spec.get("redaction") or global_mode)
            or session.sink_path != os.path.abspath(sink)
            or session.owner_uid != int(spec.get("owner_uid", 0))
        )

    # -- events -------------------------------------------------------------------------------

    def dispatch(self, event: Dict[str, Any], redacted: Redacted) -> List[str]:
        """Write the event to every session whose filter takes it; returns their names."""
        matched = []
        for session in self.list():
            if not session.filter.matches(event):
                continue
            matched.append(session.name)
            try:
                if session.sink is not None:
                    session.sink.write(redacted(session.redaction))
                session.events += 1
            except (OSError, ValueError) as exc:
                session.sink_errors += 1
                if session.sink_errors == 1:
                    log.error("session %s: writing %s failed: %s", session.name, session.sink_path, exc)
        return matched
