"""Compile bpf/tls_capture.c with bcc, attach it, and expose the maps user space writes.

Modelled on bcc's tools/*.py: the C lives in bpf/, this module owns the BPF object. Importing
bcc is deferred to `load()` so that the rest of the daemon (and its tests) import without it.
"""
from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from . import kheaders, tracefs
from .libraries import OPENSSL_PROBES, Identity, TlsTarget

log = logging.getLogger(__name__)

BPF_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bpf", "tls_capture.c")
# uids whose lost bytes the kernel counts separately (an LRU map: the totals stay exact beyond it)
LOST_UIDS = 4096


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
    source: str = BPF_SOURCE


@dataclass
class Attached:
    target: TlsTarget
    probes: List[str] = field(default_factory=list)


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


def bpf_source(path: str = BPF_SOURCE) -> str:
    for candidate in (path, "/usr/share/oisp-sensor/bpf/tls_capture.c"):
        if os.path.isfile(candidate):
            with open(candidate, encoding="utf-8") as fh:
                return fh.read()
    raise CaptureError(f"BPF source not found at {path}")


class TlsCapture:
    """The loaded BPF object: probes, filter map, verdict map, lost counters, ring buffer."""

    def __init__(self, options: CaptureOptions) -> None:
        self.options = options
        self.headers: Optional[kheaders.HeaderChoice] = None
        self.attached: List[Attached] = []
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
        ]
        try:
            self._bpf = BPF(text=bpf_source(self.options.source), cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception for compile errors
            raise CaptureError(f"compiling the BPF programs failed: {exc}") from exc
        cont = self._bpf.load_func("continue_emit", BPF.KPROBE)
        self._bpf["continue_call"][ctypes.c_int(0)] = ctypes.c_int(cont.fd)
        self.set_filter(self.options.pid, self.options.uid, self.options.comm)

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
        return next((a for a in self.attached if a.target.identity == identity), None)

    def attach_target(self, target: TlsTarget) -> Attached:
        """Probe a file once: a file already attached (by any path to it) is returned as it is."""
        existing = self.attached_file(target.identity)
        if existing is not None:
            return existing
        done = Attached(target)
        for symbol, entry_fn, return_fn in OPENSSL_PROBES:
            if symbol not in target.symbols:
                continue
            try:
                self._bpf.attach_uprobe(name=target.path, sym=symbol, fn_name=entry_fn)
                if return_fn:
                    self._bpf.attach_uretprobe(name=target.path, sym=symbol, fn_name=return_fn)
            except Exception as exc:  # bcc raises bare Exception
                log.warning("cannot probe %s in %s: %s", symbol, target.path, exc)
                continue
            done.probes.append(symbol)
        if done.probes:
            self.attached.append(done)
        return done

    def detach_target(self, attached: Attached) -> None:
        """Remove a target's uprobes (a binary path taken out of the configuration)."""
        returns = {symbol: return_fn for symbol, _entry, return_fn in OPENSSL_PROBES}
        for symbol in attached.probes:
            try:
                self._bpf.detach_uprobe(name=attached.target.path, sym=symbol)
                if returns[symbol]:
                    self._bpf.detach_uretprobe(name=attached.target.path, sym=symbol)
            except Exception as exc:  # bcc raises bare Exception
                log.warning("cannot detach %s from %s: %s", symbol, attached.target.path, exc)
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
        try:
            self._bpf["ignored"][ConnKey(pid, 0, ssl)] = ctypes.c_uint8(1)
        except Exception:  # map full: the connection stays captured, user space drops it
            log.debug("verdict map full; connection %d/%#x stays captured", pid, ssl)

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
