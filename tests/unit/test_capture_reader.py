"""Chunk continuity: lost kernel records become gaps, never silent splices."""
from __future__ import annotations

import queue
import threading

import pytest

from oisp_daemon.capture import records as rec
from oisp_daemon.capture.reader import RECORD_OVERHEAD, RecordQueue, StreamAssembler
from oisp_daemon.capture.records import DataChunk


def chunk(seq, offset, total, data, direction="write", ssl=0x10, read_failed=False):
    return DataChunk(direction, 7, 7, 0, ssl, seq, total, offset, 1000 + seq, "python3", data, read_failed)


def kinds(events):
    return [type(e).__name__ for e in events]


def test_contiguous_calls_and_chunks_pass_through():
    asm = StreamAssembler()
    out = asm.feed(chunk(0, 0, 5, b"hello"))
    out += asm.feed(chunk(1, 0, 6, b"abc", "read"))
    out += asm.feed(chunk(1, 3, 6, b"def", "read"))
    out += asm.feed(chunk(2, 0, 1, b"!"))
    assert kinds(out) == ["StreamData"] * 4
    assert b"".join(e.data for e in out) == b"helloabcdef!"


def test_missing_call_sequence_is_a_gap():
    asm = StreamAssembler()
    asm.feed(chunk(0, 0, 2, b"ab"))
    out = asm.feed(chunk(2, 0, 2, b"cd"))
    assert kinds(out) == ["StreamGap", "StreamData"]


def test_missing_tail_chunk_of_a_call_is_a_gap():
    asm = StreamAssembler()
    asm.feed(chunk(0, 0, 32768, b"x" * 16384))
    out = asm.feed(chunk(1, 0, 1, b"y"))
    assert kinds(out) == ["StreamGap", "StreamData"]


def test_first_sight_mid_call_is_a_gap_but_at_call_start_is_not():
    assert kinds(StreamAssembler().feed(chunk(5, 16384, 32768, b"z"))) == ["StreamGap", "StreamData"]
    assert kinds(StreamAssembler().feed(chunk(5, 0, 1, b"z"))) == ["StreamData"]


def test_unreadable_user_buffer_is_a_gap_without_data():
    asm = StreamAssembler()
    out = asm.feed(chunk(0, 0, 10, b"", read_failed=True))
    assert kinds(out) == ["StreamGap"]
    assert kinds(asm.feed(chunk(1, 0, 1, b"a"))) == ["StreamData"]


def test_connections_are_independent_and_forgotten_on_close():
    asm = StreamAssembler()
    asm.feed(chunk(0, 0, 1, b"a", ssl=1))
    assert kinds(asm.feed(chunk(0, 0, 1, b"b", ssl=2))) == ["StreamData"]
    asm.forget((7, 1))
    assert kinds(asm.feed(chunk(0, 0, 1, b"c", ssl=1))) == ["StreamData"]


# -- the record queue: bounded in bytes, fair by uid ---------------------------------------------

def _chunk(uid, size, seq=0, offset=0):
    return rec.DataChunk("write", 100 + uid, 1, uid, 0xAB, seq, 1 << 20, offset, 0, "x", b"x" * size, False)


def test_record_queue_drops_a_uid_over_its_share_and_counts_it():
    q = RecordQueue(max_bytes=10 * (16384 + RECORD_OVERHEAD), uid_share=0.5)
    flood = [q.put(_chunk(65534, 16384, offset=i * 16384)) for i in range(8)]
    assert flood == [True] * 5 + [False] * 3  # half of the bytes, then dropped
    assert q.put(_chunk(1000, 16384)) is True  # another uid still gets in
    assert q.dropped_by_uid() == {"65534": {"bytes": 3 * 16384, "records": 3}}
    got = [q.get(timeout=0) for _ in range(6)]
    assert [r.uid for r in got] == [65534] * 5 + [1000]
    assert q.queued_bytes == 0
    with pytest.raises(queue.Empty):
        q.get(timeout=0)


def test_record_queue_makes_the_poller_wait_when_full():
    q = RecordQueue(max_bytes=2 * (100 + RECORD_OVERHEAD), uid_share=1.0)
    assert q.put(_chunk(1, 100)) and q.put(_chunk(2, 100))
    done = threading.Event()
    threading.Thread(target=lambda: (q.put(_chunk(3, 100)), done.set()), daemon=True).start()
    assert not done.wait(0.2)  # full: back-pressure, nothing dropped
    q.get(timeout=0)
    assert done.wait(5)
    assert q.dropped_by_uid() == {}


def test_a_dropped_chunk_shows_as_a_gap_downstream():
    q = RecordQueue(max_bytes=4 * (16384 + RECORD_OVERHEAD), uid_share=0.5)
    for i in range(4):
        q.put(_chunk(7, 16384, offset=i * 16384))
    assembler = StreamAssembler()
    events = [e for _ in range(2) for e in assembler.feed(q.get(timeout=0))]
    q.put(_chunk(7, 16384, offset=4 * 16384))  # chunks 2 and 3 were dropped
    events += assembler.feed(q.get(timeout=0))
    assert [type(e).__name__ for e in events] == ["StreamData", "StreamData", "StreamGap", "StreamData"]


def test_record_queue_takes_a_wake_marker_unless_full():
    q = RecordQueue(max_bytes=2 * RECORD_OVERHEAD, uid_share=1.0)
    marker = object()
    q.put_nowait(marker)  # the sensor's wake-up reaches a waiting consumer
    assert q.get(timeout=0) is marker
    assert q.put(_chunk(1, 0)) and q.put(_chunk(2, 0))
    with pytest.raises(queue.Full):
        q.put_nowait(marker)  # records are waiting: the consumer is awake anyway
    assert q.queued_bytes == 2 * RECORD_OVERHEAD



def test_closing_the_queue_gives_up_queued_records_and_frees_a_waiting_poller():
    q = RecordQueue(max_bytes=3 * (10 + RECORD_OVERHEAD), uid_share=1.0)
    for seq in range(3):
        assert q.put(_chunk(1000, 10, seq=seq))
    done = []
    waiter = threading.Thread(target=lambda: done.append(q.put(_chunk(2000, 10))))  # within its share
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # full: the poller waits
    assert q.close() == 3
    waiter.join(2)
    assert done == [False] and q.abandoned == 4 and q.queued_bytes == 0
    assert q.put(_chunk(1000, 10, seq=4)) is False


def test_an_exec_is_snapshotted_from_proc_as_it_arrives(tmp_path):
    from oisp_daemon.capture.reader import snapshot_exec

    proc = tmp_path / "4242"
    proc.mkdir()
    (proc / "cmdline").write_bytes(b"curl\0-H\0Authorization: Bearer k\0")
    (proc / "exe").symlink_to("/usr/bin/curl")
    record = rec.Exec(4242, "/usr/bin/curl", "curl", 65534, 1)
    snapshot_exec(record, proc_root=str(tmp_path))
    assert record.proc_cmdline == b"curl\0-H\0Authorization: Bearer k\0" and record.proc_exe == "/usr/bin/curl"
    gone = rec.Exec(4243, "/usr/bin/true", "true", 0, 1)
    snapshot_exec(gone, proc_root=str(tmp_path))  # already gone: nothing, no error
    assert gone.proc_cmdline == b"" and gone.proc_exe is None
