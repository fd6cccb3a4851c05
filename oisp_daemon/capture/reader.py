"""Drain the ring buffer and turn chunk records into ordered per-connection byte streams.

A poller thread only copies records out of the ring (so the kernel side never waits on
decoding); the pipeline thread consumes them. Chunks of a connection arrive in call order
(records are reserved under the ring's lock, and one SSL object is used by one thread at a time),
so a missing call sequence number or a missing chunk offset means the kernel lost bytes: the
stream is then marked with a gap instead of being silently spliced.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

from . import records as rec

log = logging.getLogger(__name__)

ConnKey = Tuple[int, int]  # (pid, ssl pointer)


@dataclass
class StreamData:
    key: ConnKey
    direction: str  # "write" | "read"
    data: bytes
    ts_ns: int
    tid: int
    uid: int
    comm: str
    seq: int = -1  # the call's sequence number on its connection (bpf/emit.h), -1 if unknown


@dataclass
class StreamGap:
    """Bytes of this connection were lost before the next data (direction unknown: both)."""

    key: ConnKey
    ts_ns: int


Event = Union[StreamData, StreamGap, rec.ConnEnd, rec.SetFd, rec.Connect, rec.Fork, rec.Exec, rec.Exit]


@dataclass
class _Cursor:
    seq: int  # sequence number of the call in progress (or last finished)
    offset: int  # bytes of that call seen so far
    total: int


class StreamAssembler:
    """Checks chunk continuity per connection and yields data or gap events."""

    def __init__(self) -> None:
        self._cursors: Dict[ConnKey, _Cursor] = {}

    def feed(self, chunk: rec.DataChunk) -> List[Event]:
        key = (chunk.pid, chunk.ssl)
        out: List[Event] = []
        cur = self._cursors.get(key)
        if cur is None:
            contiguous = chunk.offset == 0  # first sight of the connection (maybe mid-stream)
        elif chunk.seq == cur.seq:
            contiguous = chunk.offset == cur.offset
        else:
            contiguous = chunk.seq == cur.seq + 1 and cur.offset >= cur.total and chunk.offset == 0
        if not contiguous or chunk.read_failed:
            out.append(StreamGap(key, chunk.ts_ns))
        self._cursors[key] = _Cursor(chunk.seq, chunk.offset + len(chunk.data), chunk.total)
        if chunk.read_failed:
            # The kernel could not copy the user buffer: count this call as fully seen, lost.
            self._cursors[key].offset = chunk.offset + min(chunk.total - chunk.offset, 16384)
            return out
        out.append(StreamData(key, chunk.direction, chunk.data, chunk.ts_ns, chunk.tid, chunk.uid, chunk.comm,
                              chunk.seq))
        return out

    def forget(self, key: ConnKey) -> None:
        self._cursors.pop(key, None)

    def forget_pid(self, pid: int) -> None:
        for key in [k for k in self._cursors if k[0] == pid]:
            del self._cursors[key]


# Bytes of records waiting for the pipeline, and the part of them one uid may hold.
QUEUE_BYTES = 64 << 20
UID_SHARE = 0.5
# What a record costs beside its data (the objects around it).
RECORD_OVERHEAD = 256


class RecordQueue:
    """Records between the poller and the pipeline, bounded in bytes and shared fairly by uid.

    A chunk can carry 16 KiB, so a bound in records alone would let a flood pin a gigabyte. When
    the queue is full the poller waits (the ring then fills and the kernel counts the loss, per
    uid); but a uid already holding its share (UID_SHARE of the bytes) has its next data chunks
    dropped here instead, counted per uid, so one user's flood cannot make everyone else wait
    behind it. The pipeline sees a dropped chunk as a gap in that connection's stream.
    Only data chunks are dropped: the small lifecycle records (exit, free, fork) always go in.
    """

    def __init__(self, max_bytes: int = QUEUE_BYTES, uid_share: float = UID_SHARE,
                 max_records: int = 65536) -> None:
        self.max_bytes = max_bytes
        self.uid_limit = int(max_bytes * uid_share)
        self.max_records = max_records
        self._cond = threading.Condition()
        self._items: "deque[Tuple[rec.Record, int, Optional[int]]]" = deque()
        self._bytes = 0
        self._by_uid: Dict[int, int] = {}
        self._dropped: Dict[int, List[int]] = {}  # uid -> [bytes, records]
        self._closed = False
        self.abandoned = 0  # records thrown away by close() (shutdown past its drain limit)

    def put(self, record: rec.Record) -> bool:
        """Queue a record, waiting while the queue is full; False if it was dropped (uid share)."""
        uid = record.uid if isinstance(record, rec.DataChunk) else None
        size = RECORD_OVERHEAD + (len(record.data) if isinstance(record, rec.DataChunk) else 0)
        with self._cond:
            if self._closed:
                self.abandoned += 1
                return False
            if uid is not None and self._by_uid.get(uid, 0) + size > self.uid_limit:
                dropped = self._dropped.setdefault(uid, [0, 0])
                dropped[0] += len(record.data)  # type: ignore[union-attr]
                dropped[1] += 1
                return False
            while self._items and (self._bytes + size > self.max_bytes
                                   or len(self._items) >= self.max_records) and not self._closed:
                self._cond.wait()
            if self._closed:
                self.abandoned += 1
                return False
            self._items.append((record, size, uid))
            self._bytes += size
            if uid is not None:
                self._by_uid[uid] = self._by_uid.get(uid, 0) + size
            self._cond.notify_all()
            return True

    def put_nowait(self, item: object) -> None:
        """Queue a marker (not a record: the sensor's wake-up) unless the queue is full, when
        queue.Full is raised: with records waiting, the consumer wakes anyway."""
        with self._cond:
            if self._items and (self._bytes + RECORD_OVERHEAD > self.max_bytes
                                or len(self._items) >= self.max_records):
                raise queue.Full
            self._items.append((item, RECORD_OVERHEAD, None))  # type: ignore[arg-type]
            self._bytes += RECORD_OVERHEAD
            self._cond.notify_all()

    def get(self, timeout: Optional[float] = None) -> rec.Record:
        """The oldest record; queue.Empty when none comes within `timeout` (as queue.Queue)."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout):
                raise queue.Empty
            record, size, uid = self._items.popleft()
            self._bytes -= size
            if uid is not None:
                left = self._by_uid[uid] - size
                if left:
                    self._by_uid[uid] = left
                else:
                    del self._by_uid[uid]
            self._cond.notify_all()
            return record

    def close(self) -> int:
        """Stop taking records and throw away the queued ones (a shutdown that has drained as
        long as it may); a poller waiting in put() returns at once. Returns how many went."""
        with self._cond:
            self._closed = True
            self.abandoned += len(self._items)
            self._items.clear()
            self._bytes = 0
            self._by_uid.clear()
            self._cond.notify_all()
            return self.abandoned

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def dropped_by_uid(self) -> Dict[str, Dict[str, int]]:
        """Data dropped for exceeding a uid's share: {"65534": {"bytes": n, "records": n}}."""
        with self._cond:
            return {str(uid): {"bytes": b, "records": r} for uid, (b, r) in sorted(self._dropped.items())}


MAX_PROC_CMDLINE = 64 * 1024


def snapshot_exec(record: rec.Exec, proc_root: str = "/proc") -> None:
    """Read the new image's command line and executable right away, on the poller thread.

    The pipeline reads /proc only when it reaches the process's first AI request, and behind a
    burst (or simply for a client like curl that finishes in milliseconds) the process is gone
    by then: its cmdline would be lost. Execs are rare, so this costs little.
    """
    base = f"{proc_root}/{record.pid}"
    try:
        with open(f"{base}/cmdline", "rb") as fh:
            record.proc_cmdline = fh.read(MAX_PROC_CMDLINE)
    except OSError:
        pass
    try:
        record.proc_exe = os.readlink(f"{base}/exe")
    except OSError:
        pass


class RingReader:
    """Poller thread: ring buffer -> bounded queue of decoded records.

    When the pipeline falls behind, the queue fills, the poller stops draining, the ring fills,
    and the kernel counts lost bytes: back-pressure ends in counted loss, never in unbounded memory.
    """

    def __init__(self, poll: Callable[[int], None], open_ring: Callable[[Callable[[int, int], None]], None],
                 max_queue_bytes: int = QUEUE_BYTES, on_image: Optional[Callable[[int], None]] = None) -> None:
        self._poll = poll
        # told (on this thread, as the record arrives) of every exec and executable file mmap, so
        # discovery can probe a new process's TLS library before its first request
        self._on_image = on_image
        self.queue = RecordQueue(max_queue_bytes)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.last_poll = time.monotonic()  # heartbeat: the watchdog wants a poller that turns
        open_ring(self._on_record)

    def _on_record(self, ptr: int, size: int) -> None:
        record = rec.decode(ptr, size)
        if record is None:
            return
        if isinstance(record, (rec.Exec, rec.Mmap)) and self._on_image is not None:
            self._on_image(record.pid)
        if isinstance(record, rec.Mmap):
            return  # for discovery only
        if isinstance(record, rec.Exec):
            snapshot_exec(record)
        self.queue.put(record)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll(100)
            except Exception:  # a poll error must not kill capture silently
                log.exception("ring buffer poll failed")
            self.last_poll = time.monotonic()
        self._poll(0)  # last drain: records already in the ring still reach the pipeline

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="oisp-ring-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the poller to finish; the consumer keeps draining the queue until `finished`."""
        self._stop.set()

    @property
    def finished(self) -> bool:
        return self._thread is None or not self._thread.is_alive()
