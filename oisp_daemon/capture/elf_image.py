"""One ELF file opened for the family scans: symbols, sections and bytes by virtual address.

Every family asks the same questions of a file (does it define this symbol, what is in this
section, which bytes lie at this address), so the file is parsed once per version and shared.
pyelftools walks big symbol tables slowly (Node: about 90k dynamic and 140k static symbols, tens
of seconds), so names are looked up through the hash table and a static table is read only once.
"""
from __future__ import annotations

import os
import stat
from typing import BinaryIO, Dict, List, Optional, Tuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import Symbol

Identity = Tuple[int, int]  # (st_dev, st_ino) of a file, links followed
Version = Tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)


class NotElf(Exception):
    """The path is no regular ELF file (or cannot be read)."""


def _defined(sym: Optional[Symbol]) -> Optional[int]:
    if sym is None or sym["st_shndx"] == "SHN_UNDEF" or not sym["st_value"]:
        return None
    return int(sym["st_value"])


class ElfImage:
    """A parsed ELF file. Close it (or use `with`) to release the descriptor."""

    def __init__(self, path: str) -> None:
        try:
            st = os.stat(path)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            raise NotElf(f"{path}: {exc}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise NotElf(f"{path}: not a regular file")
        self.path = path
        self.identity: Identity = (st.st_dev, st.st_ino)
        self.version: Version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        self.size = st.st_size
        try:
            self._fh: BinaryIO = open(path, "rb")
        except OSError as exc:
            raise NotElf(f"{path}: {exc}") from exc
        try:
            self.elf = ELFFile(self._fh)
        except (ELFError, OSError, ValueError) as exc:
            self._fh.close()
            raise NotElf(f"{path}: not ELF ({exc})") from exc
        self._hash = None
        self._hash_read = False
        self._static: Optional[Dict[str, int]] = None
        self._sections: Dict[str, Optional[bytes]] = {}

    def __enter__(self) -> "ElfImage":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    @property
    def machine(self) -> str:
        return str(self.elf["e_machine"])

    def _hash_table(self):
        if not self._hash_read:
            self._hash_read = True
            try:
                self._hash = self.elf.get_section_by_name(".gnu.hash") or self.elf.get_section_by_name(".hash")
            except (ELFError, ValueError):
                self._hash = None
        return self._hash

    @property
    def has_dynamic_hash(self) -> bool:
        """The file has a dynamic symbol hash table (a shared library or dynamic executable)."""
        return self._hash_table() is not None

    def dynamic_symbol(self, name: str) -> Optional[int]:
        """Address of `name` if the file exports it (through the dynamic hash table)."""
        table = self._hash_table()
        if table is None:
            return None
        try:
            return _defined(table.get_symbol(name))
        except (ELFError, ValueError, KeyError, IndexError):
            return None

    def static_symbols(self) -> Dict[str, int]:
        """Every defined symbol of .symtab (and .dynsym when there is no hash table), read once."""
        if self._static is None:
            found: Dict[str, int] = {}
            names = [".symtab"] if self._hash_table() is not None else [".dynsym", ".symtab"]
            for section_name in names:
                try:
                    section = self.elf.get_section_by_name(section_name)
                    if section is None:
                        continue
                    for sym in section.iter_symbols():
                        addr = _defined(sym)
                        if addr is not None and sym.name:
                            found.setdefault(sym.name, addr)
                except (ELFError, ValueError):
                    continue
            self._static = found
        return self._static

    def symbol(self, name: str) -> Optional[int]:
        """Address of `name`: exported first, else from the static table."""
        addr = self.dynamic_symbol(name)
        return addr if addr is not None else self.static_symbols().get(name)

    def has_section(self, name: str) -> bool:
        try:
            return self.elf.get_section_by_name(name) is not None
        except (ELFError, ValueError):
            return False

    def section_bytes(self, name: str) -> Optional[bytes]:
        """A section's contents (cached), None when absent or unreadable."""
        if name not in self._sections:
            data = None
            try:
                section = self.elf.get_section_by_name(name)
                if section is not None and section["sh_type"] != "SHT_NOBITS":
                    data = section.data()
            except (ELFError, ValueError, OSError):
                data = None
            self._sections[name] = data
        return self._sections[name]

    def section_addr(self, name: str) -> Optional[int]:
        try:
            section = self.elf.get_section_by_name(name)
        except (ELFError, ValueError):
            return None
        return None if section is None else int(section["sh_addr"])

    def load_segments(self) -> List[Tuple[int, int, int, int]]:
        """(vaddr, file offset, file size, flags) of each PT_LOAD segment."""
        out = []
        try:
            for seg in self.elf.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    out.append((int(seg["p_vaddr"]), int(seg["p_offset"]), int(seg["p_filesz"]), int(seg["p_flags"])))
        except (ELFError, ValueError):
            pass
        return out

    def vaddr_to_offset(self, vaddr: int) -> Optional[int]:
        for seg_vaddr, offset, filesz, _flags in self.load_segments():
            if seg_vaddr <= vaddr < seg_vaddr + filesz:
                return offset + (vaddr - seg_vaddr)
        return None

    def read_vaddr(self, vaddr: int, size: int) -> Optional[bytes]:
        """`size` bytes of the file image at virtual address `vaddr` (None outside the file)."""
        offset = self.vaddr_to_offset(vaddr)
        if offset is None or size < 0:
            return None
        return self.read_at(offset, size)

    def read_at(self, offset: int, size: int) -> Optional[bytes]:
        try:
            self._fh.seek(offset)
            data = self._fh.read(size)
        except (OSError, ValueError, OverflowError):
            return None
        return data if len(data) == size else None

    def needed(self) -> List[str]:
        """DT_NEEDED entries: the libraries it links dynamically."""
        try:
            dynamic = self.elf.get_section_by_name(".dynamic")
            if dynamic is None:
                return []
            return [tag.needed for tag in dynamic.iter_tags() if tag.entry.d_tag == "DT_NEEDED"]
        except (ELFError, ValueError, AttributeError):
            return []

    def soname(self) -> Optional[str]:
        """DT_SONAME: the name of a shared library (None for an executable)."""
        try:
            dynamic = self.elf.get_section_by_name(".dynamic")
            if dynamic is None:
                return None
            for tag in dynamic.iter_tags():
                if tag.entry.d_tag == "DT_SONAME":
                    return str(tag.soname)
        except (ELFError, ValueError, AttributeError):
            return None
        return None

    @property
    def is_dynamic_object(self) -> bool:
        """A shared library or a PIE (ET_DYN), as opposed to a fixed-address executable."""
        return self.elf["e_type"] == "ET_DYN"
