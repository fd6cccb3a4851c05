"""BoringSSL without symbols (Bun, Claude Code): the signatures' self-test on the real binaries,
the negative cases (OpenSSL), and the verification rules failing on patched copies."""
from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Dict, List, Optional

import capstone
import pytest

from oisp_daemon.capture.elf_image import ElfImage
from oisp_daemon.capture.families import FAMILIES, bpf_files, family
from oisp_daemon.capture.families.boringssl import BoringSslFamily, load_signatures
from oisp_daemon.capture.probe_table import Scan
from tests.support.bun import bun, claude
from tests.support.node import static_node

SIGNATURES = load_signatures()
LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
PROBED = ("SSL_read", "SSL_write")
SHARED = BoringSslFamily()  # one cache (by file version) for the tests that scan the same files


def scan(path: str, fam: Optional[BoringSslFamily] = None) -> Optional[Scan]:
    with ElfImage(path) as image:
        return (fam or SHARED).scan(image)


def located(result: Optional[Scan]) -> Dict[str, int]:
    assert result is not None
    return {loc.point: loc.address for loc in result.locations}


def disassemble(path: str, address: int, count: int) -> List[capstone.CsInsn]:
    """`count` instructions from `address`, decoded linearly (independently of the family)."""
    with ElfImage(path) as image:
        code = image.read_vaddr(address, 16 * count)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return list(md.disasm(code, address, count))


@pytest.fixture(scope="module")
def scans() -> Dict[str, Dict[str, Scan]]:
    """Every signature on its own, applied to both real binaries."""
    out: Dict[str, Dict[str, Scan]] = {}
    for sig in SIGNATURES:
        fam = BoringSslFamily((sig,))
        out[sig.id] = {"bun": scan(bun(), fam), "claude": scan(claude(), fam)}
    return out


def test_family_is_registered_with_openssl_probes():
    fam = family("boringssl")
    assert isinstance(fam, BoringSslFamily) and fam.bpf_file == "openssl.c" in bpf_files()
    openssl = {p.name: p for p in family("openssl").points}
    assert [p.name for p in fam.points] == ["SSL_write", "SSL_read"]
    assert all(p == openssl[p.name] for p in fam.points)
    assert [f.name for f in FAMILIES].index("boringssl") > [f.name for f in FAMILIES].index("openssl")


def test_signature_file_is_consistent():
    assert len({s.id for s in SIGNATURES}) == len(SIGNATURES)
    for sig in SIGNATURES:
        names = [f.name for f in sig.functions]
        assert len(set(names)) == len(names)
        assert {f.name for f in sig.functions if f.probe} <= {p.name for p in BoringSslFamily.points}
        for n, spec in enumerate(sig.functions):
            assert spec.reasons, spec.name
            # a function's rules may only refer to functions located before it
            assert set(spec.verify.get("calls", ())) <= set(names[:n]), spec.name


def test_every_signature_finds_read_and_write_in_bun_and_claude(scans):
    for sig in SIGNATURES:
        for name, result in scans[sig.id].items():
            assert result is not None and result.library == "BoringSSL (Bun, built in)", name
            assert sorted(located(result)) == sorted(PROBED), (name, result.missing)
            assert {loc.method for loc in result.locations} == {sig.method}
            assert result.missing == []


def test_bun_and_claude_results_agree(scans):
    """Two BoringSSL revisions (their error lines differ) give the same functions: the located
    code opens with the same instructions in both binaries, registers and offsets included."""
    for sig in SIGNATURES:
        bun_at, claude_at = located(scans[sig.id]["bun"]), located(scans[sig.id]["claude"])
        for point in PROBED:
            ours = disassemble(bun(), bun_at[point], 12)
            theirs = disassemble(claude(), claude_at[point], 12)
            assert [(i.mnemonic, i.op_str) for i in ours[:6]] == [(i.mnemonic, i.op_str) for i in theirs[:6]]
            assert [i.mnemonic for i in ours] == [i.mnemonic for i in theirs], point


def test_located_functions_take_ssl_buf_num(scans):
    """Independently of the walk: each function keeps all three arguments (ssl, buf, num) and
    checks the QUIC method at ssl+0x98 before anything else can fail."""
    for sig in SIGNATURES:
        for name, path in (("bun", bun()), ("claude", claude())):
            for point, address in located(scans[sig.id][name]).items():
                text = " ; ".join("%s %s" % (i.mnemonic, i.op_str) for i in disassemble(path, address, 40))
                assert "ptr [rdi + 0x98], 0" in text or "ptr [rbx + 0x98], 0" in text, text
                for arg in ("rdi", "rsi", "edx"):
                    assert ", %s" % arg in text, (name, point, arg, text)


def test_openssl_is_not_boringssl():
    assert scan(static_node()) is None
    assert scan(LIBSSL) is None


def test_signatures_find_nothing_in_openssl_even_pointed_at_its_ssl_lib():
    """The same rules with OpenSSL's file name (ssl/ssl_lib.c) locate nothing in a Node with
    OpenSSL linked in (the upstream build: /usr/bin/node is Debian's, on the system libssl, on a
    fresh machine) or in libssl."""
    for sig in SIGNATURES:
        fam = BoringSslFamily((dataclasses.replace(sig, source_file="ssl/ssl_lib.c"),))
        for path in (static_node(), LIBSSL):
            result = scan(path, fam)
            assert result is not None and result.locations == [], path
            assert sorted(m.split(":")[0] for m in result.missing) == sorted(PROBED)


def test_odd_files_scan_as_nothing(tmp_path):
    truncated = tmp_path / "bun-head"
    with open(bun(), "rb") as src:
        truncated.write_bytes(src.read(8 << 20))
    assert scan(str(truncated)) is None
    assert scan("/bin/true") is None


def test_a_signature_that_matches_two_functions_locates_neither():
    """Without its verify rules SSL_read's reason set (66 alone) fits two functions of Bun."""
    sig = SIGNATURES[0]
    loose = tuple(dataclasses.replace(f, verify={}) if f.name == "SSL_read" else f for f in sig.functions)
    result = scan(bun(), BoringSslFamily((dataclasses.replace(sig, functions=loose),)))
    assert result is not None and "SSL_read" not in located(result) and "SSL_write" in located(result)
    assert any(m.startswith("SSL_read: 2 candidates pass") for m in result.missing), result.missing


def _patch(path: str, vaddr: int, data: bytes) -> None:
    with ElfImage(path) as image:
        offset = image.vaddr_to_offset(vaddr)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _first(path: str, address: int, mnemonic: str, op_str_start: str) -> capstone.CsInsn:
    return next(i for i in disassemble(path, address, 150)
                if i.mnemonic == mnemonic and i.op_str.startswith(op_str_start))


@pytest.fixture(scope="module")
def patched_bun(tmp_path_factory):
    """A copy of Bun in which SSL_write reports BAD_LENGTH as another reason and SSL_read's
    memcpy call is a NOP, with the original scan and the copy's original mtime."""
    path = str(tmp_path_factory.mktemp("patched") / "bun")
    shutil.copyfile(bun(), path)
    original = scan(path)
    at = located(original)
    bad_length = _first(path, at["SSL_write"], "mov", "edx, 0x6f")
    copy = _first(path, at["SSL_read"], "call", "qword ptr [rip")
    assert copy.size == 6
    mtime = os.stat(path).st_mtime_ns
    _patch(path, bad_length.address + 1, (0x70).to_bytes(4, "little"))
    _patch(path, copy.address, bytes.fromhex("660f1f440000"))
    return path, original, mtime


def test_patched_functions_fail_verification(patched_bun):
    path, original, _ = patched_bun
    result = scan(path)
    assert result is not None and result.locations == []
    missing = {m.split(":")[0]: m for m in result.missing}
    assert "no function reports exactly reasons 66, 111, 215, 226" in missing["SSL_write"]
    assert "calls none of memcpy, memmove" in missing["SSL_read"]
    assert "%#x" % located(original)["SSL_read"] in missing["SSL_read"]


def test_scans_are_cached_by_file_version(patched_bun):
    """A family rescans a file only when its version (device, inode, size, mtime) changes.
    (Runs after the test above: it puts the original bytes back into the copy.)"""
    path, original, mtime = patched_bun
    fam = BoringSslFamily()
    os.utime(path, ns=(mtime, mtime))
    assert scan(path, fam).locations == []
    shutil.copyfile(bun(), path)  # the original bytes again, same inode and size
    os.utime(path, ns=(mtime, mtime))
    assert scan(path, fam).locations == []  # the cached result of this version
    os.utime(path, ns=(mtime + 1000, mtime + 1000))
    assert located(scan(path, fam)) == located(original)

