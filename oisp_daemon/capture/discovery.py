"""Continuous discovery: which files running processes map that speak a TLS library, probed
once per file whatever mount namespace it lives in, and released when nobody maps it.

The system libssl and configured binaries are attached at start-up (capture/libraries.py), so
every dynamically linked client is covered before it starts. Everything else (a pyenv or conda
libssl, a vendored copy behind LD_LIBRARY_PATH, Node or Bun with TLS built in, a Go program, a
container's own libssl) is found where it is used: in /proc/PID/maps, read at start-up for every
process, at once when the ring reports an exec or an executable file mmap (the poller calls
`notify`), and by a periodic sweep for processes whose start was not seen. A file is reached as
/proc/PID/root/<path>, so containers and chroots need no configuration; the kernel keeps uprobes
on the inode, so one attachment serves every process and namespace that maps the file.

Scanning reads files (a 100 MB binary takes a while), so it runs on this module's own thread;
attaching goes through the capture object's lock, shared with the owner thread's operations.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

from . import libraries
from .elf_image import Identity
from .libraries import TlsTarget
from .probe_table import Scan

log = logging.getLogger(__name__)

MapsKey = Tuple[str, int]  # (device "major:minor" as /proc/PID/maps shows it, inode)

SWEEP_NEW_PIDS_S = 2.0  # processes whose exec the ring did not report (started before us, lost)
SWEEP_ALL_S = 30.0  # every process again: new dlopens, and files nobody maps any more
# A discovered file nobody maps keeps its probes this long: a short CLI run again and again (an
# agent's tool, a curl in a loop) is then probed once, not found anew (and raced) on every run.
RELEASE_AFTER_S = 300.0
MAX_KNOWN_FILES = 8192  # files classified (TLS or not), most recently seen kept
MAX_PIDS = 65536
MAX_MAPS_BYTES = 4 << 20  # a process with a huge maps file is read up to this much
MAX_HELD = 256  # new files held open between their mmap and their scan


@dataclass
class MappedFile:
    key: MapsKey
    path: str  # as the kernel names it for the reader of the maps file
    executable: bool
    span: str = ""  # "start-end" of one of its mappings (executable where there is one)


def parse_maps(text: str) -> List[MappedFile]:
    """File-backed mappings of a /proc/PID/maps text, each file once (executable if any of its
    mappings is)."""
    files: Dict[MapsKey, MappedFile] = {}
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or parts[4] == "0":
            continue
        path = parts[5]
        if not path.startswith("/") or path.endswith(" (deleted)"):
            continue
        try:
            key = (parts[3], int(parts[4]))
        except ValueError:
            continue
        exec_ = "x" in parts[1]
        known = files.get(key)
        if known is None:
            files[key] = MappedFile(key, path, exec_, parts[0])
        elif exec_ and not known.executable:
            known.executable = True
            known.span = parts[0]
    return list(files.values())


_TLS_HINTS = ("ssl", "tls", "nspr", "nss", "crypto")


def _priority(mapped: MappedFile) -> int:
    """Scan order within a process: names that say TLS, then the rest (executables and all)."""
    name = os.path.basename(mapped.path).lower()
    return 0 if any(h in name for h in _TLS_HINTS) else 1


@dataclass
class _Known:
    """What one mapped file turned out to be."""

    identity: Optional[Identity]  # None: not a TLS target
    scans: List[Scan] = field(default_factory=list)  # every scan (unsupported ones included)
    path: str = ""  # how the daemon reaches it (through /proc/PID/root for another namespace)
    shown: str = ""  # the path in the process's namespace
    held_fd: Optional[int] = None  # the descriptor `path` goes through (/proc/self/fd/N), if any


# What the attach callback reports.
ATTACHED_NEW = "new"  # probes put on by this call: discovery owns them and may release them
ATTACHED_ALREADY = "already"  # attached before (the system libssl, a configured binary)
ATTACH_FAILED = "failed"


class Discovery:
    """Finds and attaches TLS targets in running processes; see the module docstring."""

    def __init__(self, attach: Callable[[TlsTarget], str], detach: Callable[[Identity], None],
                 proc: str = "/proc", self_pid: Optional[int] = None) -> None:
        self._attach = attach  # -> ATTACHED_NEW | ATTACHED_ALREADY | ATTACH_FAILED
        self._detach = detach
        self._proc = proc
        self._self_pid = self_pid if self_pid is not None else os.getpid()
        self._queue: "queue.Queue[Optional[int]]" = queue.Queue(maxsize=65536)
        self._pending: Set[int] = set()  # pids in the queue
        self._pending_lock = threading.Lock()
        # New files opened as they are mapped (the poller thread): a client that is gone within
        # milliseconds leaves its files reachable for the scan, so the next one finds them probed
        self._held: "OrderedDict[MapsKey, Tuple[int, MappedFile]]" = OrderedDict()
        self._known: "OrderedDict[MapsKey, _Known]" = OrderedDict()
        self._pids: Dict[int, Set[MapsKey]] = {}  # pid -> TLS files it maps
        self._seen: "OrderedDict[int, None]" = OrderedDict()  # pids read at least once
        self._attached: Dict[Identity, Set[MapsKey]] = {}  # discovered targets -> their maps keys
        self._covered: Set[Identity] = set()  # probed files (by discovery or before it)
        self._unmapped_since: Dict[Identity, float] = {}  # discovered files no process maps
        self._unsupported: Dict[int, List[Scan]] = {}  # pid -> libraries seen but not readable
        self._lock = threading.Lock()  # _pids/_attached/_known between this thread and readers
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._root_identity = self._identity_of(os.path.join(proc, str(self._self_pid), "root"))
        self.counters: Dict[str, int] = {
            "discovery_files_scanned": 0,
            "discovery_targets_attached": 0,
            "discovery_targets_detached": 0,
            "discovery_notifications_dropped": 0,
        }
        self.last_attach_ms: Optional[float] = None  # from notify to attached, latest

    # -- other threads --------------------------------------------------------------------------

    def notify(self, pid: int) -> None:
        """(poller thread) A process exec'd or mapped a file executable: look at it soon. A
        process start maps a dozen libraries at once; one read of its maps sees them all, so a
        pid already waiting is not queued again. Files never seen before, or released since, are
        opened at once."""
        self._hold_new_files(pid)
        with self._pending_lock:
            if pid in self._pending:
                return
            self._pending.add(pid)
        try:
            self._queue.put_nowait(pid)
        except queue.Full:
            with self._pending_lock:
                self._pending.discard(pid)
            self.counters["discovery_notifications_dropped"] += 1  # the sweep catches it

    def _hold_new_files(self, pid: int) -> None:
        try:
            with open(os.path.join(self._proc, str(pid), "maps"), encoding="utf-8", errors="replace") as fh:
                text = fh.read(MAX_MAPS_BYTES)
        except OSError:
            return
        for mapped in parse_maps(text):
            known = self._known.get(mapped.key)
            if not mapped.executable or known is not None and (known.identity is None or known.identity in self._covered):
                continue  # not TLS, or probed; a file released since it was probed is held again
            with self._pending_lock:
                if mapped.key in self._held:
                    continue
            try:
                fd = os.open(os.path.join(self._proc, str(pid), "map_files", mapped.span), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            with self._pending_lock:
                self._held[mapped.key] = (fd, mapped)
                while len(self._held) > MAX_HELD:
                    os.close(self._held.popitem(last=False)[1][0])

    def _take_held(self, key: MapsKey) -> Optional[int]:
        with self._pending_lock:
            held = self._held.pop(key, None)
        return None if held is None else held[0]

    def _scan_held(self) -> None:
        """Classify (and probe) the files held for processes that were gone before their scan."""
        while True:
            with self._pending_lock:
                if not self._held:
                    return
                key, (_fd, mapped) = next(iter(self._held.items()))
            known = self._classify(mapped, "", True)
            if known is not None and known.identity is not None:
                self._ensure_attached(key, "", True)

    def is_covered(self, pid: int) -> bool:
        """True when the process maps a file that has probes."""
        with self._lock:
            keys = self._pids.get(pid, ())
            return any(self._known[k].identity in self._covered for k in keys if k in self._known)

    def scans_for(self, pid: int) -> List[Scan]:
        """Every family's findings in the files the process maps (unsupported ones included)."""
        with self._lock:
            keys = set(self._pids.get(pid, ()))
            return [scan for key in keys for scan in (self._known[key].scans if key in self._known else [])]

    def unsupported_for(self, pid: int) -> List[Scan]:
        """Findings of libraries the sensor recognised in the process but cannot read."""
        with self._lock:
            return list(self._unsupported.get(pid, ()))

    # -- the thread -----------------------------------------------------------------------------

    def start(self) -> None:
        self.scan_all()
        self._thread = threading.Thread(target=self._run, name="oisp-discovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        next_new = time.monotonic() + SWEEP_NEW_PIDS_S
        next_all = time.monotonic() + SWEEP_ALL_S
        while not self._stop.is_set():
            timeout = max(0.0, min(next_new, next_all) - time.monotonic())
            try:
                pid = self._queue.get(timeout=timeout)
            except queue.Empty:
                pid = None
            try:
                if pid is not None:
                    self._scan_notified(pid)
                now = time.monotonic()
                if now >= next_all:
                    self.scan_all()
                    next_all = now + SWEEP_ALL_S
                    next_new = now + SWEEP_NEW_PIDS_S
                elif now >= next_new:
                    self.scan_new_pids()
                    next_new = now + SWEEP_NEW_PIDS_S
            except Exception:  # noqa: BLE001 - discovery must outlive any odd process or file
                log.exception("discovery failed; going on")

    def _scan_notified(self, pid: int) -> None:
        with self._pending_lock:
            self._pending.discard(pid)  # from here on, a new mapping needs a new look
        started = time.monotonic()
        attached = self.scan_pid(pid)
        self._scan_held()
        if attached:
            self.last_attach_ms = (time.monotonic() - started) * 1000
            log.debug("attached for pid %d in %.1f ms", pid, self.last_attach_ms)

    def _serve_notifications(self) -> None:
        """Between the pids of a sweep: a process that just started comes first."""
        while True:
            try:
                pid = self._queue.get_nowait()
            except queue.Empty:
                return
            if pid is None:
                self._queue.put(None)  # stop(): leave it for the loop
                return
            self._scan_notified(pid)

    # -- scanning -------------------------------------------------------------------------------

    def _pids_now(self) -> List[int]:
        try:
            return [int(n) for n in os.listdir(self._proc) if n.isdigit()]
        except OSError:
            return []

    def scan_all(self, release_after_s: float = RELEASE_AFTER_S) -> None:
        """Every process; then release the discovered files no live process has mapped for
        `release_after_s`."""
        live = self._pids_now()
        for pid in live:
            self.scan_pid(pid)
            self._serve_notifications()
        alive = set(live)
        with self._lock:
            for pid in [p for p in self._pids if p not in alive]:
                del self._pids[pid]
                self._unsupported.pop(pid, None)
            for pid in [p for p in self._seen if p not in alive]:
                del self._seen[pid]
            mapped = set().union(*self._pids.values()) if self._pids else set()
            now = time.monotonic()
            gone = []
            for identity, keys in self._attached.items():
                if keys & mapped:
                    self._unmapped_since.pop(identity, None)
                elif now - self._unmapped_since.setdefault(identity, now) >= release_after_s:
                    gone.append(identity)
            for identity in gone:
                del self._unmapped_since[identity]
                del self._attached[identity]
                self._covered.discard(identity)
            released = [k for k, known in self._known.items() if known.identity in gone and known.held_fd is not None]
            for key in released:
                os.close(self._known.pop(key).held_fd)  # type: ignore[arg-type]
        for identity in gone:
            self._detach(identity)
            self.counters["discovery_targets_detached"] += 1

    def scan_new_pids(self) -> None:
        for pid in self._pids_now():
            if pid not in self._seen:
                self.scan_pid(pid)
                self._serve_notifications()

    def scan_pid(self, pid: int) -> bool:
        """Read one process's maps and attach what it maps that speaks TLS; True if something
        new was attached."""
        if pid == self._self_pid:
            return False
        try:
            with open(os.path.join(self._proc, str(pid), "maps"), encoding="utf-8", errors="replace") as fh:
                text = fh.read(MAX_MAPS_BYTES)
        except OSError:
            return False  # gone, or a kernel thread
        self._seen[pid] = None
        self._seen.move_to_end(pid)
        while len(self._seen) > MAX_PIDS:
            self._seen.popitem(last=False)
        root = os.path.join(self._proc, str(pid), "root")
        same_root = self._identity_of(root) == self._root_identity
        tls_keys: Set[MapsKey] = set()
        unsupported: List[Scan] = []
        attached_new = False
        # Files whose names say TLS first, attached as soon as each is found: a fresh container
        # maps a score of files never seen before, and its first request will not wait for all.
        for mapped in sorted((m for m in parse_maps(text) if m.executable), key=_priority):
            known = self._classify(mapped, root, same_root)
            if known is None:
                continue
            unsupported += [s for s in known.scans if not s.supported]
            if known.identity is None:
                continue
            tls_keys.add(mapped.key)
            with self._lock:
                keys = self._attached.get(known.identity)
                if keys is not None:
                    keys.add(mapped.key)
                self._pids.setdefault(pid, set()).add(mapped.key)
            attached_new |= self._ensure_attached(mapped.key, root, same_root)
        with self._lock:
            if tls_keys:
                self._pids[pid] = tls_keys
            else:
                self._pids.pop(pid, None)
            if unsupported:
                self._unsupported[pid] = unsupported
            else:
                self._unsupported.pop(pid, None)
        return attached_new

    def _classify(self, mapped: MappedFile, root: str, same_root: bool) -> Optional[_Known]:
        known = self._known.get(mapped.key)
        if known is not None:
            self._known.move_to_end(mapped.key)
            stale = self._take_held(mapped.key)  # opened while the scan that knows it ran
            if stale is not None:
                os.close(stale)
            return known
        held = self._take_held(mapped.key)
        path = self._reach(mapped, root, same_root, os.path.join(os.path.dirname(root), "map_files", mapped.span)) if root else None
        if path is not None and held is not None:
            os.close(held)  # reachable by a path of its own, which the kernel's uprobe list will show
            held = None
        elif held is not None:
            path = f"/proc/{self._self_pid}/fd/{held}"
        if path is None:
            log.debug("cannot reach %s of pid %s", mapped.path, os.path.basename(os.path.dirname(root)))
            return None  # the process (or its namespace) went away: try again when seen again
        scans = libraries.scan_file(path)
        self.counters["discovery_files_scanned"] += 1
        identity = libraries.file_identity(path) if any(s.attachable for s in scans) else None
        if held is not None and identity is None:
            os.close(held)  # not TLS: nothing will be attached through it
            held = None
        known = _Known(identity, scans, path, mapped.path, held)
        with self._lock:
            self._known[mapped.key] = known
            while len(self._known) > MAX_KNOWN_FILES:
                evicted = self._known.popitem(last=False)[1]
                if evicted.held_fd is not None:
                    os.close(evicted.held_fd)
        return known

    @staticmethod
    def _reach(mapped: MappedFile, root: str, same_root: bool, map_file: str) -> Optional[str]:
        """A path the daemon can open to the very file mapped (its inode is checked). The kernel
        names a mapped file as seen from the reader's root where it is reachable from there (a
        chroot under our tree); a file of another mount namespace is reached through
        /proc/PID/root, or, where its name is relative to another root than the process's,
        through /proc/PID/map_files (a link to the mapped file itself; root only)."""
        candidates = [mapped.path] if same_root else [mapped.path, root + mapped.path, map_file]
        for path in candidates:
            try:
                if os.stat(path).st_ino == mapped.key[1]:
                    return path
            except (OSError, ValueError):
                continue
        return None

    def _ensure_attached(self, key: MapsKey, root: str, same_root: bool) -> bool:
        known = self._known.get(key)
        if known is None or known.identity is None:
            return False
        with self._lock:
            if known.identity in self._covered:
                return False
        target = libraries.probe_target(known.path, "discovered", shown_path=known.shown)
        if target is None or target.identity != known.identity:
            return False
        result = self._attach(target)
        if result == ATTACH_FAILED:
            return False
        with self._lock:
            self._covered.add(known.identity)
            if result == ATTACHED_NEW:
                self._attached[known.identity] = {key}
        if result != ATTACHED_NEW:
            return False
        self.counters["discovery_targets_attached"] += 1
        log.info("probing %s%s (%s)", known.shown, "" if known.path == known.shown else f" (as {known.path})",
                 ", ".join(s.library for s in target.scans))
        return True

    @staticmethod
    def _identity_of(path: str) -> Optional[Identity]:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)
