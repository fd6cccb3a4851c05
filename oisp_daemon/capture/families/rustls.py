"""rustls in static Rust binaries (Codex): recognised by the crate's source paths, probed at
aws-lc's AEAD calls when its crypto provider is aws-lc-rs (bpf/rustls.c says why there).

Release builds are stripped and export nothing, but keep the panic locations of their crates
("…/rustls-0.23.46/src/…") and aws-lc's OPENSSL_PUT_ERROR call sites, which pass the source
file and a reason code. EVP_AEAD_CTX_seal, _open and _init* are told apart by the set of reasons
their error sites pass (signatures/aws_lc.json); function bounds come from .eh_frame_hdr, which
Rust binaries always carry for unwinding. A file whose rustls cannot be probed (the ring
provider, another architecture, a signature that finds nothing or more than one function) is
still reported, supported=False, so that its processes are listed as unseen.
"""
from __future__ import annotations

import array
import bisect
import json
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from elftools.common.exceptions import ELFError

from ..elf_image import ElfImage
from ..probe_table import Location, ProbePoint, Scan
from .base import TlsFamily
from .code_refs import lea_rip, rel32_refs, string_addresses

SIGNATURES = Path(__file__).resolve().parent.parent / "signatures" / "aws_lc.json"
UNSUPPORTED = "rustls, static: not supported"

# A crate's own source path (not hyper-rustls' or tokio-rustls'): rustls is compiled in.
RUSTLS_SOURCE = re.compile(rb"(?<![\w-])rustls-(\d+\.\d+\.\d+)/src/")
AWS_LC_RS_SOURCE = re.compile(rb"(?<![\w-])aws-lc-rs-(\d+\.\d+\.\d+)/src/")
RING_SOURCE = re.compile(rb"(?<![\w-])ring-(\d+\.\d+\.\d+)/src/")

_LEA_LEN = 7  # lea r64, [rip + disp32]
_READ_CHUNK = 4 << 20
_MOV_EDX = re.compile(r"^edx, (0x[0-9a-f]+|\d+)$")
_MOV_R8D = re.compile(r"^r8d, (0x[0-9a-f]+|\d+)$")
_ARGS_WINDOW = 4  # instructions around the reason in which the line number (r8d) is set


@dataclass
class Function:
    """One function that names the signature's source file, and what its code shows."""

    start: int
    end: int
    reasons: Set[int] = field(default_factory=set)
    indirect_calls: int = 0  # calls (and tail calls) through a pointer
    direct_calls: Set[int] = field(default_factory=set)  # and tail calls


def load_signature(path: Path = SIGNATURES) -> Dict[str, Any]:
    """The aws-lc AEAD signature (the file holds one; its format is checked by the unit tests)."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return data["signatures"][0]


def rustls_version(rodata: bytes) -> Optional[str]:
    # bytes.find first: the regex alone takes seconds over a big binary's .rodata (Node: 47 MB,
    # 3.8 s), and discovery scans every executable a process maps
    pos = rodata.find(b"rustls-")
    while pos != -1:
        match = RUSTLS_SOURCE.match(rodata, pos)  # its lookbehind still sees the byte before pos
        if match is not None:
            return match.group(1).decode()
        pos = rodata.find(b"rustls-", pos + 1)
    return None


def text_xrefs(image: ElfImage, offset: int, size: int, addr: int, targets: Sequence[int]) -> List[int]:
    """Addresses of `lea reg, [rip+disp32]` instructions in the code that load one of `targets`,
    read in pieces so that memory stays small however big the code is (Codex: 260 MB); pieces
    overlap by an instruction's length."""
    found: Set[int] = set()
    for start in range(0, size, _READ_CHUNK):
        length = min(_READ_CHUNK, size - start)
        piece = image.read_at(offset + start, min(length + _LEA_LEN - 1, size - start))
        if piece is None:
            break
        found.update(rel32_refs(piece, 0, len(piece), addr + start, targets, 3, lea_rip))
    return sorted(found)


def function_starts(eh_frame_hdr: bytes, hdr_addr: int) -> Sequence[int]:
    """Sorted start addresses of every function with unwind information (.eh_frame_hdr's binary
    search table, in the usual encoding: datarel sdata4 pairs, udata4 count), as a compact array
    (Codex has 330k functions). Empty otherwise."""
    if len(eh_frame_hdr) < 12 or eh_frame_hdr[0] != 1:
        return ()
    ptr_enc, count_enc, table_enc = eh_frame_hdr[1], eh_frame_hdr[2], eh_frame_hdr[3]
    if ptr_enc & 0x0F not in (0x03, 0x0B) or count_enc != 0x03 or table_enc != 0x3B:
        return ()
    count = struct.unpack_from("<I", eh_frame_hdr, 8)[0]
    if 12 + count * 8 > len(eh_frame_hdr):
        return ()
    pairs = array.array("i", eh_frame_hdr[12:12 + count * 8])
    if sys.byteorder != "little":
        pairs.byteswap()
    starts = array.array("q", (hdr_addr + rel for rel in pairs[0::2]))
    if any(starts[i] > starts[i + 1] for i in range(len(starts) - 1)):
        starts = array.array("q", sorted(starts))  # the table is sorted by its definition; be sure
    return starts


def function_of(starts: Sequence[int], addr: int, limit: int, code_end: int) -> Optional[Tuple[int, int]]:
    """(start, end) of the function holding `addr`: end is the next function's start (or the end
    of the code), and a function longer than `limit` is not one of the small entry points we
    look for."""
    i = bisect.bisect_right(starts, addr) - 1
    if i < 0:
        return None
    start = starts[i]
    end = starts[i + 1] if i + 1 < len(starts) else min(code_end, start + limit)
    return (start, end) if addr < end and end - start <= limit else None


def _immediate(text: str) -> int:
    return int(text, 0)


def analyse(code: bytes, start: int) -> Function:
    """The error reasons, indirect and direct calls of one function's code."""
    import capstone  # a Debian package (python3-capstone), needed only for this scan

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    ins = list(md.disasm_lite(code, start))
    fn = Function(start, start + len(code))
    for i, (_addr, _size, mnemonic, ops) in enumerate(ins):
        if mnemonic in ("call", "jmp"):
            if not ops.startswith("0x"):
                fn.indirect_calls += 1  # a jmp through a register or memory is a tail call
            elif mnemonic == "call" or not fn.start <= int(ops, 16) < fn.end:
                fn.direct_calls.add(int(ops, 16))  # a jmp out of the function is a tail call
        elif mnemonic == "mov":
            reason = _MOV_EDX.match(ops)
            near = ins[max(0, i - _ARGS_WINDOW):i] + ins[i + 1:i + 1 + _ARGS_WINDOW]
            if reason and any(m == "mov" and _MOV_R8D.match(o) for _a, _s, m, o in near):
                fn.reasons.add(_immediate(reason.group(1)))
    return fn


def match(functions: Iterable[Function], reasons: Iterable[int], optional: Iterable[int],
          indirect_call: bool) -> List[Function]:
    """The functions whose error reasons include `reasons` and nothing beyond `optional`, and
    that call through a pointer (ctx->aead's methods) when `indirect_call` says they must."""
    need, allowed = set(reasons), set(reasons) | set(optional)
    return [f for f in functions if need <= f.reasons <= allowed and (f.indirect_calls > 0 or not indirect_call)]


class RustlsFamily(TlsFamily):
    name = "rustls"
    searches_code = True
    bpf_file = "rustls.c"
    points: Tuple[ProbePoint, ...] = (
        ProbePoint("EVP_AEAD_CTX_seal", "rustls_aead_seal"),
        ProbePoint("EVP_AEAD_CTX_open", "rustls_aead_open_enter", "rustls_aead_open_return"),
        ProbePoint("EVP_AEAD_CTX_init_with_direction", "rustls_aead_init"),
        ProbePoint("EVP_AEAD_CTX_init", "rustls_aead_init"),
    )
    required = ("EVP_AEAD_CTX_seal", "EVP_AEAD_CTX_open", "EVP_AEAD_CTX_init_with_direction")

    def scan(self, image: ElfImage) -> Optional[Scan]:
        rodata = image.section_bytes(".rodata")
        version = rustls_version(rodata) if rodata else None
        if version is None:
            return None
        try:
            return self._scan(image, rodata, version)
        except (ELFError, OSError, ValueError, struct.error, IndexError, KeyError) as exc:
            return self._unsupported(version, [f"scanning for aws-lc failed: {exc}"])

    def _unsupported(self, version: str, why: List[str], missing: Optional[List[str]] = None) -> Scan:
        return Scan(self.name, UNSUPPORTED, missing=list(missing or []), supported=False,
                    notes=[f"rustls {version} compiled in (crate source paths in .rodata)"] + why)

    def _scan(self, image: ElfImage, rodata: bytes, version: str) -> Scan:
        aws_lc = AWS_LC_RS_SOURCE.search(rodata)
        if aws_lc is None:
            provider = "ring" if RING_SOURCE.search(rodata) else "unknown"
            return self._unsupported(version, [f"crypto provider {provider}: only aws-lc-rs has probe points"])
        if image.machine != "EM_X86_64":
            return self._unsupported(version, [f"{image.machine}: aws-lc signatures exist for x86_64 only"])
        sig = load_signature()
        functions, problem = self._functions(image, rodata, sig)
        if problem:
            return self._unsupported(version, [problem])
        found: Dict[str, Function] = {}
        missing: List[str] = []
        for spec in sig["functions"]:
            hits = match(functions, spec["reasons"], spec["optional"], spec["indirect_call"])
            if len(hits) == 1:
                found[spec["name"]] = hits[0]
            else:
                missing.append(f"{spec['name']}: {len(hits)} functions match signature {sig['id']}")
        if any(name not in found for name in self.required):
            return self._unsupported(version, ["aws-lc's AEAD functions not located"], missing)
        method = f"signature:{sig['id']}/v{sig['version']}"
        locations = [Location(name, found[name].start, method) for name in self.required]
        notes = [
            f"rustls {version} on aws-lc-rs {aws_lc.group(1).decode()}: plaintext at aws-lc's AEAD seal/open",
            "TLS 1.3 records only; a connection is its read and write keys, paired at the handshake",
        ]
        init = found.get("EVP_AEAD_CTX_init")
        if init is not None and found["EVP_AEAD_CTX_init_with_direction"].start in init.direct_calls:
            notes.append("EVP_AEAD_CTX_init calls EVP_AEAD_CTX_init_with_direction: probed there only")
        elif init is not None:
            locations.append(Location("EVP_AEAD_CTX_init", init.start, method))
        return Scan(self.name, f"rustls {version} (aws-lc, static)", locations, missing, notes)

    def _functions(self, image: ElfImage, rodata: bytes, sig: Dict[str, Any]) -> Tuple[List[Function], str]:
        """Every function that passes the signature's source file to a call, analysed; or a
        sentence saying why there is none to look at."""
        rodata_addr = image.section_addr(".rodata")
        text = image.elf.get_section_by_name(".text")
        hdr = image.section_bytes(".eh_frame_hdr")
        hdr_addr = image.section_addr(".eh_frame_hdr")
        if rodata_addr is None or text is None or hdr is None or hdr_addr is None:
            return [], "no .rodata, .text or .eh_frame_hdr section"
        targets = string_addresses(rodata, 0, len(rodata), rodata_addr, sig["source_file"].encode(), tails=True)
        if not targets:
            return [], f"no aws-lc {sig['source_file']} in .rodata"
        starts = function_starts(hdr, hdr_addr)
        if not starts:
            return [], ".eh_frame_hdr has no search table in the usual encoding"
        xrefs = text_xrefs(image, int(text["sh_offset"]), int(text["sh_size"]), int(text["sh_addr"]), targets)
        code_end = int(text["sh_addr"]) + int(text["sh_size"])
        bounds = sorted({b for b in (function_of(starts, x, sig["max_function_bytes"], code_end) for x in xrefs) if b})
        functions = []
        for start, end in bounds:
            code_bytes = image.read_vaddr(start, end - start)
            if code_bytes is not None:
                functions.append(analyse(code_bytes, start))
        if not functions:
            return [], f"no function references {sig['source_file']}"
        return functions, ""
