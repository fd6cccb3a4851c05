"""Fan-out of events to tail subscribers, never blocking capture.

The pipeline thread publishes every event; each subscriber (one per `tail` request, consumed by an
asyncio transport) has a bounded buffer. When a reader is slow its buffer fills and further events
are dropped and counted instead of waiting: back-pressure would stall the pipeline and, behind it,
the BPF ring buffer, losing captured traffic for everyone. The count comes out with the next drain
so the transport can send a `dropped` notice where the gap is.

A short ring of recent events lets a new subscriber start with `--since` history.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Collection, Deque, Dict, List, Optional, Tuple

from ..sessions.event_filter import EventFilter, TailScope

Event = Dict[str, Any]


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


class Subscriber:
    """One tail stream: its filter, its scope and a bounded buffer of events waiting to be sent.

    The producer side (`offer`) may run on any thread and never blocks beyond a short lock; the
    consumer side (`wait`, `drain`) runs on one asyncio loop.
    """

    def __init__(self, filter: EventFilter, scope: TailScope, max_buffer: int = 1000) -> None:
        if max_buffer <= 0:
            raise ValueError("max_buffer must be positive, got %r" % (max_buffer,))
        self.filter = filter
        self.scope = scope
        self.max_buffer = max_buffer
        self._lock = threading.Lock()
        self._buf: Deque[Event] = deque()
        self._dropped = 0          # since the last drain
        self._dropped_total = 0
        self._closed = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake: Optional[asyncio.Event] = None
        self._armed = False        # a waiter is asleep and wants one wake-up

    def wants(self, event: Event, sessions: Collection[str] = ()) -> bool:
        """Whether the event is in scope and passes the filter for any session it was recorded into."""
        if not self.scope.allows(event):
            return False
        return any(self.filter.matches(event, s) for s in (sessions or (None,)))

    def offer(self, event: Event, sessions: Collection[str] = ()) -> bool:
        """Queue the event if wanted; drop and count it if the buffer is full. Never blocks.

        Returns whether it was queued.
        """
        if not self.wants(event, sessions):
            return False
        with self._lock:
            if self._closed:
                return False
            if len(self._buf) >= self.max_buffer:
                self._dropped += 1
                self._dropped_total += 1
                queued = False
            else:
                self._buf.append(event)
                queued = True
            wake = self._armed
            self._armed = False
        if wake:
            self._wake_waiter()
        return queued

    def drain(self) -> Tuple[List[Event], int]:
        """Take every buffered event and the number dropped since the last drain.

        Events are dropped only while the buffer is full, so every dropped event came after every
        returned one: send the events, then the `dropped` notice.
        """
        with self._lock:
            events = list(self._buf)
            self._buf.clear()
            dropped, self._dropped = self._dropped, 0
        return events, dropped

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
        """Stop accepting events and wake the consumer so it can end the stream."""
        with self._lock:
            self._closed = True
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
    def buffered(self) -> int:
        return len(self._buf)

    def _wake_waiter(self) -> None:
        assert self._loop is not None and self._wake is not None  # armed only by wait()
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:
            pass  # the loop is closed: nobody is left to wake


class SubscriberHub:
    """All tail subscribers plus a ring of the last `replay_size` events for `since` replay.

    `publish` is called from the pipeline thread, `subscribe`/`unsubscribe` from the asyncio
    thread. Subscribing replays the ring and registers the subscriber under the same lock that
    `publish` appends under, so every event reaches a new subscriber exactly once: from the ring
    or live.
    """

    def __init__(self, replay_size: int = 1000) -> None:
        if replay_size < 0:
            raise ValueError("replay_size must not be negative, got %r" % (replay_size,))
        self._lock = threading.Lock()
        self._ring: Deque[Tuple[float, Event, Tuple[str, ...]]] = deque(maxlen=replay_size)
        self._subs: Tuple[Subscriber, ...] = ()

    def publish(self, event: Event, sessions: Collection[str] = ()) -> None:
        """Hand an event (and the sessions it was recorded into) to every subscriber that wants it."""
        when = event_time(event)
        entry = (time.time() if when is None else when, event, tuple(sessions))
        with self._lock:
            self._ring.append(entry)
            subs = self._subs
        for sub in subs:
            sub.offer(event, entry[2])

    def subscribe(self, filter: EventFilter, scope: TailScope, since: Optional[float] = None,
                  max_buffer: int = 1000) -> Subscriber:
        """A new subscriber; with `since` (POSIX seconds) it starts with the ring's events from then on."""
        sub = Subscriber(filter, scope, max_buffer)
        with self._lock:
            if since is not None:
                for when, event, sessions in self._ring:
                    if when >= since:
                        sub.offer(event, sessions)
            self._subs = self._subs + (sub,)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove and close a subscriber; unknown ones are ignored so the transport may call it twice."""
        with self._lock:
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
