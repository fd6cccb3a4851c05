"""The uprobes a process really has attached, as the kernel reports them.

bcc attaches uprobes through perf_event_open, which leaves no trace in tracefs; the kernel
answers BPF_TASK_FD_QUERY for each perf-event descriptor of the process instead (what
`bpftool perf` prints): the file and offset of each uprobe and uretprobe. The tests compare this
with what the daemon says, so a probe attached twice, or left behind, cannot hide.
"""
from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass
from typing import List, Optional, Tuple

BPF_TASK_FD_QUERY = 20
BPF_FD_TYPE_UPROBE = 4
BPF_FD_TYPE_URETPROBE = 5
SYS_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]


class _TaskFdQuery(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_uint32),
        ("fd", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("buf_len", ctypes.c_uint32),
        ("buf", ctypes.c_uint64),
        ("prog_id", ctypes.c_uint32),
        ("fd_type", ctypes.c_uint32),
        ("probe_offset", ctypes.c_uint64),
        ("probe_addr", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class Uprobe:
    path: str
    offset: int
    ret: bool  # a uretprobe
    fd: int

    @property
    def identity(self) -> Optional[Tuple[int, int]]:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)


_libc = ctypes.CDLL(None, use_errno=True)


def _query(pid: int, fd: int) -> Optional[Uprobe]:
    buf = ctypes.create_string_buffer(4096)
    attr = _TaskFdQuery(pid=pid, fd=fd, buf_len=len(buf), buf=ctypes.addressof(buf))
    if _libc.syscall(SYS_BPF, BPF_TASK_FD_QUERY, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        return None  # not a BPF-attached perf event (or gone meanwhile)
    if attr.fd_type not in (BPF_FD_TYPE_UPROBE, BPF_FD_TYPE_URETPROBE):
        return None
    return Uprobe(buf.value.decode(), attr.probe_offset, attr.fd_type == BPF_FD_TYPE_URETPROBE, fd)


def attached_uprobes(pid: int) -> List[Uprobe]:
    """Every uprobe and uretprobe with a BPF program that process `pid` holds (needs root)."""
    out = []
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, name)) != "anon_inode:[perf_event]":
                continue
        except OSError:
            continue
        probe = _query(pid, int(name))
        if probe is not None:
            out.append(probe)
    return out
