"""The control operations, once, for both transports (as TuneD's controller.py).

Every request is authorized here (authz.py) and then carried out on the daemon; the Unix socket
and D-Bus modules only translate wire formats and caller identities. Methods are synchronous and
thread-safe: transports call them from worker threads.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Protocol

from oisp_ctl import protocol
from oisp_ctl.protocol import E_INVALID_ARGUMENT, ProtocolError

from .. import __version__
from ..errors import Conflict, DaemonError, InvalidArgument, LimitExceeded, NotFound
from ..redact import MODES
from ..sessions.manager import SessionManager
from .authz import Authorizer, Caller
from ..export.tail import Subscriber, SubscriberHub
from ..sessions.event_filter import EventFilter

log = logging.getLogger(__name__)

# The daemon's own refusals and the protocol error each travels as: the only translation point.
_ERROR_CODES = (
    (InvalidArgument, protocol.E_INVALID_ARGUMENT),
    (Conflict, protocol.E_CONFLICT),
    (NotFound, protocol.E_NOT_FOUND),
    (LimitExceeded, protocol.E_LIMIT),
)


def _protocol_error(exc: DaemonError) -> ProtocolError:
    for kind, code in _ERROR_CODES:
        if isinstance(exc, kind):
            return ProtocolError(code, exc.message)
    return ProtocolError(protocol.E_INTERNAL, exc.message)

StateListener = Callable[[str, Dict[str, Any]], None]
CounterSource = Callable[[], Dict[str, int]]


class Daemon(Protocol):
    """What the operations need from the running daemon (oisp_daemon.service.Daemon)."""

    sessions: SessionManager
    hub: SubscriberHub

    def global_redaction(self) -> str: ...
    def set_global_redaction(self, mode: str) -> None: ...
    def custom_pattern_count(self) -> int: ...
    def binary_paths(self) -> List[str]: ...
    def add_binary_path(self, path: str) -> List[str]: ...
    def remove_binary_path(self, path: str) -> List[str]: ...
    def reload(self) -> Optional[str]: ...
    def status(self) -> Dict[str, Any]: ...
    def counters(self) -> Dict[str, int]: ...
    def tail_max_buffer(self) -> int: ...


# -- argument types: checked for every op before authorization or anything else runs -----------

ArgCheck = Callable[[str, Any], None]
MAX_UID = 2 ** 32 - 2  # (uid_t)-1 means "no uid"


def _json_type(value: Any) -> str:
    """The JSON name of a value's type: errors say what came, never echo it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


def _invalid(key: str, expected: str, value: Any) -> ProtocolError:
    return ProtocolError(E_INVALID_ARGUMENT, f'argument "{key}" must be {expected}, got a JSON {_json_type(value)}')


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # true is no 1


def _text(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise _invalid(key, "a non-empty string", value)


def _uid(key: str, value: Any) -> None:
    if not _is_int(value) or not 0 <= value <= MAX_UID:
        raise _invalid(key, f"a uid (an integer from 0 to {MAX_UID})", value)


def _object(key: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise _invalid(key, "an object", value)


def _seconds(key: str, value: Any) -> None:
    if not (_is_int(value) or isinstance(value, float)):
        raise _invalid(key, "POSIX seconds (a number)", value)


def _positive_int(key: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise _invalid(key, "a positive integer", value)


def _sink(key: str, value: Any) -> None:
    if not isinstance(value, dict) or set(value) - {"path"}:
        raise _invalid(key, 'an object such as {"path": "/var/log/oisp/audit.jsonl"}', value)
    if "path" in value:
        _text(key + ".path", value["path"])


def _optional(check: ArgCheck) -> ArgCheck:
    """`check`, with null meaning "not given" (clients send null for an option left out)."""
    return lambda key, value: None if value is None else check(key, value)


# op -> argument -> check; the names in `_REQUIRED` must be present. Unknown arguments are refused:
# a misspelt option must not be ignored silently.
_ARG_CHECKS: Dict[str, Dict[str, ArgCheck]] = {
    protocol.OP_STATUS: {},
    protocol.OP_SESSION_START: {"name": _text, "owner_uid": _uid, "redaction": _optional(_text),
                                "filters": _optional(_object), "sink": _optional(_sink)},
    protocol.OP_SESSION_STOP: {"name": _text},
    protocol.OP_SESSION_LIST: {},
    protocol.OP_BINARY_PATHS_ADD: {"path": _text},
    protocol.OP_BINARY_PATHS_REMOVE: {"path": _text},
    protocol.OP_BINARY_PATHS_LIST: {},
    protocol.OP_REDACTION_GET: {},
    protocol.OP_REDACTION_SET: {"mode": _text},
    protocol.OP_RELOAD: {},
    protocol.OP_TAIL: {"filters": _optional(_object), "since": _optional(_seconds),
                       "max_buffer": _optional(_positive_int)},
}
_REQUIRED = {"name", "path", "mode"}


def check_args(op: str, args: Any) -> None:
    """Refuse arguments of `op` that are unknown, missing or of the wrong JSON type
    (invalid_argument), so no handler ever meets a string where it expects an object."""
    if not isinstance(args, dict):
        raise ProtocolError(protocol.E_BAD_REQUEST, "arguments must be a JSON object")
    checks = _ARG_CHECKS[op]
    unknown = sorted(set(args) - set(checks))
    if unknown:
        known = ", ".join(sorted(checks)) or "none"
        raise ProtocolError(E_INVALID_ARGUMENT, f"{op} takes no argument {unknown[0]!r}; its arguments: {known}")
    for key, check in checks.items():
        if key in args:
            check(key, args[key])
        elif key in _REQUIRED:
            raise ProtocolError(E_INVALID_ARGUMENT, f'{op} needs the argument "{key}"')


def _arg(args: Dict[str, Any], key: str, kind: type = str) -> Any:
    value = args.get(key)
    if not isinstance(value, kind) or (kind is str and not value):
        raise ProtocolError(E_INVALID_ARGUMENT, f'argument "{key}" must be a non-empty {kind.__name__}')
    return value


class Operations:
    def __init__(self, daemon: Daemon, authorizer: Authorizer) -> None:
        self.daemon = daemon
        self.authorizer = authorizer
        self.version = __version__
        self._listeners: List[StateListener] = []
        self._counter_sources: List[CounterSource] = []
        self._lock = threading.Lock()  # serialises session and redaction changes; the daemon serialises the rest
        self._handlers: Dict[str, Callable[[Caller, Dict[str, Any]], Any]] = {
            protocol.OP_STATUS: self._status,
            protocol.OP_SESSION_START: self._session_start,
            protocol.OP_SESSION_STOP: self._session_stop,
            protocol.OP_SESSION_LIST: self._session_list,
            protocol.OP_BINARY_PATHS_ADD: self._binary_paths_add,
            protocol.OP_BINARY_PATHS_REMOVE: self._binary_paths_remove,
            protocol.OP_BINARY_PATHS_LIST: self._binary_paths_list,
            protocol.OP_REDACTION_GET: self._redaction_get,
            protocol.OP_REDACTION_SET: self._redaction_set,
            protocol.OP_RELOAD: self._reload,
        }

    # -- entry points -------------------------------------------------------------------------

    def hello(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        protocol.check_hello_args(args)
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "daemon": f"oisp-sensor/{self.version}",
            "uid": caller.uid,
            "groups": sorted(caller.groups),
            "permissions": self.authorizer.permissions(caller),
        }

    def call(self, caller: Caller, op: str, args: Dict[str, Any]) -> Any:
        handler = self._handlers.get(op)
        if handler is None:
            raise ProtocolError(protocol.E_UNKNOWN_OP, f"operation {op!r} is not available here")
        check_args(op, args)
        try:
            return handler(caller, args)
        except DaemonError as exc:
            raise _protocol_error(exc) from exc

    def tail(self, caller: Caller, args: Dict[str, Any]) -> Subscriber:
        check_args(protocol.OP_TAIL, args)
        try:
            event_filter = EventFilter.from_args(args.get("filters") or {})
        except ValueError as exc:
            raise ProtocolError(E_INVALID_ARGUMENT, str(exc)) from exc
        self.authorizer.check(caller, protocol.OP_TAIL, uids=event_filter.uids)
        since = args.get("since")
        if since is not None and not isinstance(since, (int, float)):
            raise ProtocolError(E_INVALID_ARGUMENT, 'argument "since" must be POSIX seconds')
        # A client may ask for less buffering, never more: the daemon's memory is not its to spend.
        cap = self.daemon.tail_max_buffer()
        requested = args.get("max_buffer")
        if requested is not None and (not isinstance(requested, int) or requested < 1):
            raise ProtocolError(E_INVALID_ARGUMENT, 'argument "max_buffer" must be a positive integer')
        max_buffer = min(requested or cap, cap)
        return self.daemon.hub.subscribe(event_filter, self.authorizer.tail_scope(caller), since, max_buffer)

    def untail(self, sub: Subscriber) -> None:
        self.daemon.hub.unsubscribe(sub)

    def add_state_listener(self, fn: StateListener) -> None:
        self._listeners.append(fn)

    def add_counter_source(self, fn: CounterSource) -> None:
        """Counters of a transport (connections refused, failed accepts) to show in status."""
        self._counter_sources.append(fn)

    def _transport_counters(self) -> Dict[str, int]:
        merged: Dict[str, int] = {}
        for fn in list(self._counter_sources):
            merged.update(fn())
        return merged

    def counters(self) -> Dict[str, int]:
        return {**self.daemon.counters(), **self._transport_counters()}

    def _announce(self, signal: str, payload: Dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(signal, payload)
            except Exception:  # a broken listener must not undo the state change
                log.exception("state listener failed for %s", signal)

    # -- operations ---------------------------------------------------------------------------

    def _status(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        self.authorizer.check(caller, protocol.OP_STATUS)
        status = self.daemon.status()
        return dict(status, counters={**status.get("counters", {}), **self._transport_counters()})

    def _session_start(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        name = _arg(args, "name")
        owner = args.get("owner_uid", caller.uid)
        if not isinstance(owner, int) or owner < 0:
            raise ProtocolError(E_INVALID_ARGUMENT, 'argument "owner_uid" must be a uid')
        mode = args.get("redaction")
        if mode is not None and mode not in MODES:
            raise ProtocolError(E_INVALID_ARGUMENT, f"unknown redaction mode {mode!r}; use one of {', '.join(MODES)}")
        global_mode = self.daemon.global_redaction()
        self.authorizer.check(
            caller,
            protocol.OP_SESSION_START,
            owner_uid=owner,
            redaction=mode,
            global_redaction=global_mode,
            custom_sink=bool((args.get("sink") or {}).get("path")),
        )
        spec = {k: args.get(k) for k in ("name", "filters", "redaction", "sink")}
        with self._lock:
            session = self.daemon.sessions.start(spec, owner, "runtime", global_mode)
        self._announce("SessionStarted", {})  # no name or owner: every local user sees signals
        return session.to_dict()

    def _session_stop(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        name = _arg(args, "name")
        with self._lock:
            session = self.daemon.sessions.get(name)
            self.authorizer.check(caller, protocol.OP_SESSION_STOP, owner_uid=session.owner_uid)
            if session.origin == "config":
                raise ProtocolError(
                    protocol.E_CONFLICT,
                    f"session {name} comes from the configuration; remove it there and run oisp-ctl reload",
                )
            self.daemon.sessions.stop(name)
        self._announce("SessionStopped", {})
        return session.to_dict()

    def _session_list(self, caller: Caller, args: Dict[str, Any]) -> List[Dict[str, Any]]:
        self.authorizer.check(caller, protocol.OP_SESSION_LIST)
        return [s.to_dict() for s in self.daemon.sessions.list()]

    def _binary_paths_add(self, caller: Caller, args: Dict[str, Any]) -> List[str]:
        path = _arg(args, "path")
        self.authorizer.check(caller, protocol.OP_BINARY_PATHS_ADD)
        return self.daemon.add_binary_path(path)  # a command the daemon's main thread runs

    def _binary_paths_remove(self, caller: Caller, args: Dict[str, Any]) -> List[str]:
        path = _arg(args, "path")
        self.authorizer.check(caller, protocol.OP_BINARY_PATHS_REMOVE)
        return self.daemon.remove_binary_path(path)

    def _binary_paths_list(self, caller: Caller, args: Dict[str, Any]) -> List[str]:
        self.authorizer.check(caller, protocol.OP_BINARY_PATHS_LIST)
        return self.daemon.binary_paths()

    def _redaction_get(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        self.authorizer.check(caller, protocol.OP_REDACTION_GET)
        return {"mode": self.daemon.global_redaction(), "custom_patterns": self.daemon.custom_pattern_count()}

    def _redaction_set(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        mode = _arg(args, "mode")
        if mode not in MODES:
            raise ProtocolError(E_INVALID_ARGUMENT, f"unknown redaction mode {mode!r}; use one of {', '.join(MODES)}")
        self.authorizer.check(caller, protocol.OP_REDACTION_SET)
        with self._lock:
            self.daemon.set_global_redaction(mode)
        log.info("global redaction set to %s by uid %d", mode, caller.uid)
        return {"mode": mode, "custom_patterns": self.daemon.custom_pattern_count()}

    def _reload(self, caller: Caller, args: Dict[str, Any]) -> Dict[str, Any]:
        self.authorizer.check(caller, protocol.OP_RELOAD)
        error = self.daemon.reload()  # on the main thread, as a SIGHUP reload
        return {"reloaded": error is None, "error": error}
