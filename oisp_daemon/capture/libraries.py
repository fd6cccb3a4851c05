"""Find the TLS libraries (and statically linked binaries) to put uprobes on.

A uprobe on a file applies to every process that maps it, now and later, so attaching to the
system's libssl once covers every dynamically linked client. Binaries that carry OpenSSL inside
(e.g. Node.js builds) are given by path in the config and probed the same way.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set

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


@dataclass
class TlsTarget:
    path: str  # resolved path of the library or binary
    symbols: List[str] = field(default_factory=list)  # probe symbols it exports
    origin: str = "system"  # system | config


def _defines(sym: Optional[Symbol]) -> bool:
    return sym is not None and sym["st_shndx"] != "SHN_UNDEF" and bool(sym["st_value"])


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


def discover(extra_paths: Iterable[str] = ()) -> List[TlsTarget]:
    """System libssl plus configured binaries, each once (by resolved path), with their symbols."""
    wanted = [p[0] for p in OPENSSL_PROBES]
    targets: Dict[str, TlsTarget] = {}
    for origin, paths in (("system", system_libssl()), ("config", list(extra_paths))):
        for path in paths:
            real = os.path.realpath(path)
            if real in targets or not os.path.isfile(real):
                continue
            symbols = exported_symbols(real, wanted)
            if symbols:
                targets[real] = TlsTarget(real, symbols, origin)
    return list(targets.values())
