"""families/code_refs.py: the string and rel32 searches the BoringSSL and rustls locators start
from, checked against a brute-force decode of random code around the 64 KiB window edges."""
from __future__ import annotations

import random
import struct
from typing import List

from oisp_daemon.capture.families.code_refs import WINDOW, lea_rip, opcode_is, rel32_refs, string_addresses

CALL = opcode_is(b"\xe8")


def test_string_addresses_find_each_string_ending_in_the_suffix():
    data = b"\0\0ssl/ssl_lib.cc\0x/boringssl/ssl/ssl_lib.cc\0ssl_lib.cc.o\0"
    base = 0x5000
    assert string_addresses(data, 0, len(data), base, b"ssl/ssl_lib.cc") == [base + 2, base + 17]
    assert string_addresses(data, 17, len(data), base + 17, b"ssl/ssl_lib.cc") == [base + 17]  # a range
    assert string_addresses(data, 0, len(data), base, b"nothing.cc") == []


def test_string_addresses_with_tails_add_each_inner_slash():
    rodata = b"xx\0/b/aws-lc/crypto/fipsmodule/cipher/aead.c\0zz"
    base = 0x1000
    found = string_addresses(rodata, 0, len(rodata), base, b"crypto/fipsmodule/cipher/aead.c", tails=True)
    begin = base + 3
    slashes = [base + i for i, ch in enumerate(rodata) if ch == ord("/") and 3 < i <= rodata.index(b"crypto")]
    assert found == sorted({begin, *slashes})


def _random_code(rng: random.Random, size: int) -> bytearray:
    return bytearray(rng.getrandbits(8) for _ in range(size))


def _brute(code: bytes, code_addr: int, head: int, is_opcode, targets: List[int]) -> List[int]:
    return [code_addr + i for i in range(len(code) - head - 3) if is_opcode(code, i)
            and code_addr + i + head + 4 + struct.unpack_from("<i", code, i + head)[0] in targets]


def test_lea_refs_match_a_full_decode():
    """leas to two targets placed on and around the window edges, in code that does not start
    at the buffer's start."""
    rng = random.Random(7)
    size = 3 * WINDOW + 123
    code = _random_code(rng, size)
    code_addr, targets = 0x4000_0000, [0x10000, 0x7000_0000]
    placed: List[int] = []
    for offset in (0, 9, WINDOW - 10, WINDOW - 3, WINDOW + 4, 2 * WINDOW - 1, 3 * WINDOW + 100, size - 7):
        target = targets[len(placed) % 2]
        addr = code_addr + offset
        code[offset:offset + 7] = bytes([rng.choice([0x48, 0x4C]), 0x8D, rng.choice([0x05, 0x0D, 0x3D])]) \
            + struct.pack("<i", target - (addr + 7))
        placed.append(addr)
    prefix = b"\x00" * 11
    assert rel32_refs(prefix + bytes(code), len(prefix), size, code_addr, targets, 3, lea_rip) == sorted(placed)
    assert _brute(bytes(code), code_addr, 3, lea_rip, targets) == sorted(placed)


def test_calls_nearest_first_stop_at_enough():
    rng = random.Random(11)
    size = 8 * WINDOW
    code = _random_code(rng, size)
    code_addr = 0x40_0000
    callee = code_addr + 5 * WINDOW + 100
    sites = [code_addr + off for off in (200, 3 * WINDOW + 7, 5 * WINDOW + 40, 6 * WINDOW - 5, 8 * WINDOW - 5)]
    for site in sites:
        off = site - code_addr
        code[off:off + 5] = b"\xe8" + struct.pack("<i", callee - (site + 5))
    everything = rel32_refs(bytes(code), 0, size, code_addr, [callee], 1, CALL)
    assert everything == _brute(bytes(code), code_addr, 1, CALL, [callee])
    assert set(sites) <= set(everything)
    nearest = rel32_refs(bytes(code), 0, size, code_addr, [callee], 1, CALL, near=callee, enough=2)
    assert nearest == sorted(sites[2:4])  # the two in the callee's window, searched first


def test_no_instruction_past_the_end_of_the_code():
    code_addr, target = 0x1000, 0x9000
    call = b"\xe8" + struct.pack("<i", target - (code_addr + 5))
    assert rel32_refs(call, 0, 5, code_addr, [target], 1, CALL) == [code_addr]
    assert rel32_refs(call + b"\0", 0, 4, code_addr, [target], 1, CALL) == []  # cut short
    assert rel32_refs(b"", 0, 0, code_addr, [target], 1, CALL) == []
