"""Which OISP events a session or a tail subscriber wants: one filter shape for both.

A filter is a set of keys, each a list of accepted values: an event matches when, for every
non-empty key, one of its values matches (AND across keys, OR within a key). An empty filter
matches everything. The same dict shape travels in control requests and is stored with sessions,
so `from_args` validates it strictly and `to_args` gives it back.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Dict, Optional, Tuple

# The kernel's comm is at most 15 bytes (TASK_COMM_LEN - 1): an event whose process name came
# from comm carries a truncated name, which a filter on the full name must still match.
COMM_LEN = 15

_INT_KEYS = ("pids", "uids")
FILTER_KEYS = ("types", "pids", "comms", "uids", "providers", "sessions")


def _get(event: Dict[str, Any], *path: str) -> Any:
    value: Any = event
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def event_uid(event: Dict[str, Any]) -> Optional[int]:
    """The uid whose process caused the event (`actor.uid`), or None when the event has none."""
    uid = _get(event, "actor", "uid")
    return uid if isinstance(uid, int) and not isinstance(uid, bool) else None


@dataclass(frozen=True)
class EventFilter:
    """An immutable event filter; build it from request arguments with `from_args`."""

    types: Tuple[str, ...] = ()
    pids: Tuple[int, ...] = ()
    comms: Tuple[str, ...] = ()
    uids: Tuple[int, ...] = ()
    providers: Tuple[str, ...] = ()
    sessions: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # provider ids are compared case-insensitively; fold once here, not per event
        object.__setattr__(self, "providers", tuple(p.casefold() for p in self.providers))

    @classmethod
    def from_args(cls, args: Optional[Dict[str, Any]]) -> "EventFilter":
        """Validate a filter dict ({"types": ["ai.*"], "pids": [1234], ...}); ValueError names the bad key."""
        if args is None:
            return cls()
        if not isinstance(args, dict):
            raise ValueError("filter must be an object with keys %s, got %s"
                             % (", ".join(FILTER_KEYS), type(args).__name__))
        unknown = sorted(set(args) - set(FILTER_KEYS))
        if unknown:
            raise ValueError("unknown filter key %r; known keys: %s"
                             % (unknown[0], ", ".join(FILTER_KEYS)))
        values: Dict[str, Tuple[Any, ...]] = {}
        for key, raw in args.items():
            if not isinstance(raw, list):
                raise ValueError("filter %r must be a list, got %r" % (key, raw))
            for item in raw:
                if key in _INT_KEYS:
                    if not isinstance(item, int) or isinstance(item, bool) or item < 0:
                        raise ValueError("filter %r must list non-negative integers, got %r"
                                         % (key, item))
                elif not isinstance(item, str) or not item:
                    raise ValueError("filter %r must list non-empty strings, got %r" % (key, item))
            values[key] = tuple(raw)
        return cls(**values)

    def to_args(self) -> Dict[str, Any]:
        """The filter as request arguments, only non-empty keys; `from_args(f.to_args()) == f`."""
        return {key: list(getattr(self, key)) for key in FILTER_KEYS if getattr(self, key)}

    def matches(self, event: Dict[str, Any], session: Optional[str] = None) -> bool:
        """Whether `event`, recorded into `session` (None if in none), passes this filter."""
        if self.types:
            event_type = event.get("event_type")
            if not isinstance(event_type, str) or not any(
                    fnmatchcase(event_type, pattern) for pattern in self.types):
                return False
        if self.pids and _get(event, "process", "pid") not in self.pids:
            return False
        if self.comms and not self._comm_matches(_get(event, "process", "name")):
            return False
        if self.uids and event_uid(event) not in self.uids:
            return False
        if self.providers:
            provider = _get(event, "data", "provider", "name")
            if not isinstance(provider, str) or provider.casefold() not in self.providers:
                return False
        if self.sessions and session not in self.sessions:
            return False
        return True

    def _comm_matches(self, name: Any) -> bool:
        if not isinstance(name, str):
            return False
        return any(name == comm or (len(comm) > COMM_LEN and name == comm[:COMM_LEN])
                   for comm in self.comms)


@dataclass(frozen=True)
class TailScope:
    """Which uids' events a tail may see: every uid (`uid` None) or only one."""

    uid: Optional[int] = None

    @property
    def everything(self) -> bool:
        return self.uid is None

    def allows(self, event: Dict[str, Any]) -> bool:
        """Whether the event may be shown; an event without actor.uid is shown only to `everything`."""
        return self.uid is None or event_uid(event) == self.uid
