"""Find the TLS libraries (and statically linked binaries) to put uprobes on.

A uprobe on a file applies to every process that maps it, now and later, so attaching to the
system's libssl once covers every dynamically linked client. Binaries that carry OpenSSL inside
(e.g. Node.js builds) are given by path in the config and probed the same way.

The kernel keeps uprobes on the inode, not on the path: two paths to one file (a symlink, /lib
and /usr/lib on a merged-/usr system, a hard link, a bind mount) attached twice would report
every call twice. So a target is identified by the (device, inode) its path leads to.
"""
from __future__ import annotations

import functools
import os
import re
import stat
import subprocess
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import Symbol

# Probe points and the BPF function attached to each: (symbol, entry fn, return fn).
OPENSSL_PROBES = (
    ("SSL_write", "probe_ssl_write_int", None),
    ("SSL_write_ex", "probe_ssl_write", None),
    ("SSL_read", "probe_ssl_read_int_enter", "probe_ssl_read_return"),
    ("SSL_read_ex", "probe_ssl_read_enter", "probe_ssl_read_return"),
    ("SSL_set_fd", "probe_ssl_set_fd", None),
    ("SSL_free", "probe_ssl_free", None),
)

_LIBSSL_RE = re.compile(r"^\s*(libssl\.so\.[0-9.]+) \(([^)]*)\) => (\S+)$")

Identity = Tuple[int, int]  # (st_dev, st_ino) of the file a path leads to, links followed


@dataclass
class TlsTarget:
    path: str  # resolved path of the library or binary (what the probes are attached by)
    identity: Identity
    symbols: List[str] = field(default_factory=list)  # probe symbols it exports
    origin: str = "system"  # system | config


def _defines(sym: Optional[Symbol]) -> bool:
    return sym is not None and sym["st_shndx"] != "SHN_UNDEF" and bool(sym["st_value"])


def file_identity(path: str) -> Optional[Identity]:
    """(device, inode) of the regular file `path` leads to after following links; else None."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino)


def exported_symbols(path: str, wanted: Iterable[str]) -> List[str]:
    """The subset of `wanted` that `path` defines (dynamic or static symbol table)."""
    want: Set[str] = set(wanted)
    found: Set[str] = set()
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            # The dynamic symbols through their hash table, one lookup per name: walking the
            # tables of a big binary (Node: about 90k dynamic and 140k static symbols) takes
            # pyelftools tens of seconds, which a `binary-paths add` would wait for.
            hashed = elf.get_section_by_name(".gnu.hash") or elf.get_section_by_name(".hash")
            if hashed is not None:
                found = {name for name in want if _defines(hashed.get_symbol(name))}
            # Only a file that exports none of them is searched symbol by symbol: its static table
            # has them when it links OpenSSL in without exporting it.
            if found:
                tables = []
            elif hashed is not None:
                tables = [".symtab"]
            else:
                tables = [".dynsym", ".symtab"]
            for section_name in tables:
                section = elf.get_section_by_name(section_name)
                if section is None:
                    continue
                for sym in section.iter_symbols():
                    if sym.name in want and _defines(sym):
                        found.add(sym.name)
    except (OSError, ELFError):
        return []
    return [s for s in wanted if s in found]


def system_libssl(ldconfig_output: Optional[str] = None) -> List[str]:
    """Paths of libssl.so.* for this machine's architecture from the linker cache."""
    if ldconfig_output is None:
        try:
            ldconfig_output = subprocess.run(
                ["ldconfig", "-p"], capture_output=True, text=True, check=False
            ).stdout
        except OSError:
            ldconfig_output = ""
    machine = os.uname().machine
    arch_tag = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(machine, machine)
    paths = []
    for line in ldconfig_output.splitlines():
        m = _LIBSSL_RE.match(line)
        if m and arch_tag in m.group(2):
            paths.append(m.group(3))
    return paths


@functools.lru_cache(maxsize=64)
def _probe_symbols(path: str, _version: Tuple[int, int, int, int]) -> Tuple[str, ...]:
    """Probe symbols of a file version (device, inode, size, mtime): a reload re-reads only
    files that changed, instead of parsing every ELF symbol table again."""
    return tuple(exported_symbols(path, [p[0] for p in OPENSSL_PROBES]))


def probe_target(path: str, origin: str) -> Optional[TlsTarget]:
    """The target `path` leads to, or None when it is no regular file or defines no probe symbol."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    symbols = _probe_symbols(real, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return TlsTarget(real, (st.st_dev, st.st_ino), list(symbols), origin) if symbols else None


def discover(extra_paths: Iterable[str] = ()) -> List[TlsTarget]:
    """System libssl plus configured binaries, each file once (by device and inode, so the first
    path to a file names it), with their symbols."""
    targets: Dict[Identity, TlsTarget] = {}
    for origin, paths in (("system", system_libssl()), ("config", list(extra_paths))):
        for path in paths:
            identity = file_identity(path)
            if identity is None or identity in targets:
                continue
            target = probe_target(path, origin)
            if target is not None:
                targets[identity] = target
    return list(targets.values())
