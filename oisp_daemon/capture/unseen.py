"""Processes that talk TLS through a library the sensor cannot see, so that the blind spot is
shown instead of looking like silence.

A connect to a TLS port (capture.unseen_tls_ports, 443 by default) by a process that maps no probed
TLS library, or whose files include a TLS library the sensor recognises but cannot probe (a scan
with supported=False, e.g. "rustls, static: not supported"), means its traffic is invisible. Such
processes are listed with what is known of the library, and counted. The list is bounded (an LRU of
processes, the oldest exited ones go first) and a process that exited is dropped after a while.

Discovery reads a new process's maps on its own thread, so a connect can arrive before the
process is known to map a probed library: the sensor's is_covered also compares a live process's
maps with the attachments (maps_probed), a process is listed only if it is still not covered
GRACE_S after its first connect, a listed process that turns out to be covered later (a library
attached after it started) is dropped at the next tick, and a library discovery names later is
filled in. The surest proof comes from the probes themselves: a process whose TLS records arrive
(the first call of every connection is sent, AI or not) is covered, even when it exited before
discovery or the maps check could read it (a curl gone in 20 ms while discovery scans a big binary).

Fed from the sensor's thread (records, tick); `entries()`/`count()` may be read from others.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional

from . import records as rec
from .discovery import MAX_MAPS_BYTES, parse_maps
from .elf_image import Identity

MAX_ENTRIES = 256
MAX_EXECS = 4096  # exe and comm of recent execs, for a process gone before its connect is read
MAX_CARRIERS = 4096  # pids whose TLS records arrived since their exec
KEEP_EXITED_S = 600.0
GRACE_S = 2.0  # from a first connect to the verdict: discovery's time to read the new process
TICK_S = 0.5  # how often pending verdicts and listed live processes are looked at again

IsCovered = Callable[[int], bool]
# The library of a pid's files that the sensor recognises but cannot probe, None if none.
UnsupportedLibrary = Callable[[int], Optional[str]]


@dataclass
class UnseenProcess:
    pid: int
    exe: Optional[str]
    comm: Optional[str]
    library: Optional[str]  # None: nothing the sensor knows (no TLS library it recognises)
    first_seen: float  # wall clock, seconds
    connects: int = 1
    exited_at: Optional[float] = None  # monotonic
    pending_until: Optional[float] = None  # monotonic: not listed before this verdict

    def as_dict(self) -> Dict[str, Any]:
        return {"pid": self.pid, "exe": self.exe, "comm": self.comm, "library": self.library,
                "first_seen": round(self.first_seen, 3), "connects": self.connects}


def describe(entry: Dict[str, Any]) -> str:
    """One listed process in a few words, for record's closing line."""
    return "%s (pid %s, %s, %s TLS connects)" % (
        entry.get("exe") or entry.get("comm") or "?", entry.get("pid"),
        entry.get("library") or "no TLS library the sensor probes", entry.get("connects"))


def maps_probed(pid: int, probed: Iterable[Identity], proc: str = "/proc") -> bool:
    """True when the live process maps one of the probed files (by device and inode) executable:
    the answer for a process whose maps discovery has not read yet (its thread may be busy
    scanning a big binary)."""
    keys = {("%02x:%02x" % (os.major(dev), os.minor(dev)), ino) for dev, ino in probed}
    if not keys:
        return False
    try:
        with open(os.path.join(proc, str(pid), "maps"), encoding="utf-8", errors="replace") as fh:
            text = fh.read(MAX_MAPS_BYTES)
    except OSError:
        return False
    return any(m.executable and m.key in keys for m in parse_maps(text))


def _read_proc(proc: str, pid: int) -> Dict[str, Optional[str]]:
    """exe and comm of a live process (None for what cannot be read: gone, or not ours)."""
    out: Dict[str, Optional[str]] = {"exe": None, "comm": None}
    try:
        out["exe"] = os.readlink(os.path.join(proc, str(pid), "exe"))
    except OSError:
        pass
    try:
        with open(os.path.join(proc, str(pid), "comm"), encoding="utf-8", errors="replace") as fh:
            out["comm"] = fh.read().strip() or None
    except OSError:
        pass
    return out


class UnseenTls:
    def __init__(
        self,
        is_covered: IsCovered,
        unsupported_library: UnsupportedLibrary,
        *,
        tls_ports: Iterable[int],
        max_entries: int = MAX_ENTRIES,
        keep_exited_s: float = KEEP_EXITED_S,
        grace_s: float = GRACE_S,
        proc: str = "/proc",
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.is_covered = is_covered
        self.unsupported_library = unsupported_library
        self.tls_ports = frozenset(int(p) for p in tls_ports)
        self.max_entries = max(1, int(max_entries))
        self.keep_exited_s = keep_exited_s
        self.grace_s = grace_s
        self.proc = proc
        self._wall = wall
        self._monotonic = monotonic
        self._entries: "OrderedDict[int, UnseenProcess]" = OrderedDict()  # least recently active first
        self._execs: "OrderedDict[int, Dict[str, Optional[str]]]" = OrderedDict()  # sensor thread only
        self._carriers: "OrderedDict[int, None]" = OrderedDict()  # sensor thread only
        self._lock = threading.Lock()
        self._last_tick = monotonic()

    # -- records in (the sensor's thread) ----------------------------------------------------

    def handle(self, record: rec.Record) -> None:
        if isinstance(record, (rec.DataChunk, rec.SetFd)):
            if not rec.is_plain(record.ssl) and record.pid not in self._carriers:
                self._carriers[record.pid] = None
                while len(self._carriers) > MAX_CARRIERS:
                    self._carriers.popitem(last=False)
        elif isinstance(record, rec.Connect):
            self.on_connect(record.pid, record.port)
        elif isinstance(record, rec.Exec):
            self._carriers.pop(record.pid, None)  # a new image: its libraries are to be seen anew
            self._execs.pop(record.pid, None)
            self._execs[record.pid] = {"exe": record.proc_exe or record.filename or None, "comm": record.comm or None}
            while len(self._execs) > MAX_EXECS:
                self._execs.popitem(last=False)
        elif isinstance(record, rec.Exit):
            self.on_exit(record.pid)
            self._execs.pop(record.pid, None)

    def _covered(self, pid: int) -> bool:
        """A probe carried the process's TLS, or discovery or its maps say a probed file is mapped."""
        return pid in self._carriers or self.is_covered(pid)

    def on_connect(self, pid: int, port: int) -> None:
        if port not in self.tls_ports:
            return
        with self._lock:
            entry = self._entries.get(pid)
            if entry is not None and entry.exited_at is None:
                entry.connects += 1
                self._entries.move_to_end(pid)
                return
        library = self.unsupported_library(pid)
        if library is None and self._covered(pid):
            return
        info = _read_proc(self.proc, pid)
        for key, value in self._execs.get(pid, {}).items():
            info[key] = info[key] or value  # gone already: what its exec said
        entry = UnseenProcess(pid, info["exe"], info["comm"], library, self._wall(),
                              pending_until=None if library else self._monotonic() + self.grace_s)
        with self._lock:
            self._entries.pop(pid, None)  # an exited process whose pid came back
            self._entries[pid] = entry
            self._bound()

    def on_exit(self, pid: int) -> None:
        with self._lock:
            entry = self._entries.get(pid)
            if entry is not None and entry.exited_at is None:
                entry.exited_at = self._monotonic()

    def tick(self) -> None:
        """(sensor thread, often) Every TICK_S: judge the processes whose grace is over, drop
        exited ones kept long enough and live ones that are covered now."""
        now = self._monotonic()
        if now - self._last_tick < TICK_S:
            return
        self._last_tick = now
        self._judge(now, final=False)

    def settle(self) -> None:
        """Judge every pending process now (the sensor is stopping: no later tick)."""
        self._judge(self._monotonic(), final=True)

    def _judge(self, now: float, final: bool) -> None:
        with self._lock:
            listed = list(self._entries.values())
        gone, judged = [], []  # discovery is asked outside the lock
        for e in listed:
            if e.exited_at is not None and now - e.exited_at >= self.keep_exited_s:
                gone.append(e.pid)
            elif e.pending_until is not None and (final or now >= e.pending_until):
                library = self.unsupported_library(e.pid)
                if library is None and self._covered(e.pid):
                    gone.append(e.pid)
                else:
                    judged.append((e, library))
            elif e.pending_until is None and e.library is None:
                library = self.unsupported_library(e.pid)  # discovery may have read it since
                if library is not None:
                    judged.append((e, library))
                elif e.exited_at is None and self._covered(e.pid):
                    gone.append(e.pid)
        with self._lock:
            for e, library in judged:
                e.library, e.pending_until = library, None
            for pid in gone:
                self._entries.pop(pid, None)

    def _bound(self) -> None:
        while len(self._entries) > self.max_entries:
            exited = next((pid for pid, e in self._entries.items() if e.exited_at is not None), None)
            self._entries.pop(exited if exited is not None else next(iter(self._entries)))

    # -- reading (any thread) ----------------------------------------------------------------

    def entries(self) -> List[Dict[str, Any]]:
        """The listed processes (verdict given), first seen first."""
        with self._lock:
            listed = [e.as_dict() for e in self._entries.values() if e.pending_until is None]
        return sorted(listed, key=lambda e: (e["first_seen"], e["pid"]))

    def count(self) -> int:
        """unseen_tls_processes: how many processes are listed."""
        with self._lock:
            return sum(1 for e in self._entries.values() if e.pending_until is None)
