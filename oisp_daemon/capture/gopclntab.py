"""Read a Go binary's function table (.gopclntab) and build info, with or without symbols.

`go build -ldflags="-s -w"` drops .symtab and DWARF, but the runtime needs its pclntab (for stack
traces, the GC and goroutine stacks) and keeps it: function names and their code bounds are
always there. This module finds the table (by section name, or by its magic in the data
segments when the section headers are gone too), checks its header against the file, and looks
functions up by name. It also reads the Go version from the `\\xff Go buildinf:` blob.

Layouts (src/runtime/symtab.go, src/debug/gosym/pclntab.go of each release):
- magic 0xfffffffa (Go 1.16-1.17): header {magic u32, pad u8 x2, quantum u8, ptrsize u8,
  nfunc, nfiles, funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset: uintptr};
  functab at pclnOffset: nfunc+1 pairs {entry uintptr, funcoff uintptr} (absolute PCs, the last
  entry is the end of the last function); _func at pclnOffset+funcoff: {entry uintptr,
  nameoff i32, ...}.
- magic 0xfffffff0 (Go 1.18-1.19) and 0xfffffff1 (Go 1.20 and later): the header gains
  textStart after nfiles; functab pairs are {entryoff u32, funcoff u32} relative to textStart;
  _func starts {entryoff u32, nameoff i32, ...}.
Function names are NUL-terminated at funcnameOffset+nameoff. Only little-endian tables are read
(amd64, arm64); older layouts (Go < 1.16) predate the register ABI the probes need anyway.

Nothing here raises on odd input: a file that is not Go, or a table that does not check out,
gives None.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from elftools.common.exceptions import ELFError

from .elf_image import ElfImage

MAGIC_GO116 = 0xFFFFFFFA
MAGIC_GO118 = 0xFFFFFFF0
MAGIC_GO120 = 0xFFFFFFF1
# The Go releases each magic stands for (what `tls-scan` reports).
FORMATS = {MAGIC_GO116: "go1.16-1.17", MAGIC_GO118: "go1.18-1.19", MAGIC_GO120: "go1.20+"}

BUILDINFO_MAGIC = b"\xff Go buildinf:"
BUILDINFO_HEADER = 32  # magic (14), ptrsize (1), flags (1), then two pointers or padding
BUILDINFO_INLINE = 0x2  # flags bit: the version string follows the header (Go 1.18+)
BUILDINFO_BIG_ENDIAN = 0x1

# Sanity bounds for a header found by magic: a real Go binary has thousands of functions; the
# largest known ones (kubelet, terraform) have a few hundred thousand.
MAX_FUNCS = 4_000_000
MAX_NAME = 4096
PF_X = 0x1
_RELEASE = re.compile(r"go(\d+)\.(\d+)")


@dataclass(frozen=True)
class GoFunc:
    """A function of the table: its full name and code bounds [entry, end) as virtual addresses."""

    name: str
    entry: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.entry


@dataclass(frozen=True)
class _Segment:
    vaddr: int
    offset: int
    filesz: int
    executable: bool


def _load_segments(image: ElfImage) -> List[_Segment]:
    return [_Segment(vaddr, offset, filesz, bool(flags & PF_X))
            for vaddr, offset, filesz, flags in image.load_segments()]


def _in_text(segments: Iterable[_Segment], vaddr: int) -> bool:
    return any(s.executable and s.vaddr <= vaddr < s.vaddr + s.filesz for s in segments)


class Pclntab:
    """A checked pclntab: header fields, and lookups of functions by name."""

    def __init__(self, data: bytes, base: int, vaddr: int, how: str, segments: List[_Segment]) -> None:
        """The table starts at `data[base]` (its magic) and is mapped at `vaddr`; `how` says how
        it was found ("section .gopclntab" or "magic at 0x..."). Raises ValueError when the
        header does not describe a table inside `data` whose functions lie in executable code."""
        if len(data) < base + 8:
            raise ValueError("too short for a pclntab header")
        magic, pad1, pad2, quantum, ptrsize = struct.unpack_from("<IBBBB", data, base)
        if magic not in FORMATS:
            raise ValueError("unknown pclntab magic %#x" % magic)
        if pad1 or pad2 or quantum not in (1, 2, 4) or ptrsize not in (4, 8):
            raise ValueError("bad pclntab header (pad %d %d, quantum %d, ptrsize %d)" % (pad1, pad2, quantum, ptrsize))
        word = "<Q" if ptrsize == 8 else "<I"
        count = 8 if magic != MAGIC_GO116 else 7
        if len(data) < base + 8 + count * ptrsize:
            raise ValueError("too short for a pclntab header")
        fields = [struct.unpack_from(word, data, base + 8 + i * ptrsize)[0] for i in range(count)]
        if magic == MAGIC_GO116:
            nfunc, _nfiles, funcname_off, _cu, _filetab, _pctab, pcln_off = fields
            text_start = 0
        else:
            nfunc, _nfiles, text_start, funcname_off, _cu, _filetab, _pctab, pcln_off = fields
        self.magic = magic
        self.format = FORMATS[magic]
        self.quantum = quantum
        self.ptrsize = ptrsize
        self.nfunc = nfunc
        self.text_start = text_start
        self.vaddr = vaddr
        self.how = how
        self._data = data
        # offsets into `data`
        self._funcname_off = base + funcname_off
        self._pcln_off = base + pcln_off
        # functab entry: two u32 (1.18+) or two uintptr (1.16)
        self._entry_size = 8 if magic != MAGIC_GO116 else 2 * ptrsize
        if not 0 < nfunc <= MAX_FUNCS:
            raise ValueError("implausible function count %d" % nfunc)
        header_end = 8 + count * ptrsize
        if not header_end <= funcname_off < pcln_off:
            raise ValueError("pclntab offsets out of order")
        if self._pcln_off + (nfunc + 1) * self._entry_size > len(data):
            raise ValueError("function table beyond the data")
        first, last = self._entry(0), self._entry(nfunc)
        if not (first <= last and _in_text(segments, first) and _in_text(segments, last - 1)):
            raise ValueError("function table does not point into executable code")
        if self._name_at(self._funcoff(0)) is None:
            raise ValueError("first function has no readable name")

    # The table's raw lookups -----------------------------------------------------------------

    def _pair(self, i: int) -> Tuple[int, int]:
        at = self._pcln_off + i * self._entry_size
        if self.magic == MAGIC_GO116:
            fmt = "<QQ" if self.ptrsize == 8 else "<II"
            return struct.unpack_from(fmt, self._data, at)
        return struct.unpack_from("<II", self._data, at)

    def _entry(self, i: int) -> int:
        entry = self._pair(i)[0]
        return entry if self.magic == MAGIC_GO116 else self.text_start + entry

    def _funcoff(self, i: int) -> int:
        return self._pair(i)[1]

    def _nameoff(self, funcoff: int) -> Optional[int]:
        at = self._pcln_off + funcoff + (self.ptrsize if self.magic == MAGIC_GO116 else 4)
        if at + 4 > len(self._data):
            return None
        return struct.unpack_from("<i", self._data, at)[0]

    def _name_at(self, funcoff: int) -> Optional[str]:
        nameoff = self._nameoff(funcoff)
        if nameoff is None or nameoff < 0:
            return None
        start = self._funcname_off + nameoff
        end = self._data.find(b"\x00", start, start + MAX_NAME)
        if end < 0 or end == start:
            return None
        try:
            return self._data[start:end].decode("utf-8")
        except UnicodeDecodeError:
            return None

    # Lookups -----------------------------------------------------------------------------------

    def functions(self) -> Iterator[GoFunc]:
        """Every function of the table, in address order."""
        for i in range(self.nfunc):
            name = self._name_at(self._funcoff(i))
            if name is not None:
                yield GoFunc(name, self._entry(i), self._entry(i + 1))

    def find(self, names: Iterable[str]) -> Dict[str, Tuple[GoFunc, ...]]:
        """The functions named (exactly) in `names` that the table has, each name with every
        function of that name in address order: an assembly function and its ABI wrapper share
        a name, so a caller must tell them apart by their code."""
        # Look the names up in the name table first; then one pass over the functions compares
        # integers, not strings (a big binary has a few hundred thousand functions).
        wanted: Dict[int, str] = {}
        for name in names:
            needle = name.encode("utf-8") + b"\x00"
            start = self._funcname_off
            while True:
                at = self._data.find(needle, start, self._pcln_off)
                if at < 0:
                    break
                if at == self._funcname_off or self._data[at - 1] == 0:
                    wanted[at - self._funcname_off] = name
                start = at + 1
        found: Dict[str, List[GoFunc]] = {}
        if wanted:
            for i in range(self.nfunc):
                name = wanted.get(self._nameoff(self._funcoff(i)))
                if name is not None:
                    found.setdefault(name, []).append(GoFunc(name, self._entry(i), self._entry(i + 1)))
        return {name: tuple(funcs) for name, funcs in found.items()}


def _section_candidates(image: ElfImage) -> Iterator[Tuple[int, int, str]]:
    """(file offset, vaddr, how) of sections named like the pclntab (.gopclntab; PIE builds put
    it in .data.rel.ro.gopclntab)."""
    for section in image.elf.iter_sections():
        if section.name.endswith(".gopclntab") and section["sh_type"] != "SHT_NOBITS":
            yield section["sh_offset"], section["sh_addr"], "section %s" % section.name


def _magic_candidates(image: ElfImage, segments: List[_Segment]) -> Iterator[Tuple[bytes, int, int, str]]:
    """(segment data, offset of the candidate in it, vaddr, how) for every place in the
    non-executable loaded segments where a pclntab magic and zero padding occur."""
    needles = [struct.pack("<I", magic) + b"\x00\x00" for magic in FORMATS]
    for seg in segments:
        if seg.executable or not seg.filesz:
            continue
        data = image.read_at(seg.offset, seg.filesz)
        if data is None:
            continue
        for needle in needles:
            at = data.find(needle)
            while at >= 0:
                yield data, at, seg.vaddr + at, "magic at %#x" % (seg.vaddr + at)
                at = data.find(needle, at + 1)


def _has_sections(image: ElfImage) -> bool:
    return image.elf.num_sections() > 0


def find_pclntab(image: ElfImage) -> Optional[Pclntab]:
    """The binary's checked pclntab: by section name, else by magic; None when there is none."""
    try:
        segments = _load_segments(image)
        for offset, vaddr, how in _section_candidates(image):
            seg = next((s for s in segments if s.offset <= offset < s.offset + s.filesz), None)
            data = image.read_at(offset, seg.offset + seg.filesz - offset) if seg else None
            try:
                return Pclntab(data or b"", 0, vaddr, how, segments)
            except ValueError:
                continue
        if _has_sections(image):
            return None  # a file with section headers names its pclntab; searching costs
        for data, base, vaddr, how in _magic_candidates(image, segments):
            try:
                return Pclntab(data, base, vaddr, how, segments)
            except ValueError:
                continue
    except (ELFError, OSError, ValueError, struct.error):
        return None
    return None


def _uvarint(data: bytes, at: int) -> Tuple[int, int]:
    """(value, offset after it) of the unsigned LEB128 at `at`; ValueError if it runs off."""
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise ValueError("bad varint")


def _buildinfo_version(image: ElfImage, blob: bytes) -> Optional[str]:
    ptrsize, flags = blob[14], blob[15]
    if flags & BUILDINFO_INLINE:
        length, at = _uvarint(blob, BUILDINFO_HEADER)
        text = blob[at:at + length]
    else:
        # Go < 1.18: a pointer to a Go string header {data, len}.
        if ptrsize not in (4, 8):
            return None
        order = ">" if flags & BUILDINFO_BIG_ENDIAN else "<"
        word = order + ("Q" if ptrsize == 8 else "I")
        (string_header,) = struct.unpack_from(word, blob, 16)
        raw = image.read_vaddr(string_header, 2 * ptrsize)
        if raw is None:
            return None
        (data_ptr,) = struct.unpack_from(word, raw, 0)
        (length,) = struct.unpack_from(word, raw, ptrsize)
        if not 0 < length <= 64:
            return None
        text = image.read_vaddr(data_ptr, length) or b""
    try:
        version = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    return version if version.startswith("go") else None


def go_version(image: ElfImage) -> Optional[str]:
    """The Go release the binary was built with ("go1.19.8"), from its build info; None when
    the blob is missing or unreadable (the .go.buildinfo section, else the magic in the data)."""
    try:
        blobs: List[bytes] = []
        section = image.section_bytes(".go.buildinfo")
        if section is not None:
            blobs.append(section[:4096])
        elif not _has_sections(image):
            for seg in _load_segments(image):
                if seg.executable or not seg.filesz:
                    continue
                data = image.read_at(seg.offset, seg.filesz) or b""
                at = data.find(BUILDINFO_MAGIC)
                while at >= 0:
                    if at % 16 == 0 or (seg.vaddr + at) % 16 == 0:  # the blob is 16-byte aligned
                        blobs.append(data[at:at + 4096])
                    at = data.find(BUILDINFO_MAGIC, at + 1)
        for blob in blobs:
            if len(blob) >= BUILDINFO_HEADER and blob.startswith(BUILDINFO_MAGIC):
                try:
                    version = _buildinfo_version(image, blob)
                except (ValueError, struct.error):
                    continue
                if version:
                    return version
    except (ELFError, OSError, ValueError, struct.error):
        return None
    return None


def parse_version(version: str) -> Optional[Tuple[int, int]]:
    """(major, minor) of "go1.19.8" / "go1.21rc2" / "go1.22.0 X:boringcrypto"; None otherwise."""
    match = _RELEASE.match(version)
    return (int(match.group(1)), int(match.group(2))) if match else None
