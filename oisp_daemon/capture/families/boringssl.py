"""BoringSSL built into executables that export no SSL_* symbols: Bun and Bun-compiled CLIs
(Claude Code). SSL_read and SSL_write are found from the code itself and verified on it.

The handle is BoringSSL's error reporting. OPENSSL_PUT_ERROR(SSL, reason) compiles to
ERR_put_error(ERR_LIB_SSL, 0, reason, __FILE__, __LINE__): the file name of ssl_lib.cc is a
string in the binary, and every instruction that loads its address into the fourth argument
register is an error site of a function of that file. Walking each such function from its entry
gives the set of reasons it reports; reason codes are public constants of ssl.h, so the set names
the function across releases where line numbers and code layout do not. The signatures
(signatures/boringssl.json) are data: per function its reason set and the structural rules it must
also pass on the binary (prologue, direct callers, arguments read, calls it makes). A point is
returned only when exactly one function passes all of them; anything else is reported missing,
never guessed.

The walk is a bounded depth-first pass over the function's instructions (python3-capstone) that
tracks constants in the argument registers, so a shared `call ERR_put_error` reached by jumps from
several sites still yields each site's reason. Results are cached by file version, since discovery
scans every exec: the first scan of a 100 MB binary takes about a second.
"""
from __future__ import annotations

import json
import mmap
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Set, Tuple

import capstone
from capstone import x86 as cs_x86
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..elf_image import ElfImage, Version
from ..probe_table import Location, Scan
from .base import TlsFamily
from .code_refs import opcode_is, rel32_refs, string_addresses
from .symbols import OpenSslFamily

SIGNATURES_PATH = Path(__file__).resolve().parent.parent / "signatures" / "boringssl.json"

# Argument registers tracked for constants (SysV: rdi, rsi, rdx, rcx, r8 = args 1-5), by family.
_TRACKED = ("rdi", "rsi", "rdx", "rcx", "r8")
_ARGS = frozenset(("rdi", "rsi", "rdx"))
_FAMILY = {}
for _full, _subs in (("rdi", "edi di dil"), ("rsi", "esi si sil"), ("rdx", "edx dx dl dh"),
                     ("rcx", "ecx cx cl ch"), ("r8", "r8d r8w r8b")):
    for _name in [_full] + _subs.split():
        _FAMILY[_name] = _full
_NORETURN = frozenset(("abort", "__stack_chk_fail", "exit", "_exit", "__assert_fail"))
_STOP = frozenset(("ret", "retf", "int3", "ud2", "hlt"))
_MAX_STEPS = 40000  # instruction visits per function walk; a larger walk is not a match
_MAX_STARTS = 4  # candidate entries tried below one error site
_CALL = opcode_is(b"\xe8")  # call rel32
_LEA_RCX = opcode_is(b"\x48\x8d\x0d")  # lea rcx, [rip + rel32]: the file name as 4th argument
_CACHE_SIZE = 64

Consts = Tuple[Optional[int], ...]  # values of _TRACKED, None where unknown


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    probe: bool
    reasons: FrozenSet[int]
    verify: Dict[str, Any]


@dataclass(frozen=True)
class Signature:
    id: str
    version: int
    library: str
    arch: str
    source_file: str
    error_library: int
    padding: bytes
    alignment: int
    prologues: Tuple[bytes, ...]
    max_function_bytes: int
    functions: Tuple[FunctionSpec, ...]

    @property
    def method(self) -> str:
        """How a Location found by this signature says it was found."""
        return "signature:%s@%d" % (self.id, self.version)


def load_signatures(path: Path = SIGNATURES_PATH) -> Tuple[Signature, ...]:
    """The signatures of `path` (signatures/boringssl.json); raises on a malformed file."""
    doc = json.loads(path.read_text())
    if doc.get("format") != 1:
        raise ValueError("%s: unknown format %r" % (path, doc.get("format")))
    sigs = []
    for s in doc["signatures"]:
        funcs = tuple(FunctionSpec(f["name"], bool(f["probe"]), frozenset(f["reasons"]),
                                   dict(f.get("verify", {}))) for f in s["functions"])
        sigs.append(Signature(
            id=s["id"], version=int(s["version"]), library=s["library"], arch=s["arch"],
            source_file=s["source_file"], error_library=int(s["error_library"]),
            padding=bytes(bytearray(int(b, 16) for b in s["function_padding"])),
            alignment=int(s["function_alignment"]),
            prologues=tuple(bytes.fromhex(p) for p in s["prologues"]),
            max_function_bytes=int(s["max_function_bytes"]), functions=funcs))
    return tuple(sigs)


@dataclass(frozen=True)
class _Found:
    """A located and verified function."""
    name: str
    address: int  # virtual address in the file
    method: str  # "signature:<id>@<version>"
    evidence: str  # what held, for tls-scan


@dataclass
class _Located:
    """What one signature found in one file."""
    library: str
    found: Dict[str, _Found] = field(default_factory=dict)  # probe points only
    missing: List[str] = field(default_factory=list)  # "SSL_read: <why>"
    notes: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Section:
    name: str
    vaddr: int
    offset: int
    size: int

    def contains(self, vaddr: int) -> bool:
        return self.vaddr <= vaddr < self.vaddr + self.size


class _Binary:
    """An x86-64 ELF file mapped read-only: its code and data sections and its imports."""

    def __init__(self, fh: Any, elf: ELFFile) -> None:
        self.data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.code: List[_Section] = []
        self.rodata: List[_Section] = []  # read-only data: where string literals live
        self._relocations: List[Tuple[int, int, int, int]] = []  # (offset, size, symtab, strtab)
        headers = [(sec.name, sec.header) for sec in elf.iter_sections()]
        for name, h in headers:
            inside = h["sh_offset"] + h["sh_size"] <= len(self.data)
            if h["sh_type"] == "SHT_PROGBITS" and h["sh_flags"] & 0x2 and inside:  # SHF_ALLOC
                s = _Section(name, h["sh_addr"], h["sh_offset"], h["sh_size"])
                if h["sh_flags"] & 0x4:  # SHF_EXECINSTR
                    self.code.append(s)
                elif not h["sh_flags"] & 0x1:  # not SHF_WRITE
                    self.rodata.append(s)
            elif h["sh_type"] == "SHT_RELA" and h["sh_flags"] & 0x2 and inside \
                    and h["sh_link"] < len(headers):
                symtab = headers[h["sh_link"]][1]
                if symtab["sh_link"] < len(headers):
                    self._relocations.append((h["sh_offset"], h["sh_size"], symtab["sh_offset"],
                                              headers[symtab["sh_link"]][1]["sh_offset"]))
        self.sections = {name for name, _ in headers}
        self.position_dependent = elf["e_type"] == "ET_EXEC"
        self.text = next((s for s in self.code if s.name == ".text"), None)
        self._got: Optional[Dict[int, str]] = None
        self._md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self._md.detail = True

    def close(self) -> None:
        self.data.close()

    def code_section(self, vaddr: int) -> Optional[_Section]:
        return next((s for s in self.code if s.contains(vaddr)), None)

    def offset(self, vaddr: int) -> Optional[int]:
        s = self.code_section(vaddr)
        return None if s is None else s.offset + vaddr - s.vaddr

    def decode(self, vaddr: int) -> Optional[Any]:
        off = self.offset(vaddr)
        if off is None:
            return None
        return next(self._md.disasm(self.data[off:off + 16], vaddr, 1), None)

    def got_names(self) -> Dict[int, str]:
        """GOT slot -> imported symbol name, from the dynamic relocations (Elf64_Rela entries
        read directly: pyelftools takes a second for the few hundred of a big binary)."""
        if self._got is None:
            self._got = {}
            for offset, size, symtab, strtab in self._relocations:
                for at in range(offset, offset + size - 23, 24):
                    r_offset, r_info = struct.unpack_from("<QQ", self.data, at)
                    sym = r_info >> 32
                    if not sym or symtab + sym * 24 + 4 > len(self.data):
                        continue
                    name_at = strtab + struct.unpack_from("<I", self.data, symtab + sym * 24)[0]
                    end = self.data.find(b"\x00", name_at, name_at + 256)
                    if end > name_at:
                        self._got[r_offset] = self.data[name_at:end].decode("ascii", "replace")
        return self._got

    def import_name(self, vaddr: int, through_slot: bool) -> Optional[str]:
        """The imported function a call reaches: through a GOT slot, or a PLT stub's jump."""
        if through_slot:
            return self.got_names().get(vaddr)
        sec = self.code_section(vaddr)
        if sec is None or sec.name == ".text":
            return None
        for _ in range(2):  # endbr64, then jmp [rip + slot]
            ins = self.decode(vaddr)
            if ins is None:
                return None
            if ins.mnemonic == "jmp":
                slot = _rip_target(ins)
                return None if slot is None else self.got_names().get(slot)
            vaddr += ins.size
        return None


def _rip_target(ins: Any) -> Optional[int]:
    """The address a [rip + disp] memory operand of `ins` refers to."""
    for op in ins.operands:
        if op.type == cs_x86.X86_OP_MEM and op.mem.base == cs_x86.X86_REG_RIP and op.mem.index == 0:
            return ins.address + ins.size + op.mem.disp
    return None


@dataclass(frozen=True)
class _Insn:
    """What the walk needs of one instruction, decoded once."""
    address: int
    size: int
    kind: str  # seq | call | jmp | jcc | stop
    target: Optional[int]  # direct branch target
    slot: Optional[int]  # call/jmp through [rip + disp]: the slot
    reads: FrozenSet[str]  # tracked register families read
    sets: Tuple[Tuple[str, Optional[int]], ...]  # tracked families written, with their new value
    store: bool  # writes memory other than the stack


def _summarize(ins: Any) -> _Insn:
    mnem = ins.mnemonic
    reads_ids, writes_ids = ins.regs_access()
    reads = {_FAMILY.get(ins.reg_name(r)) for r in reads_ids}
    writes = {_FAMILY.get(ins.reg_name(r)) for r in writes_ids}
    ops = ins.operands
    value: Optional[int] = None
    if mnem == "xor" and len(ops) == 2 and ops[0].type == ops[1].type == cs_x86.X86_OP_REG \
            and ops[0].reg == ops[1].reg:
        reads = set()  # the zero idiom reads nothing
        value = 0
    elif mnem == "mov" and len(ops) == 2 and ops[0].type == cs_x86.X86_OP_REG \
            and ops[1].type == cs_x86.X86_OP_IMM:
        value = ops[1].imm & ((1 << (8 * ops[0].size)) - 1)
    elif mnem == "lea" and len(ops) == 2:
        value = _rip_target(ins)
    sets = tuple((f, value) for f in _TRACKED if f in writes)
    store = any(op.type == cs_x86.X86_OP_MEM and op.access & capstone.CS_AC_WRITE
                and op.mem.base not in (cs_x86.X86_REG_RSP, cs_x86.X86_REG_RBP) for op in ops)
    target = slot = None
    if capstone.CS_GRP_CALL in ins.groups:
        kind = "call"
    elif mnem == "jmp":
        kind = "jmp"
    elif capstone.CS_GRP_JUMP in ins.groups:
        kind = "jcc"
    elif mnem in _STOP:
        kind = "stop"
    else:
        kind = "seq"
    if kind in ("call", "jmp", "jcc") and len(ops) == 1:
        if ops[0].type == cs_x86.X86_OP_IMM:
            target = ops[0].imm
        else:
            slot = _rip_target(ins)
    return _Insn(ins.address, ins.size, kind, target, slot,
                 frozenset(f for f in reads if f in _ARGS), sets, store)


@dataclass(frozen=True)
class _Site:
    """An ERR_put_error call (or tail jump) reached with this source file's name as __FILE__."""
    address: int
    lib: Optional[int]
    reason: Optional[int]
    line: Optional[int]
    callee: Optional[int]


@dataclass
class _Function:
    start: int
    reached: Set[int] = field(default_factory=set)
    sites: Set[_Site] = field(default_factory=set)
    calls: Set[int] = field(default_factory=set)  # direct call targets
    imports: List[Tuple[int, str]] = field(default_factory=list)  # (call address, name)
    indirect_calls: int = 0  # calls through a register or [reg + disp]
    stores: Set[int] = field(default_factory=set)  # addresses of non-stack memory writes
    args_read: Set[str] = field(default_factory=set)  # argument registers read before written
    complete: bool = True  # decoded cleanly, within the step bound

    def reasons(self, error_library: int) -> Optional[FrozenSet[int]]:
        """The reasons it reports, or None if a site's library or reason is not a constant."""
        out = set()
        for s in self.sites:
            if s.lib is None or s.reason is None:
                return None
            if s.lib == error_library:
                out.add(s.reason)
        return frozenset(out)


class _Walker:
    """Bounded depth-first walks over functions, instructions decoded once per address."""

    def __init__(self, binary: _Binary, files: FrozenSet[int]) -> None:
        self.binary = binary
        self.files = files
        self._insns: Dict[int, Optional[_Insn]] = {}
        self._functions: Dict[Tuple[int, int], _Function] = {}

    def insn(self, vaddr: int) -> Optional[_Insn]:
        if vaddr not in self._insns:
            raw = self.binary.decode(vaddr)
            self._insns[vaddr] = None if raw is None else _summarize(raw)
        return self._insns[vaddr]

    def function(self, start: int, limit: int) -> _Function:
        key = (start, limit)
        if key not in self._functions:
            self._functions[key] = self._walk(start, limit)
        return self._functions[key]

    def _site(self, ins: _Insn, consts: Consts, callee: Optional[int]) -> Optional[_Site]:
        if consts[3] not in self.files:
            return None
        return _Site(ins.address, consts[0], consts[2], consts[4], callee)

    def _walk(self, start: int, limit: int) -> _Function:
        fn = _Function(start)
        lo, hi = start, start + limit
        unknown: Consts = (None,) * len(_TRACKED)
        stack: List[Tuple[int, Consts, FrozenSet[str]]] = [(start, unknown, frozenset())]
        seen: Set[Tuple[int, Consts, FrozenSet[str]]] = set()
        steps = 0
        while stack:
            addr, consts, written = stack.pop()
            while True:
                state = (addr, consts, written)
                if state in seen:
                    break
                seen.add(state)
                steps += 1
                ins = self.insn(addr)
                if ins is None or steps > _MAX_STEPS:
                    fn.complete = False
                    return fn
                fn.reached.add(addr)
                fn.args_read |= ins.reads - written
                if ins.store:
                    fn.stores.add(addr)
                if ins.sets:
                    values = dict(zip(_TRACKED, consts))
                    values.update(ins.sets)
                    consts = tuple(values[f] for f in _TRACKED)
                    written = written | frozenset(f for f, _ in ins.sets if f in _ARGS)
                nxt = addr + ins.size
                if ins.kind == "stop":
                    break
                if ins.kind == "jcc":
                    if ins.target is not None and lo <= ins.target < hi:
                        stack.append((ins.target, consts, written))
                    addr = nxt
                    continue
                if ins.kind == "jmp":
                    if ins.target is not None and lo <= ins.target < hi:
                        addr = ins.target
                        continue
                    site = self._site(ins, consts, ins.target)  # a tail call
                    if site is not None:
                        fn.sites.add(site)
                    break
                if ins.kind == "call":
                    site = self._site(ins, consts, ins.target)
                    if site is not None:
                        fn.sites.add(site)
                    name = None
                    if ins.target is not None:
                        fn.calls.add(ins.target)
                        name = self.binary.import_name(ins.target, through_slot=False)
                    elif ins.slot is not None:
                        name = self.binary.import_name(ins.slot, through_slot=True)
                    else:
                        fn.indirect_calls += 1
                    if name is not None:
                        fn.imports.append((addr, name.split("@")[0]))
                        if name.split("@")[0] in _NORETURN:
                            break
                    consts, written = unknown, written | _ARGS  # clobbered by the callee
                addr = nxt
        return fn


def _string_addresses(binary: _Binary, suffix: bytes) -> FrozenSet[int]:
    """Virtual addresses of the NUL-terminated strings in the read-only data ending in `suffix`."""
    return frozenset(addr for sec in binary.rodata
                     for addr in string_addresses(binary.data, sec.offset, sec.offset + sec.size, sec.vaddr, suffix))


def _direct_callers(binary: _Binary, text: _Section, target: int, enough: int) -> List[int]:
    """Up to `enough` `call rel32` sites of `target`, the nearest searched first."""
    return rel32_refs(binary.data, text.offset, text.size, text.vaddr, (target,), 1, _CALL,
                      near=target, enough=enough)


def _file_references(binary: _Binary, text: _Section, files: FrozenSet[int]) -> List[int]:
    """Instructions loading a file-name string into rcx: `mov ecx, imm32` in a position-dependent
    executable, `lea rcx, [rip + disp]` in a position-independent file."""
    if not binary.position_dependent:
        return rel32_refs(binary.data, text.offset, text.size, text.vaddr, files, 3, _LEA_RCX)
    refs = []
    end = text.offset + text.size
    for addr in files:
        imm = struct.pack("<I", addr)
        at = binary.data.find(imm, text.offset + 1, end)
        while at >= 0:
            if binary.data[at - 1] == 0xB9:  # mov ecx, imm32
                refs.append(text.vaddr + at - 1 - text.offset)
            elif binary.data[at - 3:at] == b"\x48\xc7\xc1":  # mov rcx, imm32
                refs.append(text.vaddr + at - 3 - text.offset)
            at = binary.data.find(imm, at + 1, end)
    return sorted(refs)


def _entries_below(binary: _Binary, sig: Signature, text: _Section, addr: int) -> Iterator[int]:
    """Candidate function entries at or below `addr`, nearest first: aligned addresses right
    after padding that start with a known prologue."""
    a = addr - addr % sig.alignment
    floor = max(text.vaddr + 1, addr - sig.max_function_bytes)
    while a >= floor:
        off = text.offset + a - text.vaddr
        if binary.data[off - 1] in sig.padding and any(
                binary.data[off:off + len(p)] == p for p in sig.prologues):
            yield a
        a -= sig.alignment


def _function_of(walker: _Walker, binary: _Binary, sig: Signature, text: _Section,
                 ref: int) -> Optional[_Function]:
    """The function containing the error site `ref`: the nearest candidate entry whose walk
    reaches it."""
    for n, start in enumerate(_entries_below(binary, sig, text, ref)):
        if n >= _MAX_STARTS:
            break
        fn = walker.function(start, sig.max_function_bytes)
        if fn.complete and ref in fn.reached:
            return fn
    return None


def _structural_failures(spec: FunctionSpec, fn: _Function, known: Dict[str, int]) -> List[str]:
    """The verify rules of `spec` that `fn` breaks (callers are checked separately)."""
    rules = spec.verify
    bad = []
    missing_args = set(rules.get("reads_args", ())) - fn.args_read
    if missing_args:
        bad.append("does not read argument register(s) %s" % ", ".join(sorted(missing_args)))
    for callee in rules.get("calls", ()):
        if callee not in known:
            bad.append("%s not located" % callee)
        elif known[callee] not in fn.calls:
            bad.append("does not call %s" % callee)
    wanted = set(rules.get("imports_any", ()))
    copies = [addr for addr, name in fn.imports if name in wanted]
    if wanted and not copies:
        bad.append("calls none of %s" % ", ".join(sorted(wanted)))
    if rules.get("stores_after_import") and copies and not any(s > min(copies) for s in fn.stores):
        bad.append("stores nothing after %s" % ", ".join(sorted(wanted)))
    if fn.indirect_calls < rules.get("min_indirect_calls", 0):
        bad.append("makes %d indirect call(s)" % fn.indirect_calls)
    return bad


def _library_name(binary: _Binary, sig: Signature) -> str:
    bun = any(name.startswith(".bun") for name in binary.sections)
    return "%s (%s)" % (sig.library, "Bun, built in" if bun else "built in, no symbols")


def _locate_with(binary: _Binary, text: _Section, sig: Signature, files: FrozenSet[int]) -> _Located:
    """Apply one signature to a file carrying its source file's name at `files`."""
    located = _Located(library=_library_name(binary, sig))
    refs = _file_references(binary, text, files)
    walker = _Walker(binary, files)
    functions: Dict[int, _Function] = {}
    unplaced = 0
    for ref in refs:
        fn = _function_of(walker, binary, sig, text, ref)
        if fn is None:
            unplaced += 1
        else:
            functions[fn.start] = fn
    callees = {s.callee for fn in functions.values() for s in fn.sites}
    located.notes.append("%s: %d error sites of %s in %d functions (%d outside any), reporting "
                         "through %s" % (sig.method, len(refs), sig.source_file, len(functions),
                                         unplaced, ", ".join(hex(c) for c in sorted(callees)
                                                             if c is not None) or "nothing"))
    # Structural rules in the order of the specs (a helper precedes the functions calling it),
    # then a direct caller, the one search that runs over the whole code.
    known: Dict[str, int] = {}
    for spec in sig.functions:
        reasons = ", ".join(str(r) for r in sorted(spec.reasons))
        matching = [fn for fn in functions.values() if fn.reasons(sig.error_library) == spec.reasons]
        failures = []
        passing: List[Tuple[_Function, List[int]]] = []
        for fn in matching:
            bad = _structural_failures(spec, fn, known)
            need = spec.verify.get("min_direct_callers", 0)
            calls = _direct_callers(binary, text, fn.start, need) if need and not bad else []
            if len(calls) < need and not bad:
                bad = ["%d direct callers" % len(calls)]
            if bad:
                failures.append("%#x %s" % (fn.start, "; ".join(bad)))
            else:
                passing.append((fn, calls))
        if len(passing) != 1:
            if not matching:
                why = "no function reports exactly reasons %s" % reasons
            elif passing:
                why = "%d candidates pass" % len(passing)
            else:
                why = "; ".join(failures)
            if spec.probe:
                located.missing.append("%s: %s (%s)" % (spec.name, why, sig.method))
            continue
        fn, calls = passing[0]
        known[spec.name] = fn.start
        if spec.probe:
            lines = ",".join(str(n) for n in sorted(s.line for s in fn.sites if s.line is not None))
            located.found[spec.name] = _Found(
                spec.name, fn.start, sig.method, "reasons %s at lines %s of %s; called from %s" % (
                    reasons, lines, sig.source_file, ", ".join(hex(c) for c in calls) or "-"))
    return located


class BoringSslFamily(TlsFamily):
    """BoringSSL without symbols, found by signature. Files that define SSL_write (any OpenSSL or
    BoringSSL build with symbols) belong to the openssl family, so nothing is probed twice."""

    name = "boringssl"
    searches_code = True
    bpf_file = "openssl.c"  # same C ABI: SSL_write(ssl, buf, int num), SSL_read(...) -> int
    points = tuple(p for p in OpenSslFamily.points if p.name in ("SSL_write", "SSL_read"))

    def __init__(self, signatures: Optional[Tuple[Signature, ...]] = None) -> None:
        self._signatures = signatures
        self._cache: "OrderedDict[Version, Optional[_Located]]" = OrderedDict()

    @property
    def signatures(self) -> Tuple[Signature, ...]:
        if self._signatures is None:
            self._signatures = load_signatures()
        return self._signatures

    def scan(self, image: ElfImage) -> Optional[Scan]:
        located = self._located(image)
        if located is None:
            return None
        scan = Scan(self.name, located.library, missing=list(located.missing),
                    notes=list(located.notes))
        for point in self.points:
            found = located.found.get(point.name)
            if found is not None:
                scan.locations.append(Location(point.name, found.address, found.method))
                scan.notes.append("%s at %#x: %s" % (point.name, found.address, found.evidence))
        return scan

    def _located(self, image: ElfImage) -> Optional[_Located]:
        """One search per file version: the same binary reached by another path (each process's
        /proc/PID/root/...) or scanned again by tls-scan is not searched again."""
        if image.version in self._cache:
            self._cache.move_to_end(image.version)
            return self._cache[image.version]
        result = None
        if image.machine == "EM_X86_64":
            result = _locate(image, self.signatures)
        self._cache[image.version] = result
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return result


def _locate(image: ElfImage, signatures: Tuple[Signature, ...]) -> Optional[_Located]:
    """The first signature's findings in `image`; None when no signature's source file is in it,
    or when it found functions in a file that exports SSL_write. Never raises on odd files."""
    try:
        with open(image.path, "rb") as fh:
            binary = _Binary(fh, image.elf)
            try:
                text = binary.text
                for sig in signatures:
                    if sig.arch != "x86_64" or text is None:
                        continue
                    files = _string_addresses(binary, sig.source_file.encode())
                    if not files:
                        continue
                    located = _locate_with(binary, text, sig, files)
                    if located.found and image.symbol("SSL_write") is not None:
                        return None  # BoringSSL with symbols: the openssl family's
                    return located
            finally:
                binary.close()
    except (OSError, ValueError, ELFError, struct.error, capstone.CsError):
        return None
    return None
