"""Go crypto/tls: (*Conn).Write, (*Conn).Read and (*Conn).Close, found through .gopclntab.

Go programs carry their TLS stack inside the executable, usually stripped (`-ldflags=-s -w`), so
the functions are found by name in the pclntab the runtime itself needs (gopclntab.py), which
gives their exact code bounds. Each location is then checked on the code (capstone):

- The function must open with Go's stack check against the goroutine (`CMPQ SP, 16(R14)` on
  amd64, `MOVD 16(R28), R16; CMP R16, RSP` on arm64). Its presence proves the register ABI
  (Go >= 1.17 on amd64, >= 1.18 on arm64, where R14 / R28 hold g) that the probes read
  arguments from; a stack-ABI build is reported as not supported.
- The entry probe goes on the first instruction after that check's branch, not on the entry: a
  call that must grow its stack runs morestack and jumps back to the entry, which would report a
  Write twice. The arguments are still in their registers there.
- Read's return probes go on each RET instruction inside the bounds (a linear disassembly that
  must decode the whole function), never a uretprobe, which rewrites the return address on the
  goroutine stack and breaks Go's stack unwinding and copying.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .. import gopclntab
from ..gopclntab import GoFunc
from ..elf_image import ElfImage
from ..probe_table import RETURN_AT_RET_INSTRUCTIONS, Location, ProbePoint, Scan
from .base import TlsFamily

WRITE = ProbePoint("crypto/tls.(*Conn).Write", "probe_go_write")
READ = ProbePoint("crypto/tls.(*Conn).Read", "probe_go_read_enter", "probe_go_read_return",
                  return_at=RETURN_AT_RET_INSTRUCTIONS)
CLOSE = ProbePoint("crypto/tls.(*Conn).Close", "probe_go_close")
REQUIRED = (WRITE, READ)

# How far into a function the stack check may start (large frames compute SP-framesize first).
PROLOGUE_INSNS = 4


@dataclass(frozen=True)
class _Arch:
    """What a Go register-ABI prologue and a return look like on one architecture."""

    name: str
    cs_arch: int
    cs_mode: int
    # min Go release with the register ABI there: (major, minor)
    regabi: Tuple[int, int]


def _arch(machine: str) -> Optional[_Arch]:
    import capstone  # deferred: a Debian package (python3-capstone) only Go scans need

    if machine == "EM_X86_64":
        return _Arch("amd64", capstone.CS_ARCH_X86, capstone.CS_MODE_64, (1, 17))
    if machine == "EM_AARCH64":
        return _Arch("arm64", capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM, (1, 18))
    return None


@dataclass(frozen=True)
class CodeCheck:
    """A function checked on its code: where the entry probe goes, and its RETs."""

    body: int  # first instruction after the stack check
    returns: Tuple[int, ...]


def check_function(arch: _Arch, code: bytes, func: GoFunc) -> Tuple[Optional[CodeCheck], str]:
    """(check, "") when `code` (the bytes of `func`) is a register-ABI Go function, decodable to
    its end, with at least one RET; else (None, why)."""
    import capstone

    md = capstone.Cs(arch.cs_arch, arch.cs_mode)
    if arch.name == "arm64":
        md.skipdata = True  # fixed-width: an undecodable word cannot shift the others
    insns = list(md.disasm(code, func.entry))
    decoded = sum(i.size for i in insns)
    if decoded != len(code):
        return None, "disassembly stops at %#x, before the end %#x" % (func.entry + decoded, func.end)
    body = _after_stack_check(arch, insns)
    if body is None:
        return None, "no register-ABI stack check at the entry %#x" % func.entry
    returns = tuple(i.address for i in insns if i.mnemonic == "ret")
    if not returns:
        return None, "no RET instruction in [%#x, %#x)" % (func.entry, func.end)
    return CodeCheck(body, returns), ""


def _after_stack_check(arch: _Arch, insns: Sequence) -> Optional[int]:
    """Address of the instruction after the stack check's conditional branch, or None when the
    function does not start with a check against the g register."""
    head = insns[:PROLOGUE_INSNS + 1]
    for n, insn in enumerate(head[:-1]):
        if arch.name == "amd64":
            # CMPQ SP, 16(R14) / LEAQ -N(SP), R12; CMPQ R12, 16(R14); then JBE/JLS to morestack.
            checks = insn.mnemonic == "cmp" and insn.op_str.endswith("qword ptr [r14 + 0x10]")
            branch = n + 1
        else:
            # MOVD 16(R28), R16; [SUB $N, RSP, R17;] CMP R16, RSP|R17; then BLS to morestack.
            checks = insn.mnemonic == "ldr" and insn.op_str.replace(" ", "") == "x16,[x28,#0x10]"
            branch = next((k for k in range(n + 1, len(head)) if head[k].mnemonic.startswith("b.")), None)
            if branch is not None and not any(head[k].mnemonic == "cmp" for k in range(n + 1, branch)):
                checks = False
        if checks and branch is not None and branch + 1 < len(head):
            if head[branch].mnemonic in ("jbe", "jb", "b.ls", "b.lo"):
                return head[branch + 1].address
    return None


def _check(arch: _Arch, image: ElfImage, func: GoFunc) -> Tuple[Optional[CodeCheck], str]:
    code = image.read_vaddr(func.entry, func.size)
    if code is None:
        return None, "code at %#x not in the file" % func.entry
    try:
        return check_function(arch, code, func)
    except Exception as exc:  # noqa: BLE001 - capstone's CsError on odd input; never attach then
        return None, "disassembly failed: %s" % exc


class GoFamily(TlsFamily):
    """Go's own TLS stack, inside each Go executable."""

    name = "go"
    searches_code = True
    bpf_file = "go_tls.c"
    points = (WRITE, READ, CLOSE)

    def scan(self, image: ElfImage) -> Optional[Scan]:
        table = gopclntab.find_pclntab(image)
        if table is None:
            return None
        funcs = table.find(p.name for p in self.points)
        if not any(p.name in funcs for p in REQUIRED):
            return None  # a Go program without TLS
        version = gopclntab.go_version(image) or "unknown"
        library = "Go crypto/tls (%s)" % version
        notes = ["pclntab: %s, %s, %d functions" % (table.how, table.format, table.nfunc)]
        try:
            arch = _arch(image.machine)
        except ImportError:
            return Scan(self.name, library, [], ["%s: cannot check the code: python3-capstone is not installed "
                                                 "(apt-get install python3-capstone)" % p.name for p in REQUIRED],
                        notes, supported=False)
        if arch is None:
            return Scan(self.name, library, [], ["%s: architecture %s not supported" % (p.name, image.machine)
                                                 for p in REQUIRED], notes, supported=False)
        release = gopclntab.parse_version(version)
        if release is not None and release < arch.regabi:
            return Scan(self.name, library, [], ["%s: %s on %s passes arguments on the stack (register ABI "
                                                 "from go%d.%d)" % (p.name, version, arch.name, *arch.regabi)
                                                 for p in REQUIRED], notes, supported=False)
        locations: List[Location] = []
        missing: List[str] = []
        for point in self.points:
            candidates = funcs.get(point.name, ())
            if not candidates:
                missing.append("%s: not in the pclntab" % point.name)
                continue
            checked = []
            for func in candidates:
                check, why = _check(arch, image, func)
                if check is not None:
                    checked.append((func, check))
            if len(checked) != 1:
                missing.append("%s: %s" % (point.name, why if not checked else
                                           "%d functions of that name pass the checks" % len(checked)))
                continue
            func, check = checked[0]
            returns = check.returns if point.return_at == RETURN_AT_RET_INSTRUCTIONS else ()
            locations.append(Location(point.name, check.body, "pclntab", returns))
            notes.append("%s: [%#x, %#x), probe at %#x%s" % (
                point.name, func.entry, func.end, check.body,
                ", %d RET instructions" % len(returns) if returns else ""))
        found = {loc.point for loc in locations}
        supported = all(p.name in found for p in REQUIRED)
        if not supported:
            locations = []  # half a connection cannot be decoded: attach nothing
        return Scan(self.name, library, locations, missing, notes, supported=supported)

