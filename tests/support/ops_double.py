"""A test double of the daemon core's Operations (ISSUE3 contract), for the transport tests.

It really implements the contract the transports rely on, over in-memory state instead of a
SessionManager and a capture pipeline: the real Authorizer decides every request, the real
EventFilter validates filters and the real SubscriberHub fans events out to tails, so the socket
server and oisp-ctl are exercised end to end against the same rules and errors as in the daemon.
What it does not do is what only the daemon core does: write session files, attach uprobes, read
a configuration.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional

from oisp_ctl import protocol
from oisp_ctl.protocol import ProtocolError
from oisp_daemon.control.authz import Authorizer, Caller
from oisp_daemon.control.event_filter import EventFilter
from oisp_daemon.control.subscribers import Subscriber, SubscriberHub

MODES = ("safe", "minimal", "full")


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(protocol.E_INVALID_ARGUMENT, message)


def _name(args: Dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise _invalid('argument "%s" must be a non-empty string' % key)
    return value


class OperationsDouble:
    """In-memory Operations: sessions, binary paths, redaction mode, tails on a real hub."""

    def __init__(self, hub: Optional[SubscriberHub] = None,
                 authorizer: Optional[Authorizer] = None, version: str = "0.1.0-test",
                 state_dir: str = "/var/lib/oisp-sensor", max_buffer: int = 1000) -> None:
        self.version = version
        self.hub = hub if hub is not None else SubscriberHub()
        self.authorizer = authorizer if authorizer is not None else Authorizer()
        self.state_dir = state_dir
        self.max_buffer = max_buffer
        self.redaction = "safe"
        self.binary_paths: List[str] = []
        self.sessions: Dict[str, Dict[str, Any]] = {}
        self.reloads = 0
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._listeners: List[Callable[[str, Dict[str, Any]], None]] = []
        self._handlers: Dict[str, Callable[[Caller, Dict[str, Any]], Any]] = {
            protocol.OP_STATUS: self._status,
            protocol.OP_SESSION_START: self._session_start,
            protocol.OP_SESSION_STOP: self._session_stop,
            protocol.OP_SESSION_LIST: self._session_list,
            protocol.OP_BINARY_PATHS_ADD: self._paths_add,
            protocol.OP_BINARY_PATHS_REMOVE: self._paths_remove,
            protocol.OP_BINARY_PATHS_LIST: self._paths_list,
            protocol.OP_REDACTION_GET: self._redaction_get,
            protocol.OP_REDACTION_SET: self._redaction_set,
            protocol.OP_RELOAD: self._reload,
        }

    # -- the contract -------------------------------------------------------------------------

    def hello(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        protocol.check_hello_args(args)
        return {"protocol": protocol.PROTOCOL_VERSION, "daemon": "oisp-sensor/%s" % self.version,
                "uid": caller.uid, "groups": sorted(caller.groups),
                "permissions": self.authorizer.permissions(caller)}

    def call(self, caller: Caller, op: str, args: Dict[str, Any]) -> Any:
        handler = self._handlers.get(op)
        if handler is None:
            raise ProtocolError(protocol.E_UNKNOWN_OP, "operation %r is not available here" % op)
        return handler(caller, args)

    def tail(self, caller: Caller, args: Dict[str, Any]) -> Subscriber:
        try:
            event_filter = EventFilter.from_args(args.get("filters"))
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        self.authorizer.check(caller, protocol.OP_TAIL, uids=event_filter.uids)
        since = args.get("since")
        if since is not None and (not isinstance(since, (int, float)) or isinstance(since, bool)):
            raise _invalid('argument "since" must be POSIX seconds')
        max_buffer = args.get("max_buffer") or self.max_buffer
        return self.hub.subscribe(event_filter, self.authorizer.tail_scope(caller), since,
                                  int(max_buffer))

    def untail(self, sub: Subscriber) -> None:
        self.hub.unsubscribe(sub)

    def add_state_listener(self, fn: Callable[[str, Dict[str, Any]], None]) -> None:
        self._listeners.append(fn)

    def counters(self) -> Dict[str, int]:
        with self._lock:
            return {"events": 0, "ai_requests": 0, "sessions": len(self.sessions),
                    "subscribers": self.hub.count()}

    # -- operations ---------------------------------------------------------------------------

    def _announce(self, signal: str, payload: Dict[str, Any]) -> None:
        for fn in list(self._listeners):
            fn(signal, payload)

    def _status(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        self.authorizer.check(caller, protocol.OP_STATUS)
        return {"version": self.version, "uptime_s": round(time.monotonic() - self._started, 3),
                "probes": [{"library": "libssl.so.3", "path": "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                            "attached": True}],
                "counters": self.counters(), "sessions": len(self.sessions),
                "redaction": self.redaction}

    def _session_start(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        name = _name(args, "name")
        try:
            event_filter = EventFilter.from_args(args.get("filters"))
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        mode = args.get("redaction")
        if mode is not None and mode not in MODES:
            raise _invalid("unknown redaction mode %r; use one of %s" % (mode, ", ".join(MODES)))
        sink = args.get("sink") or {}
        self.authorizer.check(caller, protocol.OP_SESSION_START, owner_uid=caller.uid,
                              redaction=mode, global_redaction=self.redaction)
        with self._lock:
            if name in self.sessions:
                raise ProtocolError(protocol.E_CONFLICT, "a session named %r is already running; "
                                    "stop it first or choose another name" % name)
            session = {
                "name": name, "owner_uid": caller.uid, "filters": event_filter.to_args(),
                "redaction": mode or self.redaction,
                "sink": {"path": sink.get("path") or "%s/sessions/%s.jsonl" % (self.state_dir, name)},
                "origin": "runtime", "created": time.time(), "events": 0,
            }
            self.sessions[name] = session
        self._announce("SessionStarted", {"name": name, "owner_uid": caller.uid})
        return dict(session)

    def _session_stop(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        name = _name(args, "name")
        with self._lock:
            session = self.sessions.get(name)
            if session is None:
                raise ProtocolError(protocol.E_NOT_FOUND, "no session named %r (oisp-ctl session "
                                    "list shows the running ones)" % name)
            self.authorizer.check(caller, protocol.OP_SESSION_STOP, owner_uid=session["owner_uid"])
            del self.sessions[name]
        self._announce("SessionStopped", {"name": name, "owner_uid": session["owner_uid"]})
        return dict(session)

    def _session_list(self, caller: Caller, args: Dict[str, Any]) -> List[Dict[str, Any]]:
        self.authorizer.check(caller, protocol.OP_SESSION_LIST)
        with self._lock:
            return [dict(s) for s in self.sessions.values()]

    def _paths_add(self, caller: Caller, args: Dict[str, Any]) -> List[str]:
        path = _name(args, "path")
        self.authorizer.check(caller, protocol.OP_BINARY_PATHS_ADD)
        with self._lock:
            if path not in self.binary_paths:
                self.binary_paths.append(path)
            return list(self.binary_paths)

    def _paths_remove(self, caller: Caller, args: Dict[str, Any]) -> List[str]:
        path = _name(args, "path")
        self.authorizer.check(caller, protocol.OP_BINARY_PATHS_REMOVE)
        with self._lock:
            if path not in self.binary_paths:
                raise ProtocolError(protocol.E_NOT_FOUND, "%s is not a configured binary path" % path)
            self.binary_paths.remove(path)
            return list(self.binary_paths)

    def _paths_list(self, caller: Caller, args: Dict[str, Any]) -> List[str]:
        self.authorizer.check(caller, protocol.OP_BINARY_PATHS_LIST)
        with self._lock:
            return list(self.binary_paths)

    def _redaction_get(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        self.authorizer.check(caller, protocol.OP_REDACTION_GET)
        return {"mode": self.redaction, "custom_patterns": 0}

    def _redaction_set(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        mode = _name(args, "mode")
        if mode not in MODES:
            raise _invalid("unknown redaction mode %r; use one of %s" % (mode, ", ".join(MODES)))
        self.authorizer.check(caller, protocol.OP_REDACTION_SET)
        self.redaction = mode
        return {"mode": mode, "custom_patterns": 0}

    def _reload(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        self.authorizer.check(caller, protocol.OP_RELOAD)
        self.reloads += 1
        return {"reloaded": True, "error": None}
