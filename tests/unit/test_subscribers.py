"""Tail fan-out: bounded buffers (in events and bytes) with drop counts, shared encoded items, scope
and filter, since-replay, cross-thread wake-ups."""
from __future__ import annotations

import asyncio
import threading

import pytest

from oisp_daemon.sessions.event_filter import EventFilter, TailScope
from oisp_ctl import protocol
from oisp_daemon.export.tail import (ITEM_OVERHEAD, SharedBudget, Subscriber, SubscriberHub,
                                     TailItem, encode_event, event_time, filter_view)

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


def ids(items):
    return [i.event()["event_id"] for i in items]


def events(drained):
    """A drain's items decoded again, with its dropped count."""
    items, dropped = drained
    return [i.event() for i in items], dropped


def item(event, sessions=()):
    return TailItem.of(event, sessions)


def big_event(n, size, uid=1000):
    event = make_event(n, uid=uid)
    event["data"] = {"body": "x" * size}
    return event


def test_event_time_parses_rfc3339():
    assert event_time({"ts": "2025-12-22T20:15:05.123456Z"}) == pytest.approx(T0 + 0.123456)
    assert event_time({"ts": "2025-12-22T21:15:05+01:00"}) == T0
    assert event_time({"ts": "yesterday"}) is None
    assert event_time({}) is None


def test_subscriber_receives_published_events_in_order(hub):
    sub = hub.subscribe(EventFilter(), EVERYTHING)
    for n in range(3):
        hub.publish(make_event(n))
    assert events(sub.drain()) == ([make_event(0), make_event(1), make_event(2)], 0)
    assert sub.drain() == ([], 0)


def test_slow_reader_gets_a_bounded_buffer_and_a_dropped_count(hub):
    sub = hub.subscribe(EventFilter(), EVERYTHING, max_buffer=3)
    for n in range(10):
        hub.publish(make_event(n))
    assert sub.buffered == 3
    drained, dropped = sub.drain()
    assert ids(drained) == ["e0", "e1", "e2"]  # the gap follows every returned event
    assert dropped == 7
    for i in drained:
        sub.done(i)
    hub.publish(make_event(10))
    assert events(sub.drain()) == ([make_event(10)], 0)
    assert sub.dropped_total == 7


def test_offer_reports_whether_the_event_was_queued():
    sub = Subscriber(EventFilter(types=("ai.*",)), EVERYTHING, max_buffer=1)
    assert sub.offer(item(make_event(0))) is True
    assert sub.offer(item(make_event(1))) is False  # full: dropped
    assert sub.offer(item(make_event(2, event_type="file.open"))) is False  # unwanted: not counted
    assert events(sub.drain()) == ([make_event(0)], 1)


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
    with pytest.raises(ValueError):
        SubscriberHub(replay_bytes=-1)
    with pytest.raises(ValueError):
        SubscriberHub(max_buffer_bytes=0)
    with pytest.raises(ValueError):
        SubscriberHub(total_buffer_bytes=0)


def test_wait_wakes_on_an_event_from_another_thread(hub):
    sub = hub.subscribe(EventFilter(), EVERYTHING)

    async def consume():
        waiter = asyncio.ensure_future(sub.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        threading.Thread(target=hub.publish, args=(make_event(0),)).start()
        await asyncio.wait_for(waiter, 5)
        return events(sub.drain())

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
            items, lost = sub.drain()
            for i in items:
                sub.done(i)
            received += [i.event() for i in items]
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
    numbers = [int(i.event()["event_id"][1:]) for i in sub.drain()[0]]
    assert numbers == list(range(numbers[0], total))  # replayed then live: no gap, no repeat


# -- memory in bytes ----------------------------------------------------------------------------

def test_item_bytes_are_the_wire_form_of_the_event():
    event = {"event_id": "e", "event_type": "ai.request", "data": {"text": "é \u2028 \"q\""}}
    head, end = protocol.event_item_frame(7)
    assert head + item(event).body + end == protocol.encode(protocol.event_item(7, event))
    assert item(event).size == ITEM_OVERHEAD + len(encode_event(event))


def test_filter_view_matches_like_the_whole_event():
    event = big_event(0, 1000, uid=42)
    event.update(process={"pid": 7, "name": "python3", "cmdline": "x" * 100},
                 data={"provider": {"name": "OpenAI", "endpoint": "e"}, "body": "x" * 1000})
    view = filter_view(event)
    assert len(encode_event(view)) < 200
    for f in (EventFilter(types=("ai.*",)), EventFilter(types=("file.*",)), EventFilter(pids=(7,)),
              EventFilter(pids=(8,)), EventFilter(comms=("python3",)), EventFilter(uids=(42,)),
              EventFilter(uids=(1,)), EventFilter(providers=("openai",)),
              EventFilter(providers=("anthropic",))):
        assert f.matches(view) == f.matches(event), f
    assert TailScope(42).allows(view) and not TailScope(1).allows(view)


def test_one_item_is_shared_by_every_subscriber_and_the_ring():
    hub = SubscriberHub(replay_size=10)
    subs = [hub.subscribe(EventFilter(), EVERYTHING) for _ in range(20)]
    hub.publish(big_event(0, 1 << 20))
    drained = [s.drain()[0][0] for s in subs]
    assert all(d is drained[0] for d in drained)  # one object, no copy per subscriber
    assert hub.subscribe(EventFilter(), EVERYTHING, since=0).drain()[0][0] is drained[0]
    # held by 21 subscribers, counted once against the shared budget
    assert hub.budget.used == drained[0].size


def test_subscriber_buffer_is_bounded_in_bytes():
    size = 100_000
    hub = SubscriberHub(max_buffer_bytes=3 * (size + ITEM_OVERHEAD + 200))
    sub = hub.subscribe(EventFilter(), EVERYTHING)
    for n in range(10):
        hub.publish(big_event(n, size))
    assert sub.buffered == 3
    assert sub.buffered_bytes <= hub.max_buffer_bytes
    drained, dropped = sub.drain()
    assert (ids(drained), dropped) == (["e0", "e1", "e2"], 7)
    assert sub.dropped_bytes >= 7 * size


def test_drained_items_count_until_they_are_sent():
    size = 100_000
    hub = SubscriberHub(max_buffer_bytes=2 * (size + ITEM_OVERHEAD + 200))
    sub = hub.subscribe(EventFilter(), EVERYTHING)
    hub.publish(big_event(0, size))
    hub.publish(big_event(1, size))
    drained, _ = sub.drain()
    hub.publish(big_event(2, size))  # the two drained ones are still in flight: no room
    assert sub.drain() == ([], 1)
    sub.done(drained[0])
    hub.publish(big_event(3, size))
    assert ids(sub.drain()[0]) == ["e3"]
    sub.done(drained[0])  # a repeat is harmless
    sub.done(drained[1])
    assert sub.buffered_bytes == ITEM_OVERHEAD + len(encode_event(big_event(3, size)))


def test_an_empty_buffer_takes_one_event_larger_than_its_budget():
    hub = SubscriberHub(max_buffer_bytes=1000, total_buffer_bytes=1000)
    sub = hub.subscribe(EventFilter(), EVERYTHING)
    hub.publish(big_event(0, 50_000))
    hub.publish(big_event(1, 10))
    drained, dropped = sub.drain()
    assert (ids(drained), dropped) == (["e0"], 1)


def test_total_budget_bounds_distinct_items_across_subscribers():
    size = 100_000
    one = size + ITEM_OVERHEAD + 200
    hub = SubscriberHub(max_buffer_bytes=10 * one, total_buffer_bytes=4 * one)
    # each uid's tail sees only its own events: nothing is shared between them
    subs = [hub.subscribe(EventFilter(), TailScope(uid)) for uid in range(4)]
    for n in range(4):  # each of the four holds one item and reads no more
        hub.publish(big_event(n, size, uid=n))
    for n in range(4, 8):  # a second item fits nobody: the total is spent
        hub.publish(big_event(n, size, uid=n % 4))
    assert hub.budget.used <= 4 * one
    assert [s.buffered for s in subs] == [1, 1, 1, 1]
    assert [s.drain()[1] for s in subs] == [1, 1, 1, 1]  # each is told it lost one
    assert hub.stats()["tail_dropped"] == 4


def test_non_reading_tails_cannot_starve_a_reader_that_keeps_up():
    size = 100_000
    one = size + ITEM_OVERHEAD + 200
    hub = SubscriberHub(total_buffer_bytes=2 * one)
    stuck = [hub.subscribe(EventFilter(), TailScope(65534)) for _ in range(3)]
    reader = hub.subscribe(EventFilter(), TailScope(0))
    for n in range(6):
        hub.publish(big_event(n, size, uid=65534))  # the flood fills the total budget
    for n in range(6, 10):
        hub.publish(big_event(n, size, uid=0))
        drained, dropped = reader.drain()
        assert (ids(drained), dropped) == (["e%d" % n], 0)
        reader.done(drained[0])
    assert all(s.buffered_bytes <= hub.max_buffer_bytes for s in stuck)


def test_closing_a_subscriber_frees_its_share_of_the_budget():
    hub = SubscriberHub(total_buffer_bytes=10 << 20)
    sub = hub.subscribe(EventFilter(), EVERYTHING)
    other = hub.subscribe(EventFilter(), EVERYTHING)
    hub.publish(big_event(0, 200_000))
    hub.publish(big_event(1, 200_000))
    sub.drain()  # one in flight, one (after the next publish) buffered
    hub.publish(big_event(2, 200_000))
    hub.unsubscribe(other)
    assert hub.budget.used > 0
    hub.unsubscribe(sub)
    assert hub.budget.used == 0
    assert sub.buffered_bytes == 0


def test_shared_budget_counts_an_item_once():
    budget = SharedBudget(1000)
    a = TailItem(0.0, {}, b"x" * 300, ())
    b = TailItem(0.0, {}, b"y" * 300, ())
    assert budget.hold(a) and budget.hold(a)
    assert budget.used == a.size
    assert not budget.hold(b)  # 812 + 812 > 1000
    budget.release(a)
    assert budget.used == a.size
    budget.release(a)
    assert budget.used == 0 and budget.hold(b)


def test_replay_ring_is_bounded_in_bytes():
    size = 100_000
    one = size + ITEM_OVERHEAD + 200
    hub = SubscriberHub(replay_size=1000, replay_bytes=3 * one)
    for n in range(10):
        hub.publish(big_event(n, size))
    assert ids(hub.subscribe(EventFilter(), EVERYTHING, since=0).drain()[0]) == ["e7", "e8", "e9"]
    assert hub.stats()["tail_replay_bytes"] <= 3 * one
    hub.publish(big_event(10, 10 * size))  # larger than the whole ring: not kept at all
    assert ids(hub.subscribe(EventFilter(), EVERYTHING, since=0).drain()[0]) == ["e7", "e8", "e9"]


def test_an_event_that_is_not_json_is_reported_as_dropped_in_place(hub):
    sub = hub.subscribe(EventFilter(), EVERYTHING)
    hub.publish(make_event(0))
    bad = make_event(1)
    bad["data"] = {"x": float("nan")}
    hub.publish(bad)
    hub.publish(make_event(2))
    drained, dropped = sub.drain()
    assert [i.body is None for i in drained] == [False, True, False]
    assert ids(i for i in drained if i.body is not None) == ["e0", "e2"]
    # never remembered for replay
    assert ids(hub.subscribe(EventFilter(), EVERYTHING, since=0).drain()[0]) == ["e0", "e2"]


def test_publish_without_subscribers_or_ring_keeps_nothing():
    hub = SubscriberHub(replay_size=0)
    hub.publish(big_event(0, 1 << 20))
    assert hub.stats() == {"tail_buffered_bytes": 0, "tail_replay_bytes": 0, "tail_dropped": 0,
                           "tail_dropped_bytes": 0}
