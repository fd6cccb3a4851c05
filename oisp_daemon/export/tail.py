"""Fan-out of events to tail subscribers, never blocking capture, in bounded memory.

The pipeline thread publishes every event; each subscriber (one per `tail` request, consumed by an
asyncio transport) has a bounded buffer. When a reader is slow its buffer fills and further events
are dropped and counted instead of waiting: back-pressure would stall the pipeline and, behind it,
the BPF ring buffer, losing captured traffic for everyone. The count comes out with the next drain
so the transport can send a `dropped` notice where the gap is.

Memory is bounded in bytes, not only in events, because one event can carry a body of tens of
megabytes. The hub encodes each event once into its JSON bytes (the form the socket sends) and
every subscriber buffer, and the replay ring, hold a reference to that one `TailItem`: 80 tails of
one 4 MB prompt cost 4 MB, not 320. Three budgets bound it:

- the replay ring: at most `replay_size` events and `replay_bytes` bytes (oldest go first);
- each subscriber: at most `max_buffer` events and `max_buffer_bytes` bytes, counting the items it
  has taken but not yet sent (an empty buffer still takes one event larger than that, so a reader
  that keeps up never misses a large event);
- all subscribers together: `total_buffer_bytes` over the distinct items they hold (an item held
  by many subscribers counts once), so many non-reading tails cannot multiply memory. A
  subscriber holding nothing still takes its next item, so tails that never read cannot starve
  one that keeps up; each of them pins at most the one item it took while empty.

A short ring of recent events lets a new subscriber start with `--since` history.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Collection, Deque, Dict, List, Optional, Tuple

from ..sessions.event_filter import EventFilter, TailScope

log = logging.getLogger(__name__)

Event = Dict[str, Any]

DEFAULT_REPLAY_BYTES = 16 << 20
DEFAULT_MAX_BUFFER_BYTES = 16 << 20
DEFAULT_TOTAL_BUFFER_BYTES = 64 << 20
# What an item costs beside its JSON bytes (the object, its filter view, the deque slots).
ITEM_OVERHEAD = 512


def event_time(event: Event) -> Optional[float]:
    """The event's `ts` (RFC 3339) as POSIX seconds, or None if it has none or it does not parse."""
    ts = event.get("ts")
    if not isinstance(ts, str):
        return None
    if ts.endswith(("Z", "z")):
        ts = ts[:-1] + "+00:00"  # fromisoformat accepts "Z" only from Python 3.11
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def encode_event(event: Event) -> bytes:
    """The event as compact strict JSON, as the control protocol puts it in a tail line (with
    ASCII escapes when a string holds a lone surrogate, which has no UTF-8 form)."""
    text = json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(event, separators=(",", ":"), allow_nan=False).encode("ascii")


def filter_view(event: Event) -> Event:
    """The few fields EventFilter.matches and TailScope.allows read, so an item need not keep the
    whole event (with its body) as a dict beside its bytes."""
    view: Event = {"event_type": event.get("event_type")}
    for key, fields in (("process", ("pid", "name")), ("actor", ("uid",))):
        block = event.get(key)
        if isinstance(block, dict):
            view[key] = {f: block[f] for f in fields if f in block}
    data = event.get("data")
    provider = data.get("provider") if isinstance(data, dict) else None
    if isinstance(provider, dict) and "name" in provider:
        view["data"] = {"provider": {"name": provider["name"]}}
    return view


class TailItem:
    """One published event as shared by the ring and every subscriber: encoded once, never copied.

    `body` is the event's JSON, or None when the event could not be encoded (it is then reported
    as dropped to each subscriber that wanted it). `_holders` counts the subscribers holding it,
    guarded by the hub's shared budget.
    """

    __slots__ = ("when", "view", "body", "sessions", "size", "_holders")

    def __init__(self, when: float, view: Event, body: Optional[bytes],
                 sessions: Tuple[str, ...]) -> None:
        self.when = when
        self.view = view
        self.body = body
        self.sessions = sessions
        self.size = ITEM_OVERHEAD + (len(body) if body is not None else 0)
        self._holders = 0

    @classmethod
    def of(cls, event: Event, sessions: Collection[str] = ()) -> "TailItem":
        when = event_time(event)
        try:
            body: Optional[bytes] = encode_event(event)
        except (TypeError, ValueError):
            log.exception("tail: event is not valid JSON; subscribers get a dropped notice")
            body = None
        return cls(time.time() if when is None else when, filter_view(event), body,
                   tuple(sessions))

    def event(self) -> Optional[Event]:
        """The event decoded again (tests and diagnostics; the daemon sends `body` as it is)."""
        return None if self.body is None else json.loads(self.body)


class SharedBudget:
    """Bytes of the distinct items that subscriber buffers hold, against one limit for all."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("total_buffer_bytes must be positive, got %r" % (limit,))
        self.limit = limit
        self._lock = threading.Lock()
        self.used = 0

    def hold(self, item: TailItem, always: bool = False) -> bool:
        """Take one reference to the item; False (nothing taken) if a new item would not fit.

        An item someone already holds costs nothing more. `always` (a subscriber that holds
        nothing) takes it whatever the total: tails that never read must not starve a reader
        that keeps up, and each of them can pin only what it took while it still held nothing.
        """
        with self._lock:
            if item._holders == 0:
                if not always and self.used and self.used + item.size > self.limit:
                    return False
                self.used += item.size
            item._holders += 1
            return True

    def release(self, item: TailItem) -> None:
        with self._lock:
            item._holders -= 1
            if item._holders == 0:
                self.used -= item.size


class Subscriber:
    """One tail stream: its filter, its scope and a bounded buffer of items waiting to be sent.

    The producer side (`offer`) may run on any thread and never blocks beyond a short lock; the
    consumer side (`wait`, `drain`, `done`) runs on one asyncio loop. Drained items stay counted
    against the budgets until the consumer says each is sent (`done`) or the subscriber closes.
    """

    def __init__(self, filter: EventFilter, scope: TailScope, max_buffer: int = 1000,
                 max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
                 budget: Optional[SharedBudget] = None) -> None:
        if max_buffer <= 0:
            raise ValueError("max_buffer must be positive, got %r" % (max_buffer,))
        if max_buffer_bytes <= 0:
            raise ValueError("max_buffer_bytes must be positive, got %r" % (max_buffer_bytes,))
        self.filter = filter
        self.scope = scope
        self.max_buffer = max_buffer
        self.max_buffer_bytes = max_buffer_bytes
        self._budget = budget or SharedBudget(DEFAULT_TOTAL_BUFFER_BYTES)
        self._lock = threading.Lock()
        self._buf: Deque[TailItem] = deque()
        self._inflight: Deque[TailItem] = deque()  # drained, not yet sent
        self._bytes = 0            # of _buf and _inflight
        self._dropped = 0          # since the last drain
        self._dropped_total = 0
        self._dropped_bytes = 0
        self._closed = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake: Optional[asyncio.Event] = None
        self._armed = False        # a waiter is asleep and wants one wake-up

    def wants(self, view: Event, sessions: Collection[str] = ()) -> bool:
        """Whether the event is in scope and passes the filter for any session it was recorded into."""
        if not self.scope.allows(view):
            return False
        return any(self.filter.matches(view, s) for s in (sessions or (None,)))

    def offer(self, item: TailItem) -> bool:
        """Queue the item if wanted; drop and count it if a budget is spent. Never blocks.

        Returns whether it was queued.
        """
        if not self.wants(item.view, item.sessions):
            return False
        with self._lock:
            if self._closed:
                return False
            held = len(self._buf) + len(self._inflight)
            # once dropping, drop until the next drain: the gap then follows every returned item
            queued = (not self._dropped and held < self.max_buffer
                      and (not held or self._bytes + item.size <= self.max_buffer_bytes)
                      and self._budget.hold(item, always=not held))
            if queued:
                self._buf.append(item)
                self._bytes += item.size
            else:
                self._dropped += 1
                self._dropped_total += 1
                self._dropped_bytes += item.size
            wake = self._armed
            self._armed = False
        if wake:
            self._wake_waiter()
        return queued

    def drain(self) -> Tuple[List[TailItem], int]:
        """Take every buffered item and the number dropped since the last drain.

        Items are dropped only while a budget is spent, so every dropped item came after every
        returned one: send the items (calling `done` for each), then the `dropped` notice.
        """
        with self._lock:
            items = list(self._buf)
            self._inflight.extend(self._buf)
            self._buf.clear()
            dropped, self._dropped = self._dropped, 0
        return items, dropped

    def done(self, item: TailItem) -> None:
        """The consumer has sent (or given up on) a drained item: its bytes are free again."""
        with self._lock:
            if not self._inflight or self._inflight[0] is not item:
                return  # released already by close()
            self._inflight.popleft()
            self._bytes -= item.size
            self._budget.release(item)

    async def wait(self) -> None:
        """Return once there is something to drain or the subscriber is closed."""
        if self._wake is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
        while True:
            with self._lock:
                if self._buf or self._dropped or self._closed:
                    return
                self._wake.clear()
                self._armed = True
            await self._wake.wait()

    def close(self) -> None:
        """Stop accepting events, free what is held, and wake the consumer so it can end the stream."""
        with self._lock:
            self._closed = True
            for item in self._buf:
                self._budget.release(item)
            for item in self._inflight:
                self._budget.release(item)
            self._buf.clear()
            self._inflight.clear()
            self._bytes = 0
            wake = self._armed
            self._armed = False
        if wake:
            self._wake_waiter()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped_total(self) -> int:
        """Events dropped over the subscriber's life, for status."""
        return self._dropped_total

    @property
    def dropped_bytes(self) -> int:
        """Bytes of the events dropped over the subscriber's life."""
        return self._dropped_bytes

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: buffered plus drained but not yet sent."""
        return self._bytes

    def _wake_waiter(self) -> None:
        assert self._loop is not None and self._wake is not None  # armed only by wait()
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:
            pass  # the loop is closed: nobody is left to wake


class SubscriberHub:
    """All tail subscribers plus a ring of recent items for `since` replay, bounded in bytes.

    `publish` is called from the pipeline thread, `subscribe`/`unsubscribe` from the asyncio
    thread. Subscribing replays the ring and registers the subscriber under the same lock that
    `publish` appends under, so every event reaches a new subscriber exactly once: from the ring
    or live.
    """

    def __init__(self, replay_size: int = 1000, replay_bytes: int = DEFAULT_REPLAY_BYTES,
                 max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
                 total_buffer_bytes: int = DEFAULT_TOTAL_BUFFER_BYTES) -> None:
        if replay_size < 0:
            raise ValueError("replay_size must not be negative, got %r" % (replay_size,))
        if replay_bytes < 0:
            raise ValueError("replay_bytes must not be negative, got %r" % (replay_bytes,))
        if max_buffer_bytes <= 0:
            raise ValueError("max_buffer_bytes must be positive, got %r" % (max_buffer_bytes,))
        self.replay_size = replay_size
        self.replay_bytes = replay_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self.budget = SharedBudget(total_buffer_bytes)
        self._lock = threading.Lock()
        self._ring: Deque[TailItem] = deque()
        self._ring_bytes = 0
        self._subs: Tuple[Subscriber, ...] = ()
        self._dropped_gone = 0         # drops of subscribers that have left
        self._dropped_bytes_gone = 0

    def publish(self, event: Event, sessions: Collection[str] = ()) -> None:
        """Hand an event (and the sessions it was recorded into) to every subscriber that wants it."""
        with self._lock:
            keep = bool(self._subs) or (self.replay_size > 0 and self.replay_bytes > 0)
        if not keep:
            return  # nobody to serve, nothing to remember: skip the encoding
        item = TailItem.of(event, sessions)  # outside the lock: encoding a large body takes a while
        with self._lock:
            self._remember(item)
            subs = self._subs
        for sub in subs:
            sub.offer(item)

    def _remember(self, item: TailItem) -> None:
        """Append to the ring within its budgets (the caller holds the lock)."""
        if item.body is None or item.size > self.replay_bytes or self.replay_size == 0:
            return
        self._ring.append(item)
        self._ring_bytes += item.size
        while len(self._ring) > self.replay_size or self._ring_bytes > self.replay_bytes:
            self._ring_bytes -= self._ring.popleft().size

    def subscribe(self, filter: EventFilter, scope: TailScope, since: Optional[float] = None,
                  max_buffer: int = 1000) -> Subscriber:
        """A new subscriber; with `since` (POSIX seconds) it starts with the ring's events from then on."""
        sub = Subscriber(filter, scope, max_buffer, self.max_buffer_bytes, self.budget)
        with self._lock:
            if since is not None:
                for item in self._ring:
                    if item.when >= since:
                        sub.offer(item)
            self._subs = self._subs + (sub,)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove and close a subscriber; unknown ones are ignored so the transport may call it twice."""
        with self._lock:
            if sub in self._subs:
                self._dropped_gone += sub.dropped_total
                self._dropped_bytes_gone += sub.dropped_bytes
            self._subs = tuple(s for s in self._subs if s is not sub)
        sub.close()

    def close(self) -> None:
        """Close every subscriber (daemon shutdown) so each stream can end."""
        with self._lock:
            subs, self._subs = self._subs, ()
        for sub in subs:
            sub.close()

    def count(self) -> int:
        return len(self._subs)

    def stats(self) -> Dict[str, int]:
        """Counters for status: bytes held for tails and the replay ring, events dropped for tails."""
        with self._lock:
            subs = self._subs
            return {
                "tail_buffered_bytes": self.budget.used,
                "tail_replay_bytes": self._ring_bytes,
                "tail_dropped": self._dropped_gone + sum(s.dropped_total for s in subs),
                "tail_dropped_bytes": self._dropped_bytes_gone + sum(s.dropped_bytes for s in subs),
            }
