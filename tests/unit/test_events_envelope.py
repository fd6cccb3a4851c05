"""ULIDs, RFC 3339 timestamps, the kernel clock mapping and the envelope."""
from __future__ import annotations

import datetime
import re
import threading
import time

import pytest

from oisp_daemon import __version__
from oisp_daemon.events.envelope import (
    Clock,
    UlidGenerator,
    derived_envelope,
    encode_ulid,
    envelope,
    make_confidence,
    make_source,
    new_ulid,
    rfc3339_from_ns,
    ulid_time_ms,
)
from tests.support.oisp_schema import assert_valid_event

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def test_ulid_shape_and_time():
    ulid = new_ulid()
    assert ULID.match(ulid)
    now_ms = datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000
    assert abs(ulid_time_ms(ulid) - now_ms) < 5000


def test_ulid_encoding_known_values():
    assert encode_ulid(0, 0) == "0" * 26
    assert encode_ulid((1 << 48) - 1, (1 << 80) - 1) == "7" + "Z" * 25
    # The ULID spec's example 01ARZ3NDEKTSV4RRFFQ69G5FAV carries timestamp 1469922850259.
    assert encode_ulid(1469922850259, 0)[:10] == "01ARZ3NDEK"
    assert ulid_time_ms("01ARZ3NDEKTSV4RRFFQ69G5FAV") == 1469922850259


def test_ulids_are_monotonic_within_a_millisecond():
    gen = UlidGenerator(now_ms=lambda: 1_700_000_000_000, random_bits=lambda: 5)
    ids = [gen.new() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert all(ulid_time_ms(u) == 1_700_000_000_000 for u in ids)


def test_ulids_stay_ordered_when_the_wall_clock_steps_back():
    times = iter([2_000, 2_000, 1_000, 3_000])
    gen = UlidGenerator(now_ms=lambda: next(times), random_bits=lambda: 1 << 79)
    ids = [gen.new() for _ in range(4)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [ulid_time_ms(u) for u in ids] == [2_000, 2_000, 2_000, 3_000]


def test_ulid_random_overflow_borrows_the_next_millisecond():
    gen = UlidGenerator(now_ms=lambda: 10, random_bits=lambda: (1 << 80) - 1)
    first, second = gen.new(), gen.new()
    assert second > first and ulid_time_ms(second) == 11


def test_ulids_unique_across_threads():
    ids = []
    lock = threading.Lock()

    def make():
        batch = [new_ulid() for _ in range(500)]
        with lock:
            ids.extend(batch)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 2000


@pytest.mark.parametrize(
    "wall_ns, expected",
    [
        (0, "1970-01-01T00:00:00.000000Z"),
        (1_703_254_216_345_678_901, "2023-12-22T14:10:16.345678Z"),
        (1_703_254_216_999_999_999, "2023-12-22T14:10:16.999999Z"),
        (951_782_400_000_001_000, "2000-02-29T00:00:00.000001Z"),
    ],
)
def test_rfc3339_from_ns(wall_ns, expected):
    assert rfc3339_from_ns(wall_ns) == expected


def test_clock_maps_monotonic_to_wall_time():
    clock = Clock(offset_ns=1_700_000_000_000_000_000)
    assert clock.wall_ns(5_000_000_000) == 1_700_000_005_000_000_000
    assert clock.rfc3339(5_000_000_000) == "2023-11-14T22:13:25.000000Z"


def test_clock_measures_offset_at_start():
    clock = Clock()
    assert abs(clock.wall_ns(time.monotonic_ns()) - time.time_ns()) < 50_000_000


def test_envelope_fields_and_schema():
    clock = Clock(offset_ns=1_700_000_000_000_000_000)
    process = {"pid": 42, "name": "python3"}
    event = envelope(
        "ai.request",
        1_234_567_890,
        clock,
        make_source("tls_boundary", "ssl_write"),
        make_confidence(reasons=["tls_boundary_capture"]),
        host={"hostname": "h", "os": "linux"},
        process=process,
        data={"request_id": "req_1"},
        related=[("01ARYZ6S41TSV4RRFFQ69G5FAV", "caused_by")],
    )
    assert event["oisp_version"] == "0.1"
    assert event["ts_mono"] == 1_234_567_890
    assert event["ts"] == "2023-11-14T22:13:21.234567Z"
    assert event["source"] == {"collector": "oisp-sensor", "collector_version": __version__, "capture_method": "tls_boundary", "capture_point": "ssl_write"}
    assert event["confidence"] == {"level": "high", "completeness": "full", "reasons": ["tls_boundary_capture"]}
    assert event["related_events"] == [{"event_id": "01ARYZ6S41TSV4RRFFQ69G5FAV", "relationship": "caused_by"}]
    assert "actor" not in event
    assert_valid_event(event)
    event["process"]["name"] = "edited"
    assert process["name"] == "python3"  # context blocks are copied


def test_derived_envelope_shares_time_and_context_with_its_parent():
    clock = Clock(offset_ns=0)
    parent = envelope("ai.response", 99, clock, make_source("tls_boundary", "ssl_read"), make_confidence(), process={"pid": 7}, host={"hostname": "h"})
    child = derived_envelope("agent.tool_call", parent, make_source("tls_boundary", "ssl_read"), make_confidence(), data={"tool": {"name": "t"}}, related=[(parent["event_id"], "caused_by")])
    assert (child["ts"], child["ts_mono"], child["process"], child["host"]) == (parent["ts"], 99, {"pid": 7}, {"hostname": "h"})
    assert child["event_id"] != parent["event_id"] and "actor" not in child
    assert child["related_events"] == [{"event_id": parent["event_id"], "relationship": "caused_by"}]
    assert_valid_event(child)
