"""Decoding of the records the BPF programs (bpf/emit.h) write into the ring buffer.

The C source is the one definition of the record format: RecHdr mirrors `struct rec_hdr` field
for field, the REC_* kinds mirror `enum record_kind`, and MAX_CHUNK is its CHUNK_LARGE.
tests/unit/test_record_layout.py compiles the C header and fails when any of these disagree.
"""
from __future__ import annotations

import ctypes
import ipaddress
from dataclasses import dataclass
from typing import Optional, Union

REC_WRITE = 1
REC_READ = 2
REC_SSL_FREE = 3
REC_SET_FD = 4
REC_CONNECT = 5
REC_FORK = 6
REC_EXEC = 7
REC_EXIT = 8
REC_MMAP = 9

MAX_CHUNK = 16384  # most data bytes one record carries (CHUNK_LARGE)

# The `ssl` of a plain-HTTP socket's records (bpf/sockets.c): PLAIN_TAG | connection number << 32
# | fd. Bit 63 is never set in a user-space pointer, so it cannot collide with a TLS connection.
PLAIN_TAG = 1 << 63


def is_plain(ssl: int) -> bool:
    """Whether a connection identity is a plain (not TLS) socket's."""
    return bool(ssl & PLAIN_TAG)


class RecHdr(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("ssl", ctypes.c_uint64),
        ("seq", ctypes.c_uint64),
        ("total", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
        ("kind", ctypes.c_uint16),
        ("family", ctypes.c_uint16),
        ("aux", ctypes.c_uint32),
        ("addr", ctypes.c_uint8 * 16),
        ("comm", ctypes.c_char * 16),
    ]


HDR_SIZE = ctypes.sizeof(RecHdr)


@dataclass
class DataChunk:
    """Part of the plaintext of one SSL_read/SSL_write call."""

    direction: str  # "write" | "read"
    pid: int
    tid: int
    uid: int
    ssl: int
    seq: int
    total: int
    offset: int
    ts_ns: int
    comm: str
    data: bytes
    read_failed: bool  # the kernel could not read the user buffer (len 0 with bytes expected)


@dataclass
class ConnEnd:
    pid: int
    ssl: int
    ts_ns: int


@dataclass
class SetFd:
    pid: int
    ssl: int
    fd: int
    ts_ns: int


@dataclass
class Connect:
    pid: int
    fd: int
    address: str
    port: int
    ts_ns: int


@dataclass
class Fork:
    parent_pid: int
    child_pid: int
    ts_ns: int


@dataclass
class Exec:
    pid: int
    filename: str
    comm: str
    uid: int
    ts_ns: int
    # /proc/<pid>/cmdline and exe, read by the ring poller as the record arrives (see
    # reader.snapshot_exec): a short-lived client is often gone by the time the pipeline gets here.
    proc_cmdline: bytes = b""
    proc_exe: Optional[str] = None


@dataclass
class Exit:
    pid: int
    ts_ns: int


@dataclass
class Mmap:
    """The process mapped a file executable: discovery rescans its maps."""

    pid: int
    ts_ns: int


Record = Union[DataChunk, ConnEnd, SetFd, Connect, Fork, Exec, Exit, Mmap]


def _address(h: RecHdr) -> str:
    raw = bytes(h.addr)
    if h.family == 2:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


def decode(ptr: int, size: int) -> Optional[Record]:
    """Turn one ring-buffer record into a typed record; None for a kind this version ignores."""
    if size < HDR_SIZE:
        return None
    h = RecHdr.from_address(ptr)
    kind = h.kind
    if kind in (REC_WRITE, REC_READ):
        n = min(h.len, size - HDR_SIZE)
        expected = min(h.total - h.offset, MAX_CHUNK)
        return DataChunk(
            direction="write" if kind == REC_WRITE else "read",
            pid=h.pid,
            tid=h.tid,
            uid=h.uid,
            ssl=h.ssl,
            seq=h.seq,
            total=h.total,
            offset=h.offset,
            ts_ns=h.ts_ns,
            comm=h.comm.decode("utf-8", "replace"),
            data=ctypes.string_at(ptr + HDR_SIZE, n),
            read_failed=n == 0 and expected > 0,
        )
    if kind == REC_SSL_FREE:
        return ConnEnd(h.pid, h.ssl, h.ts_ns)
    if kind == REC_SET_FD:
        return SetFd(h.pid, h.ssl, h.fd, h.ts_ns)
    if kind == REC_CONNECT:
        return Connect(h.pid, h.fd, _address(h), h.aux, h.ts_ns)
    if kind == REC_FORK:
        return Fork(h.pid, h.aux, h.ts_ns)
    if kind == REC_EXEC:
        raw = ctypes.string_at(ptr + HDR_SIZE, min(h.len, size - HDR_SIZE))
        filename = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        return Exec(h.pid, filename, h.comm.decode("utf-8", "replace"), h.uid, h.ts_ns)
    if kind == REC_EXIT:
        return Exit(h.pid, h.ts_ns)
    if kind == REC_MMAP:
        return Mmap(h.pid, h.ts_ns)
    return None
