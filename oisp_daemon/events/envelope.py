"""The OISP v0.1 envelope: event ids (ULID), timestamps, source and confidence blocks.

Event times come from the kernel (bpf_ktime_get_ns is CLOCK_MONOTONIC), not from when this
process got around to decoding, so a Clock maps monotonic ns to wall time with an offset measured
once at start-up.
"""
from __future__ import annotations

import datetime
import os
import threading
import time
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

from oisp_daemon import __version__

OISP_VERSION = "0.1"
COLLECTOR = "oisp-sensor"

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
_TIME_MAX = (1 << 48) - 1


def encode_ulid(ms: int, randomness: int) -> str:
    """26 Crockford base32 characters of the 128-bit value (48-bit ms time, 80 random bits)."""
    value = ((ms & _TIME_MAX) << _RANDOM_BITS) | (randomness & _RANDOM_MAX)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def ulid_time_ms(ulid: str) -> int:
    """The millisecond timestamp inside a ULID."""
    value = 0
    for char in ulid.upper()[:10]:
        value = (value << 5) | _CROCKFORD.index(char)
    return value


class UlidGenerator:
    """ULIDs that sort in generation order, also within one millisecond and across wall-clock
    steps backwards: within a ms (or when the clock went back) the random part is incremented
    instead of drawn again, as the ULID spec's monotonic mode does."""

    def __init__(
        self,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        random_bits: Callable[[], int] = lambda: int.from_bytes(os.urandom(10), "big"),
    ) -> None:
        self._now_ms = now_ms
        self._random_bits = random_bits
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def new(self) -> str:
        with self._lock:
            ms = self._now_ms()
            if ms > self._last_ms:
                self._last_ms, self._last_random = ms, self._random_bits() & _RANDOM_MAX
            elif self._last_random < _RANDOM_MAX:
                self._last_random += 1
            else:  # 2**80 ids in one ms: borrow the next millisecond rather than repeat or go back
                self._last_ms, self._last_random = self._last_ms + 1, self._random_bits() & _RANDOM_MAX
            return encode_ulid(self._last_ms, self._last_random)


_ulids = UlidGenerator()


def new_ulid() -> str:
    return _ulids.new()


def rfc3339_from_ns(wall_ns: int) -> str:
    """"YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, microseconds truncated) for Unix-epoch nanoseconds."""
    seconds, ns = divmod(wall_ns, 1_000_000_000)
    stamp = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns // 1000:06d}Z"


class Clock:
    """Kernel CLOCK_MONOTONIC ns -> wall-clock ns, with the offset measured once at start.

    Measured once so that event order and durations keep the monotonic clock's guarantees; a later
    wall-clock step (NTP, manual) shifts new events' `ts` only after a restart.
    """

    def __init__(self, offset_ns: Optional[int] = None) -> None:
        self.offset_ns = time.time_ns() - time.monotonic_ns() if offset_ns is None else offset_ns

    def wall_ns(self, mono_ns: int) -> int:
        return mono_ns + self.offset_ns

    def rfc3339(self, mono_ns: int) -> str:
        return rfc3339_from_ns(self.wall_ns(mono_ns))


def make_source(capture_method: str, capture_point: Optional[str] = None) -> Dict[str, str]:
    """The envelope's `source` for an event this sensor captured."""
    source = {"collector": COLLECTOR, "collector_version": __version__, "capture_method": capture_method}
    if capture_point:
        source["capture_point"] = capture_point
    return source


def make_confidence(
    completeness: str = "full",
    reasons: Iterable[str] = (),
    limitations: Sequence[str] = (),
    level: str = "high",
    **extra: Any,
) -> Dict[str, Any]:
    """The envelope's `confidence`; `extra` carries content_source, ai_detection_method, ..."""
    confidence: Dict[str, Any] = {"level": level, "completeness": completeness}
    reasons = list(reasons)
    if reasons:
        confidence["reasons"] = reasons
    if limitations:
        confidence["limitations"] = list(limitations)
    confidence.update(extra)
    return confidence


def envelope(
    event_type: str,
    ts_mono_ns: int,
    clock: Clock,
    source: Dict[str, Any],
    confidence: Dict[str, Any],
    host: Optional[Dict[str, Any]] = None,
    actor: Optional[Dict[str, Any]] = None,
    process: Optional[Dict[str, Any]] = None,
    data: Optional[Dict[str, Any]] = None,
    related: Optional[Sequence[Tuple[str, str]]] = None,
) -> Dict[str, Any]:
    """A complete OISP event. `related` is [(event_id, relationship), ...].

    Context dicts are copied: later stages (redaction) edit events in place and must not edit the
    shared host block or the process cache through them.
    """
    event: Dict[str, Any] = {
        "oisp_version": OISP_VERSION,
        "event_id": new_ulid(),
        "event_type": event_type,
        "ts": clock.rfc3339(ts_mono_ns),
        "ts_mono": ts_mono_ns,
    }
    return _fill(event, source, confidence, data, related, host=host, actor=actor, process=process)


def derived_envelope(
    event_type: str,
    parent: Dict[str, Any],
    source: Dict[str, Any],
    confidence: Dict[str, Any],
    data: Optional[Dict[str, Any]] = None,
    related: Optional[Sequence[Tuple[str, str]]] = None,
) -> Dict[str, Any]:
    """An event that happened at the same time and place as `parent` (e.g. the tool calls found
    in a response): its timestamps and host/actor/process blocks (copied), a new id."""
    event: Dict[str, Any] = {
        "oisp_version": OISP_VERSION,
        "event_id": new_ulid(),
        "event_type": event_type,
        "ts": parent["ts"],
    }
    if "ts_mono" in parent:
        event["ts_mono"] = parent["ts_mono"]
    context = {key: parent.get(key) for key in ("host", "actor", "process")}
    return _fill(event, source, confidence, data, related, **context)


def _fill(
    event: Dict[str, Any],
    source: Dict[str, Any],
    confidence: Dict[str, Any],
    data: Optional[Dict[str, Any]],
    related: Optional[Sequence[Tuple[str, str]]],
    **context: Optional[Dict[str, Any]],
) -> Dict[str, Any]:
    """The parts every event has after its id and time: context blocks (copied), provenance,
    payload and links."""
    for key, block in context.items():
        if block:
            event[key] = dict(block)
    event["source"] = dict(source)
    event["confidence"] = dict(confidence)
    if data is not None:
        event["data"] = data
    if related:
        event["related_events"] = [{"event_id": eid, "relationship": rel} for eid, rel in related]
    return event
