"""Finding, in stripped x86-64 code, the strings a library names and the instructions that reach
them: the two searches the BoringSSL and rustls (aws-lc) locators both start from.

OPENSSL_PUT_ERROR passes __FILE__, so the file name of a library's source is a string in the
binary and its error sites are the instructions that load that string's address. Calls and
rip-relative loads carry a rel32 displacement; a Python decode of a 100-260 MB .text would take
minutes, so the search goes by the displacement's bytes instead: within a 64 KiB window of
instruction addresses the displacement to one target has at most two values of its top 16 bits,
and bytes.find (memchr speed, in C) finds the few candidates to check.
"""
from __future__ import annotations

import struct
from typing import Any, Callable, Iterable, List, Optional, Set

WINDOW = 1 << 16  # instruction addresses over which the displacement's top 16 bits take <= 2 values

# Does the instruction that starts at data[at] have the expected opcode bytes (those before rel32)?
OpcodeTest = Callable[[Any, int], bool]


def string_addresses(data: Any, start: int, end: int, vaddr: int, suffix: bytes,
                     tails: bool = False) -> List[int]:
    """Virtual addresses of the NUL-terminated strings in data[start:end] (at `vaddr`) that end
    in `suffix`. With `tails`, also every '/' inside them: a linker that merges string tails may
    make "crypto/x.c" the end of a longer path, and code then loads that inner address."""
    needle = suffix + b"\0"
    out: Set[int] = set()
    at = data.find(needle, start, end)
    while at >= 0:
        begin = data.rfind(b"\0", start, at) + 1 or start
        out.add(vaddr + begin - start)
        if tails:
            out.update(vaddr + i - start for i in range(begin + 1, at + 1) if data[i] == 0x2F)
        at = data.find(needle, at + 1, end)
    return sorted(out)


def opcode_is(opcode: bytes) -> OpcodeTest:
    """An OpcodeTest for fixed opcode bytes (e8: call rel32; 48 8d 0d: lea rcx, [rip + rel32])."""
    return lambda data, at: data[at:at + len(opcode)] == opcode


def lea_rip(data: Any, at: int) -> bool:
    """lea r64, [rip + rel32] into any register: REX.W or REX.WR, 8d, ModRM mod 00 rm 101."""
    return data[at] in (0x48, 0x4C) and data[at + 1] == 0x8D and data[at + 2] & 0xC7 == 0x05


def rel32_refs(data: Any, offset: int, size: int, vaddr: int, targets: Iterable[int], head: int,
               is_opcode: OpcodeTest, near: Optional[int] = None, enough: Optional[int] = None) -> List[int]:
    """Vaddrs of the instructions in the code at data[offset:offset+size] (mapped at `vaddr`)
    made of `head` opcode bytes (checked by `is_opcode`) and a rel32 landing on one of `targets`.

    Windows nearest `near` are searched first (callers tend to sit near their callee), and the
    search stops once `enough` instructions are found; without `enough` all are returned, sorted.
    """
    wanted = set(targets)
    length = head + 4
    lead = head + 2  # offset of the displacement's top half in the instruction
    found: Set[int] = set()
    windows = range(0, size, WINDOW)
    if near is not None:
        windows = sorted(windows, key=lambda w: abs(w + WINDOW // 2 - (near - vaddr)))
    for w0 in windows:
        w1 = min(size, w0 + WINDOW)  # instructions starting in [w0, w1)
        stop = offset + min(w1 - 1 + length, size)  # where the last of them ends
        tops = {struct.pack("<H", ((t - (vaddr + p + length)) & 0xFFFFFFFF) >> 16)
                for t in wanted for p in (w0, w1 - 1)}
        for top in tops:
            at = data.find(top, offset + w0 + lead, stop)
            while at >= 0:
                start = at - lead
                if start < offset + w1 and is_opcode(data, start):
                    rel = struct.unpack_from("<i", data, start + head)[0]
                    address = vaddr + start - offset
                    if address + length + rel in wanted:
                        found.add(address)
                        if enough is not None and len(found) >= enough:
                            return sorted(found)
                at = data.find(top, at + 1, stop)
    return sorted(found)
