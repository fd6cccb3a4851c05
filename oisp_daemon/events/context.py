"""Who and where: the envelope's `host`, `process` and `actor` blocks.

The host block is built once. Process details come from /proc when the event is built, which can
be after the process exited (short-lived CLI calls), so they are cached per pid and seeded from
the kernel's fork/exec tracepoints; the parent pid from the fork tracepoint wins over /proc's
PPid, which changes when the parent dies and the child is re-parented.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import platform
import pwd
import socket
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from oisp_daemon.redact.commandline import join_argv

# Application id for the host's device_id, derived from /etc/machine-id the way systemd's
# sd_id128_get_machine_app_specific() does: machine-id(5) says the raw id is confidential and must
# not leave the host, while this derived id is stable per host and meaningless elsewhere. Equal to
# `systemd-id128 machine-id --app-specific=9ee92f5f7b084026a3a1b7756eef84fd`.
DEVICE_ID_APP = bytes.fromhex("9ee92f5f7b084026a3a1b7756eef84fd")

_ARCHES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "i386": "i686",
    "i486": "i686",
    "i586": "i686",
    "i686": "i686",
}

# Longest command line kept per process (the cache holds thousands; /proc allows megabytes).
MAX_CMDLINE_CHARS = 32 * 1024


def oisp_arch(machine: str) -> str:
    """OISP's arch enum for a `uname -m` value."""
    machine = machine.lower()
    if machine in _ARCHES:
        return _ARCHES[machine]
    return "arm" if machine.startswith("arm") else "other"


def app_specific_id(machine_id_hex: str, app_id: bytes = DEVICE_ID_APP) -> Optional[str]:
    """UUID string of HMAC-SHA256(machine id, app id), made a v4 UUID as systemd does."""
    try:
        key = bytes.fromhex(machine_id_hex.strip())
    except ValueError:
        return None
    if len(key) != 16:
        return None
    digest = bytearray(hmac.new(key, app_id, hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def os_pretty_name(paths: Tuple[str, ...] = ("/etc/os-release", "/usr/lib/os-release")) -> Optional[str]:
    """PRETTY_NAME from os-release(5), the first file that exists."""
    for path in paths:
        text = _read_text(path)
        if text is None:
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "PRETTY_NAME":
                return value.strip().strip("\"'") or None
        return None
    return None


def cmdline_from_proc(raw: bytes, limit: int = MAX_CMDLINE_CHARS) -> str:
    """/proc/<pid>/cmdline (NUL-separated) as one line that keeps argument boundaries (quoted
    where needed), so the redactor sees `-H 'Authorization: Bearer <key>'` as one argument.

    Cut at an argument boundary past `limit`, never inside one: a key cut in half would no
    longer look like a key to the detectors.
    """
    args = [arg.decode("utf-8", "replace") for arg in raw.rstrip(b"\0").split(b"\0")]
    kept: List[str] = []
    size = 0
    for arg in args:
        size += len(arg) + 1
        if size > limit:
            break
        kept.append(arg)
    line = join_argv(kept)
    if len(kept) < len(args):
        line += " [truncated: %d more args]" % (len(args) - len(kept))
    return line


@dataclass(frozen=True)
class HostContext:
    hostname: str
    os: str
    arch: str
    kernel_version: str
    os_version: Optional[str] = None
    device_id: Optional[str] = None

    @classmethod
    def collect(
        cls,
        os_release_paths: Tuple[str, ...] = ("/etc/os-release", "/usr/lib/os-release"),
        machine_id_path: str = "/etc/machine-id",
    ) -> "HostContext":
        machine_id = _read_text(machine_id_path)
        uname = os.uname()
        return cls(
            hostname=socket.gethostname(),
            os="linux",
            arch=oisp_arch(uname.machine or platform.machine()),
            kernel_version=uname.release,
            os_version=os_pretty_name(os_release_paths),
            device_id=app_specific_id(machine_id) if machine_id else None,
        )

    def as_dict(self) -> Dict[str, str]:
        block = {
            "hostname": self.hostname,
            "device_id": self.device_id,
            "os": self.os,
            "os_version": self.os_version,
            "arch": self.arch,
            "kernel_version": self.kernel_version,
        }
        return {k: v for k, v in block.items() if v is not None}


@dataclass
class _Process:
    fork_ppid: Optional[int] = None
    ppid: Optional[int] = None
    exe: Optional[str] = None
    name: Optional[str] = None
    cmdline: Optional[str] = None
    uid: Optional[int] = None
    gid: Optional[int] = None
    loaded: bool = False  # /proc was read since the last exec

    def inherit(self, parent: "_Process") -> None:
        """A forked child runs its parent's image as its parent's user until it execs."""
        self.exe, self.name, self.cmdline = parent.exe, parent.name, parent.cmdline
        self.uid, self.gid = parent.uid, parent.gid


class ProcessCache:
    """pid -> process details, read from /proc once and kept until the process exits.

    Bounded (least recently used entries go first) so that missed exit events cannot grow it
    without limit.
    """

    def __init__(self, proc_root: str = "/proc", max_entries: int = 8192) -> None:
        self.proc_root = proc_root
        self.max_entries = max_entries
        self._entries: "OrderedDict[int, _Process]" = OrderedDict()
        self._users: Dict[int, Optional[str]] = {}
        self._lock = threading.Lock()

    def lookup(self, pid: int) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """(process block, actor block) for the envelope; at least {"pid": pid} and {} when the
        process is gone and nothing was cached."""
        with self._lock:
            entry = self._entry(pid)
            if not entry.loaded:
                self._load(pid, entry)
            process = {
                "pid": pid,
                "ppid": entry.fork_ppid if entry.fork_ppid is not None else entry.ppid,
                "exe": entry.exe,
                "name": entry.name,
                "cmdline": entry.cmdline,
            }
            actor = {"uid": entry.uid, "gid": entry.gid, "user": self._user(entry.uid)}
        return ({k: v for k, v in process.items() if v is not None}, {k: v for k, v in actor.items() if v is not None})

    def note_fork(self, parent_pid: int, child_pid: int) -> None:
        """From sched:sched_process_fork: the child's parent, and its image until it execs."""
        with self._lock:
            parent = self._entries.get(parent_pid)
            child = _Process(fork_ppid=parent_pid)
            if parent is not None:
                child.inherit(parent)
            self._entries.pop(child_pid, None)
            self._store(child_pid, child)

    def note_exec(self, pid: int, filename: Optional[str] = None, comm: Optional[str] = None,
                  uid: Optional[int] = None, cmdline: bytes = b"", exe: Optional[str] = None) -> None:
        """From sched:sched_process_exec: the image changed, so re-read /proc on the next lookup;
        what the kernel said (file name, comm, uid) and what /proc showed at the exec (command
        line, executable) stay in case the process is gone by then."""
        with self._lock:
            entry = self._entry(pid)
            entry.exe, entry.name = exe or filename, comm or None
            entry.cmdline = cmdline_from_proc(cmdline) if cmdline else None
            if uid is not None:
                entry.uid = uid
            entry.loaded = False

    def note_uid(self, pid: int, uid: int) -> None:
        """The uid the kernel saw doing the TLS (a data record's): it wins over what fork passed
        down, which is the parent's when a setuid wrapper (setpriv, runuser, sudo) ran it and
        /proc is gone by the time the pipeline, behind a flood, looks."""
        with self._lock:
            entry = self._entry(pid)
            if entry.uid != uid:
                entry.uid, entry.gid = uid, None  # the gid known belonged to another user

    def note_comm(self, pid: int, comm: str) -> None:
        """A capture record's comm: the process name for a process that exits before the
        pipeline reads its /proc entry (a burst of short-lived clients)."""
        with self._lock:
            entry = self._entry(pid)
            entry.name = entry.name or comm or None

    def forget(self, pid: int) -> None:
        """From sched:sched_process_exit: the pid may be reused by an unrelated process."""
        with self._lock:
            self._entries.pop(pid, None)

    def _entry(self, pid: int) -> _Process:
        entry = self._entries.get(pid)
        if entry is None:
            entry = _Process()
            self._store(pid, entry)
        else:
            self._entries.move_to_end(pid)
        return entry

    def _store(self, pid: int, entry: _Process) -> None:
        self._entries[pid] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _load(self, pid: int, entry: _Process) -> None:
        """Fill what /proc still shows; each file on its own (exe needs privileges, and the
        process may exit between reads)."""
        base = f"{self.proc_root}/{pid}"
        status = _read_text(f"{base}/status")
        if status is None:
            return  # gone (or never existed): keep what the tracepoints told us
        for line in status.splitlines():
            key, _, value = line.partition(":")
            fields = value.split()
            if key == "PPid" and fields and fields[0].isdigit():
                entry.ppid = int(fields[0])
            elif key == "Uid" and fields and fields[0].isdigit():
                entry.uid = int(fields[0])  # real uid: who ran it
            elif key == "Gid" and fields and fields[0].isdigit():
                entry.gid = int(fields[0])
        try:
            entry.exe = os.readlink(f"{base}/exe")
        except OSError:
            pass
        comm = _read_text(f"{base}/comm")
        if comm:
            entry.name = comm.rstrip("\n")
        try:
            with open(f"{base}/cmdline", "rb") as fh:
                raw = fh.read()
        except OSError:
            raw = b""
        if raw:
            entry.cmdline = cmdline_from_proc(raw)
        entry.loaded = True

    def _user(self, uid: Optional[int]) -> Optional[str]:
        if uid is None:
            return None
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = None
        return self._users[uid]
