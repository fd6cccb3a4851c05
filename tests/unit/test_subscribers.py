"""Tail fan-out: bounded buffers with drop counts, scope and filter, since-replay, cross-thread wake-ups."""
from __future__ import annotations

import asyncio
import threading

import pytest

from oisp_daemon.sessions.event_filter import EventFilter, TailScope
from oisp_daemon.export.tail import Subscriber, SubscriberHub, event_time

EVERYTHING = TailScope()
T0 = 1_766_434_505.0  # 2025-12-22T20:15:05Z


def make_event(n, uid=1000, event_type="ai.request", ts=None):
    return {
        "event_id": "e%d" % n,
        "event_type": event_type,
        "ts": ts if ts is not None else "2025-12-22T20:15:%02d.000000Z" % (5 + n),
        "actor": {"uid": uid},
    }


@pytest.fixture
def hub():
    return SubscriberHub(replay_size=5)


def ids(events):
    return [e["event_id"] for e in events]


def test_event_time_parses_rfc3339():
    assert event_time({"ts": "2025-12-22T20:15:05.123456Z"}) == pytest.approx(T0 + 0.123456)
    assert event_time({"ts": "2025-12-22T21:15:05+01:00"}) == T0
    assert event_time({"ts": "yesterday"}) is None
    assert event_time({}) is None


def test_subscriber_receives_published_events_in_order(hub):
    sub = hub.subscribe(EventFilter(), EVERYTHING)
    for n in range(3):
        hub.publish(make_event(n))
    assert sub.drain() == ([make_event(0), make_event(1), make_event(2)], 0)
    assert sub.drain() == ([], 0)


def test_slow_reader_gets_a_bounded_buffer_and_a_dropped_count(hub):
    sub = hub.subscribe(EventFilter(), EVERYTHING, max_buffer=3)
    for n in range(10):
        hub.publish(make_event(n))
    assert sub.buffered == 3
    events, dropped = sub.drain()
    assert ids(events) == ["e0", "e1", "e2"]  # the gap follows every returned event
    assert dropped == 7
    hub.publish(make_event(10))
    assert sub.drain() == ([make_event(10)], 0)
    assert sub.dropped_total == 7


def test_offer_reports_whether_the_event_was_queued():
    sub = Subscriber(EventFilter(types=("ai.*",)), EVERYTHING, max_buffer=1)
    assert sub.offer(make_event(0)) is True
    assert sub.offer(make_event(1)) is False  # full: dropped
    assert sub.offer(make_event(2, event_type="file.open")) is False  # unwanted: not counted
    assert sub.drain() == ([make_event(0)], 1)


def test_filter_and_scope_apply(hub):
    mine = hub.subscribe(EventFilter(), TailScope(1000))
    ai_only = hub.subscribe(EventFilter(types=("ai.*",)), EVERYTHING)
    hub.publish(make_event(0, uid=1000))
    hub.publish(make_event(1, uid=0))
    hub.publish(make_event(2, uid=1000, event_type="process.exec"))
    assert ids(mine.drain()[0]) == ["e0", "e2"]
    assert ids(ai_only.drain()[0]) == ["e0", "e1"]


def test_session_filter_uses_the_sessions_an_event_was_recorded_into(hub):
    sub = hub.subscribe(EventFilter(sessions=("s1",)), EVERYTHING)
    hub.publish(make_event(0))
    hub.publish(make_event(1), sessions=("s0", "s1"))
    hub.publish(make_event(2), sessions=("s2",))
    assert ids(sub.drain()[0]) == ["e1"]


def test_since_replays_matching_events_from_the_ring(hub):
    for n in range(8):  # the ring keeps e3..e7
        hub.publish(make_event(n, uid=1000 if n % 2 else 0))
    sub = hub.subscribe(EventFilter(), EVERYTHING, since=T0 + 4)
    assert ids(sub.drain()[0]) == ["e4", "e5", "e6", "e7"]
    own = hub.subscribe(EventFilter(), TailScope(1000), since=0)
    assert ids(own.drain()[0]) == ["e3", "e5", "e7"]


def test_no_since_means_no_replay(hub):
    hub.publish(make_event(0))
    sub = hub.subscribe(EventFilter(), EVERYTHING)
    assert sub.drain() == ([], 0)


def test_replay_then_live_without_duplicates(hub):
    hub.publish(make_event(0))
    sub = hub.subscribe(EventFilter(), EVERYTHING, since=0)
    hub.publish(make_event(1))
    assert ids(sub.drain()[0]) == ["e0", "e1"]


def test_replay_keeps_session_membership(hub):
    hub.publish(make_event(0), sessions=("s1",))
    hub.publish(make_event(1))
    sub = hub.subscribe(EventFilter(sessions=("s1",)), EVERYTHING, since=0)
    assert ids(sub.drain()[0]) == ["e0"]


def test_event_without_ts_replays_by_publish_time(hub):
    hub.publish({"event_id": "x", "event_type": "ai.request"})
    assert ids(hub.subscribe(EventFilter(), EVERYTHING, since=T0).drain()[0]) == ["x"]


def test_unsubscribe_closes_and_stops_delivery(hub):
    sub = hub.subscribe(EventFilter(), EVERYTHING)
    assert hub.count() == 1
    hub.unsubscribe(sub)
    hub.unsubscribe(sub)
    hub.publish(make_event(0))
    assert hub.count() == 0
    assert sub.closed
    assert sub.drain() == ([], 0)


def test_hub_close_closes_every_subscriber(hub):
    subs = [hub.subscribe(EventFilter(), EVERYTHING) for _ in range(3)]
    hub.close()
    assert hub.count() == 0
    assert all(s.closed for s in subs)


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError):
        Subscriber(EventFilter(), EVERYTHING, max_buffer=0)
    with pytest.raises(ValueError):
        SubscriberHub(replay_size=-1)


def test_wait_wakes_on_an_event_from_another_thread(hub):
    sub = hub.subscribe(EventFilter(), EVERYTHING)

    async def consume():
        waiter = asyncio.ensure_future(sub.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        threading.Thread(target=hub.publish, args=(make_event(0),)).start()
        await asyncio.wait_for(waiter, 5)
        return sub.drain()

    assert asyncio.run(consume()) == ([make_event(0)], 0)


def test_wait_returns_at_once_when_something_is_buffered(hub):
    sub = hub.subscribe(EventFilter(), EVERYTHING)
    hub.publish(make_event(0))
    asyncio.run(asyncio.wait_for(sub.wait(), 5))


def test_wait_wakes_on_close(hub):
    sub = hub.subscribe(EventFilter(), EVERYTHING)

    async def consume():
        waiter = asyncio.ensure_future(sub.wait())
        await asyncio.sleep(0.01)
        threading.Thread(target=hub.unsubscribe, args=(sub,)).start()
        await asyncio.wait_for(waiter, 5)

    asyncio.run(consume())
    assert sub.closed


def test_threaded_producer_with_asyncio_consumer_loses_nothing_unreported():
    hub = SubscriberHub(replay_size=10)
    total = 5000

    async def consume():
        sub = hub.subscribe(EventFilter(), EVERYTHING, max_buffer=64)
        producer = threading.Thread(
            target=lambda: [hub.publish(make_event(n, ts="2025-12-22T20:15:05Z")) for n in range(total)])
        producer.start()
        received, dropped = [], 0
        while len(received) + dropped < total:
            await asyncio.wait_for(sub.wait(), 5)
            events, lost = sub.drain()
            received += events
            dropped += lost
        producer.join()
        return received, dropped

    received, dropped = asyncio.run(consume())
    numbers = [int(e["event_id"][1:]) for e in received]
    assert numbers == sorted(set(numbers))  # in order, no duplicates
    assert len(received) + dropped == total


def test_subscribing_while_publishing_gets_each_event_exactly_once():
    hub = SubscriberHub(replay_size=50)
    total = 3000
    started = threading.Event()

    def produce():
        for n in range(total):
            hub.publish(make_event(n, ts="2025-12-22T20:15:05Z"))
            if n == 100:
                started.set()

    producer = threading.Thread(target=produce)
    producer.start()
    started.wait(5)
    sub = hub.subscribe(EventFilter(), EVERYTHING, since=0, max_buffer=total)
    producer.join()
    numbers = [int(e["event_id"][1:]) for e in sub.drain()[0]]
    assert numbers == list(range(numbers[0], total))  # replayed then live: no gap, no repeat
