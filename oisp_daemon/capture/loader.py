"""Compile the BPF programs with bcc, attach them, and expose the maps user space writes.

Modelled on bcc's tools/*.py: the C lives in bpf/, this module owns the BPF object. One object
is compiled from bpf/emit.h (the shared emit path), bpf/process.c and each family's file, so the
ring, filters and counters exist once. Importing bcc is deferred to `load()` so that the rest of
the daemon (and its tests) import without it.
"""
from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from . import kheaders, plain_http, tracefs
from .elf_image import Identity
from .families import bpf_files, family
from .libraries import TlsTarget
from .probe_table import RETURN_URETPROBE

log = logging.getLogger(__name__)

BPF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bpf")
INSTALLED_BPF_DIR = "/usr/share/oisp-sensor/bpf"
# The initial pid namespace's inode number (PROC_PID_INIT_INO): a daemon outside it (in a
# container) has the kernel translate pids into its own namespace.
INIT_PID_NS_INO = 0xEFFFFFFC
# uids whose lost bytes the kernel counts separately (an LRU map: the totals stay exact beyond it)
LOST_UIDS = 4096
VERDICT_IGNORE_ALL = 2 ** 64 - 1  # bpf/emit.h: the `ignored` value that stops every call


class CaptureError(RuntimeError):
    """The probes could not be loaded or attached; the message says why and what to do."""


@dataclass
class CaptureOptions:
    ring_buffer_bytes: int = 16 * 1024 * 1024
    max_connections: int = 65536
    max_threads: int = 65536
    pid: int = 0
    uid: Optional[int] = None
    comm: Optional[str] = None
    cache_dir: str = "/var/cache/oisp-sensor"
    bpf_dir: str = BPF_DIR
    # plain HTTP from the socket syscalls (capture/plain_http.py): the destinations it tracks
    plain_http: plain_http.PlainHttpConfig = field(default_factory=lambda: plain_http.from_config({}))


@dataclass
class Attached:
    target: TlsTarget
    probes: List[str] = field(default_factory=list)  # the points attached (e.g. "SSL_write")
    events: List[bytes] = field(default_factory=list)  # bcc's uprobe event names, for detach


class ConnKey(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("ssl", ctypes.c_uint64)]


class FilterCfg(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("filter_uid", ctypes.c_uint32),
        ("filter_comm", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
    ]


def _ring_pages(ring_bytes: int) -> int:
    """bcc sizes ring buffers in pages; the kernel wants a power of two."""
    pages = max(1, ring_bytes // os.sysconf("SC_PAGE_SIZE"))
    return 1 << (pages - 1).bit_length()


def bpf_dir(preferred: str = BPF_DIR) -> str:
    """The directory holding emit.h and the probe files: the checkout's, else the package's."""
    for candidate in (preferred, INSTALLED_BPF_DIR):
        if os.path.isfile(os.path.join(candidate, "emit.h")):
            return candidate
    raise CaptureError(f"BPF sources not found in {preferred} or {INSTALLED_BPF_DIR}")


def bpf_program(directory: str) -> str:
    """The one program text: emit.h, the process tracepoints, then every family's probes."""
    parts = []
    for name in ("emit.h", "process.c", plain_http.BPF_FILE) + bpf_files():
        with open(os.path.join(directory, name), encoding="utf-8") as fh:
            parts.append(f"// ---- {name}\n{fh.read()}")
    return "\n".join(parts)


def pid_namespace_flags() -> List[str]:
    """cflags naming the daemon's pid namespace when it is not the initial one."""
    try:
        st = os.stat("/proc/self/ns/pid")
    except OSError:
        return []
    if st.st_ino == INIT_PID_NS_INO:
        return []
    # the kernel compares the namespace file system's device in its own encoding
    dev = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)
    log.info("in a pid namespace (inode %d): pids are reported as this namespace numbers them", st.st_ino)
    return [f"-DPIDNS_DEV={dev}ULL", f"-DPIDNS_INO={st.st_ino}ULL"]


class TlsCapture:
    """The loaded BPF object: probes, filter map, verdict map, lost counters, ring buffer."""

    def __init__(self, options: CaptureOptions) -> None:
        self.options = options
        self.headers: Optional[kheaders.HeaderChoice] = None
        self.attached: List[Attached] = []
        # attach/detach and readers of `attached` hold this: discovery attaches on its own thread
        self.lock = threading.RLock()
        self._bpf = None

    def load(self) -> None:
        """Compile (seconds) and load the programs, and attach the tracepoints."""
        if os.geteuid() != 0:
            raise CaptureError("eBPF capture needs root (CAP_BPF and CAP_PERFMON): run with sudo")
        try:
            self.headers = kheaders.choose_headers(self.options.cache_dir)
        except kheaders.KernelHeadersError as exc:
            raise CaptureError(str(exc)) from exc
        kheaders.apply(self.headers)
        log.info("kernel headers: %s", self.headers.description)
        for note in tracefs.ensure_mounted():
            log.info("%s (tracepoint formats for bcc)", note)
        try:
            from bcc import BPF  # noqa: WPS433 (deferred: the package is a distro package)
        except ImportError as exc:
            raise CaptureError(
                "bcc's Python bindings are missing: apt-get install python3-bpfcc "
                "(Fedora/RHEL: dnf install python3-bcc)"
            ) from exc
        cflags = [
            f"-DRING_PAGES={_ring_pages(self.options.ring_buffer_bytes)}",
            f"-DMAX_CONNECTIONS={self.options.max_connections}",
            f"-DMAX_THREADS={self.options.max_threads}",
            f"-DLOST_UIDS={LOST_UIDS}",
            "-Wno-macro-redefined",
        ] + pid_namespace_flags()
        try:
            self._bpf = BPF(text=bpf_program(bpf_dir(self.options.bpf_dir)), cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception for compile errors
            raise CaptureError(f"compiling the BPF programs failed: {exc}") from exc
        cont = self._bpf.load_func("continue_emit", BPF.KPROBE)
        self._bpf["continue_call"][ctypes.c_int(0)] = ctypes.c_int(cont.fd)
        self.set_filter(self.options.pid, self.options.uid, self.options.comm)
        try:
            plain_http.attach(self._bpf, BPF.TRACEPOINT, self.options.plain_http)
        except plain_http.PlainHttpUnavailable as exc:
            log.warning("plain HTTP to local model servers is not captured: %s", exc)

    def attach(self, targets: List[TlsTarget]) -> List[Attached]:
        """Put the uprobes on each library/binary; a target that fails is logged, not fatal."""
        for target in targets:
            self.attach_target(target)
        if not self.attached:
            raise CaptureError(
                "no TLS library could be probed: install OpenSSL (libssl3) or add the binary that "
                "links it statically to binary_paths"
            )
        return self.attached

    def attached_file(self, identity: Identity) -> Optional[Attached]:
        """The attachment of the file with this (device, inode), whatever path it came by."""
        with self.lock:
            return next((a for a in self.attached if a.target.identity == identity), None)

    def attachments(self) -> List[Attached]:
        """A copy of the attachments, safe to read on any thread."""
        with self.lock:
            return list(self.attached)

    def attach_target(self, target: TlsTarget) -> Attached:
        """Probe a file once: a file already attached (by any path to it) is returned as it is.
        Each point of each family's scan gets its entry probe and its return probe(s): a
        uretprobe, or a uprobe on every RET instruction where the family asks for that."""
        with self.lock:
            return self._attach_target(target)

    def _attach_target(self, target: TlsTarget) -> Attached:
        existing = self.attached_file(target.identity)
        if existing is not None:
            return existing
        done = Attached(target)
        for scan in target.scans:
            fam = family(scan.family)
            for loc in scan.locations:
                point = fam.point(loc.point)
                before = set(self._bpf.uprobe_fds)
                try:
                    if point.entry_fn:
                        self._bpf.attach_uprobe(name=target.path, addr=loc.address, fn_name=point.entry_fn)
                    if point.return_fn and point.return_at == RETURN_URETPROBE:
                        self._bpf.attach_uretprobe(name=target.path, addr=loc.address, fn_name=point.return_fn)
                    elif point.return_fn:
                        for ret in loc.returns:
                            self._bpf.attach_uprobe(name=target.path, addr=ret, fn_name=point.return_fn)
                except Exception as exc:  # bcc raises bare Exception
                    log.warning("cannot probe %s in %s: %s", loc.point, target.path, exc)
                    for event in set(self._bpf.uprobe_fds) - before:
                        self._detach_event(event)
                    continue
                done.events.extend(set(self._bpf.uprobe_fds) - before)
                done.probes.append(loc.point)
        if done.probes:
            self.attached.append(done)
        return done

    def _detach_event(self, event: bytes) -> None:
        try:
            self._bpf.detach_uprobe_event(event)
        except Exception as exc:  # bcc raises bare Exception
            log.warning("cannot detach %s: %s", event, exc)

    def detach_target(self, attached: Attached) -> None:
        """Remove a target's uprobes. By event name, not path: the file may be reachable no
        longer (the last process mapping it from its container has gone)."""
        with self.lock:
            for event in attached.events:
                self._detach_event(event)
            self.attached.remove(attached)

    @property
    def loaded(self) -> bool:
        return self._bpf is not None

    def set_filter(self, pid: int = 0, uid: Optional[int] = None, comm: Optional[str] = None) -> None:
        cfg = FilterCfg()
        cfg.pid = pid or 0
        cfg.filter_uid = 1 if uid is not None else 0
        cfg.uid = uid or 0
        cfg.filter_comm = 1 if comm else 0
        cfg.comm = (comm or "").encode()[:15]
        self._bpf["filter"][ctypes.c_int(0)] = cfg

    def ignore(self, pid: int, ssl: int) -> None:
        """Verdict from user space: this connection is not AI traffic; stop copying its bytes."""
        self._verdict(pid, ssl, VERDICT_IGNORE_ALL)

    def skip_reads(self, pid: int, ssl: int, next_seq: int) -> None:
        """Verdict from user space: the connection was joined mid-answer; copy none of its reads
        until it writes again, as long as `next_seq` is its next sequence number (user space has
        seen all its calls; bpf/emit.h, admitted)."""
        self._verdict(pid, ssl, next_seq)

    def _verdict(self, pid: int, ssl: int, value: int) -> None:
        try:
            self._bpf["ignored"][ConnKey(pid, 0, ssl)] = ctypes.c_uint64(value)
        except Exception:  # map full: the connection stays captured, user space drops it
            log.debug("verdict map full; connection %d/%#x stays captured", pid, ssl)

    def forget_connection(self, pid: int, ssl: int) -> None:
        """A connection whose process is gone: drop what the kernel keeps for it (a plain
        socket's (pid, fd) entry, its sequence number and verdict)."""
        plain_http.forget(self._bpf, pid, ssl)
        key = ConnKey(pid, 0, ssl)
        for name in ("conn_seq", "ignored"):
            try:
                del self._bpf[name][key]
            except KeyError:
                pass

    def lost(self) -> Dict[str, Any]:
        """Bytes and records the kernel could not put into the ring (summed over CPUs), in total
        and per uid of the task that lost them: {"lost_bytes": n, "lost_records": n,
        "lost_by_uid": {"65534": {"bytes": n, "records": n}}} (keys as strings, as JSON has them)."""
        out: Dict[str, Any] = {}
        for name in ("lost_bytes", "lost_records"):
            out[name] = sum(self._bpf[name][ctypes.c_int(0)])
        by_uid = {}
        for uid, val in self._bpf["lost_by_uid"].items():
            by_uid[str(uid.value)] = {"bytes": int(val.bytes), "records": int(val.records)}
        out["lost_by_uid"] = dict(sorted(by_uid.items(), key=lambda kv: -kv[1]["bytes"]))
        return out

    def lost_bytes_per_cpu(self) -> List[int]:
        """Lost bytes by CPU: loss on one CPU only points at one busy process or an IRQ storm."""
        return [int(n) for n in self._bpf["lost_bytes"][ctypes.c_int(0)]]

    def open_ring(self, callback: Callable[[int, int], None]) -> None:
        """Register the ring-buffer consumer: callback(pointer, size) for each record."""

        def _cb(_ctx, data, size):
            callback(data, size)
            return 0

        self._bpf["records"].open_ring_buffer(_cb)

    def poll(self, timeout_ms: int) -> None:
        self._bpf.ring_buffer_poll(timeout_ms)

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
