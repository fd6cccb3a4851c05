"""Recording sessions: named captures with filters, a redaction mode, a sink and an owner.

Sessions from the config start with the daemon (fleet use) and follow the config on reload;
sessions started at runtime are written to the state directory and come back after a restart.
Events reach sessions from the pipeline thread while the control plane starts and stops them
from its own threads, hence the lock.

Rules that keep one user's session from reaching another's data or the daemon's health:
- every session start gets a file of its own (a fresh name, created O_EXCL) unless it names a
  file that already belongs to its owner; a restored session reopens its own file;
- runtime sessions are capped per owner and in total, and a spec is capped in bytes;
- the configuration wins: a runtime session holding the name of a configured one is stopped
  when the config asks for it, and no runtime session may take a configured name;
- the global redaction mode is a floor: tightening it raises every weaker running session at
  once, and configured and restored sessions are raised to it when they (re)start. Only an
  admin's explicit runtime start (authz.py) runs weaker than the global mode, until the next
  tightening or restart.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from ..errors import Conflict, DaemonError, InvalidArgument, LimitExceeded, NotFound
from .event_filter import EventFilter
from ..export.jsonl import SINK_DIR_MODE, JsonlSink
from ..private_files import UnsafeFile, ensure_private_dir, read_private, write_atomic
from ..redact import MODES

log = logging.getLogger(__name__)

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
Redacted = Callable[[str], Dict[str, Any]]  # redaction mode -> the event redacted in that mode
# Weakest to strongest; the same order as control/authz.py (a unit test checks they agree).
REDACTION_STRENGTH: Dict[str, int] = {"full": 0, "safe": 1, "minimal": 2}
MAX_STORE_BYTES = 64 * 1024 * 1024  # sessions.json larger than this is not ours


def stronger(mode: str, floor: str) -> str:
    """`mode`, or `floor` where `mode` is weaker."""
    return mode if REDACTION_STRENGTH[mode] >= REDACTION_STRENGTH[floor] else floor


@dataclass(frozen=True)
class SessionLimits:
    """Config `session_limits`: what runtime sessions may take (configured ones are root's)."""

    max_per_owner: int = 16
    max_total: int = 128
    max_spec_bytes: int = 64 * 1024

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SessionLimits":
        limits = config.get("session_limits") or {}
        return cls(**{k: int(limits[k]) for k in ("max_per_owner", "max_total", "max_spec_bytes") if k in limits})


@dataclass
class Session:
    name: str
    owner_uid: int
    filter: EventFilter
    redaction: str
    sink_path: str
    origin: str  # "config" | "runtime"
    requested_sink: Optional[str] = None  # the path the spec named; None: a fresh default file
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


def _requested_sink(spec: Mapping[str, Any]) -> Optional[str]:
    sink = spec.get("sink") or {}
    if not isinstance(sink, dict) or not isinstance(sink.get("path") or "", str):
        raise InvalidArgument('"sink" must be an object with a string "path"')
    path = sink.get("path")
    return os.path.abspath(path) if path else None


class SessionManager:
    def __init__(self, state_dir: str, limits: SessionLimits = SessionLimits()) -> None:
        self.state_dir = state_dir
        self.sessions_dir = os.path.join(state_dir, "sessions")
        self.limits = limits
        self._store = os.path.join(state_dir, "sessions.json")
        self._lock = threading.Lock()
        self._sessions: Dict[str, Session] = {}
        self._configured: frozenset = frozenset()  # names the config defines: runtime ones may not take them
        ensure_private_dir(self.sessions_dir, SINK_DIR_MODE)

    def default_sink_path(self, name: str) -> str:
        """The one place a session's default file is named: fresh for every start, so no two
        sessions (no two owners) ever share a file, whatever their names."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return os.path.join(self.sessions_dir, f"{name}-{stamp}-{secrets.token_hex(4)}.jsonl")

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, spec: Dict[str, Any], owner_uid: int, origin: str, global_mode: str,
              restoring: bool = False) -> Session:
        """Start a session from a spec (name, filters, redaction, sink); raises DaemonError.

        `restoring`: the spec is a runtime session persisted by the previous run, which goes on
        writing its own file; its mode is checked again against today's global mode."""
        name = validate_name(spec.get("name"))
        if origin == "runtime":
            self._check_spec_size(name, spec)
        try:
            event_filter = EventFilter.from_args(spec.get("filters") or {})
        except ValueError as exc:
            raise InvalidArgument(f"session {name}: {exc}") from exc
        mode = spec.get("redaction") or global_mode
        if mode not in MODES:
            raise InvalidArgument(f"session {name}: unknown redaction mode {mode!r}; use one of {', '.join(MODES)}")
        if origin == "config" or restoring:
            floor = stronger(mode, global_mode)
            if floor != mode:
                log.warning("session %s: redaction %s is weaker than the global %s; running it %s", name, mode, global_mode, floor)
                mode = floor
        requested = _requested_sink(spec)
        with self._lock:
            if origin == "runtime" and name in self._configured:
                raise Conflict(f"session name {name} belongs to a session in the configuration; pick another name")
            if name in self._sessions:
                raise Conflict(f"session {name} is already running; stop it first or pick another name")
            if origin == "runtime":
                self._check_counts(owner_uid)
            path = requested or self.default_sink_path(name)
            session = Session(name, owner_uid, event_filter, mode, path, origin, requested)
            session.sink = self._open_sink(session, fresh=requested is None and not restoring)
            self._sessions[name] = session
            self._persist()
        log.info("session %s started (%s, owner uid %d, redaction %s) -> %s", name, origin, owner_uid, mode, session.sink_path)
        return session

    def _check_spec_size(self, name: str, spec: Mapping[str, Any]) -> None:
        try:
            size = len(json.dumps(spec, separators=(",", ":")).encode())
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"session {name}: the spec is not plain JSON") from exc
        if size > self.limits.max_spec_bytes:
            raise LimitExceeded(
                f"session {name}: the spec is {size} bytes, more than the {self.limits.max_spec_bytes} allowed "
                "(session_limits.max_spec_bytes)"
            )

    def _check_counts(self, owner_uid: int) -> None:
        """Caller holds the lock. Caps runtime sessions, each of which holds a descriptor."""
        runtime = [s for s in self._sessions.values() if s.origin == "runtime"]
        owned = sum(1 for s in runtime if s.owner_uid == owner_uid)
        if owned >= self.limits.max_per_owner:
            raise LimitExceeded(
                f"uid {owner_uid} already has {owned} sessions, the most allowed (session_limits.max_per_owner); "
                "stop one first"
            )
        if len(runtime) >= self.limits.max_total:
            raise LimitExceeded(
                f"the daemon already runs {len(runtime)} sessions, the most allowed (session_limits.max_total)"
            )

    def _open_sink(self, session: Session, fresh: bool) -> JsonlSink:
        """Captured content belongs to the session's owner: their file, 0600, never a link."""
        try:
            return JsonlSink(session.sink_path, session.owner_uid, fresh=fresh)
        except OSError as exc:
            raise InvalidArgument(f"session {session.name}: cannot open {session.sink_path}: {exc.strerror}") from exc

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

    def enforce_floor(self, global_mode: str) -> List[Session]:
        """The global mode was tightened (or set): raise every session weaker than it, at once.
        Returns the sessions raised."""
        raised = []
        with self._lock:
            for session in self._sessions.values():
                mode = stronger(session.redaction, global_mode)
                if mode != session.redaction:
                    log.warning("session %s (owner uid %d): redaction raised from %s to the global %s",
                                session.name, session.owner_uid, session.redaction, mode)
                    session.redaction = mode
                    raised.append(session)
            if any(s.origin == "runtime" for s in raised):
                self._persist()
        return raised

    # -- persistence and config ---------------------------------------------------------------

    def _persist(self) -> None:
        """Write the runtime sessions (config ones come from the config). Caller holds the lock."""
        specs = [s.spec() for s in self._sessions.values() if s.origin == "runtime"]
        write_atomic(self._store, json.dumps({"sessions": specs}, indent=1).encode(), 0o600)

    def restore(self, global_mode: str) -> List[Session]:
        """Start the runtime sessions persisted by a previous run."""
        try:
            specs = json.loads(read_private(self._store, MAX_STORE_BYTES)).get("sessions", [])
        except FileNotFoundError:
            return []
        except UnsafeFile as exc:
            log.error("%s: %s; runtime sessions not restored", self._store, exc.strerror)
            return []
        except (OSError, ValueError, AttributeError) as exc:
            log.error("cannot read %s (%s); runtime sessions not restored", self._store, exc)
            return []
        restored = []
        for spec in specs:
            try:
                session = self.start(spec, int(spec.get("owner_uid", 0)), "runtime", global_mode, restoring=True)
            except (DaemonError, TypeError, ValueError, AttributeError) as exc:
                log.error("persisted session %r not restored: %s", spec.get("name") if isinstance(spec, dict) else spec,
                          getattr(exc, "message", exc))
                continue
            restored.append(session)
        return restored

    def apply_config(self, config: Mapping[str, Any], global_mode: str) -> None:
        """Make the config's sessions run as configured: start new, restart changed, stop removed.

        Also takes the config's session limits, and raises running sessions to the global mode.
        A runtime session holding a configured name is stopped: the configuration wins."""
        self.limits = SessionLimits.from_config(config)
        wanted = {spec["name"]: spec for spec in config.get("sessions") or []}
        with self._lock:
            self._configured = frozenset(wanted)
        self.enforce_floor(global_mode)
        for session in self.list():
            if session.origin != "config":
                if session.name in wanted:
                    log.warning("runtime session %s (owner uid %d) stopped: the configuration defines a session of that name",
                                session.name, session.owner_uid)
                    self.stop(session.name)
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
        return (
            session.filter.to_args() != EventFilter.from_args(spec.get("filters") or {}).to_args()
            or session.redaction != stronger(spec.get("redaction") or global_mode, global_mode)
            or session.requested_sink != _requested_sink(spec)
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
            sink = session.sink
            try:
                if sink is not None:
                    sink.write(redacted(session.redaction))
                session.events += 1
            except (OSError, ValueError) as exc:
                if sink is not None and sink.closed:
                    continue  # stopped while this event was on its way: not a write error
                session.sink_errors += 1
                if session.sink_errors == 1:
                    log.error("session %s: writing %s failed: %s", session.name, session.sink_path, exc)
        return matched
