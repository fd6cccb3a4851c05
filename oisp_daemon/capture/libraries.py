"""Which files to put uprobes on, and what each family found in them.

A uprobe on a file applies to every process that maps it, now and later, so attaching to the
system's libssl once covers every dynamically linked client; discovery (capture/discovery.py)
adds the copies and static builds that running processes map.

The kernel keeps uprobes on the inode, not on the path: two paths to one file (a symlink, /lib
and /usr/lib on a merged-/usr system, a hard link, a bind mount, /proc/PID/root/...) attached
twice would report every call twice. So a target is identified by the (device, inode) its path
leads to.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import stat
import subprocess
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from .elf_image import ElfImage, Identity, NotElf, Version
from .families import FAMILIES
from .probe_table import Scan

log = logging.getLogger(__name__)

# The system's TLS libraries by soname in the linker cache: probed at start-up, before any
# client maps them, so no process that links them dynamically can beat discovery.
_SYSTEM_TLS_RE = re.compile(r"^\s*(libssl\.so\.[0-9.]+|libgnutls\.so\.[0-9]+|libnspr4\.so) \(([^)]*)\) => (\S+)$")


@dataclass
class TlsTarget:
    path: str  # a path the daemon can open now (what the probes are attached by)
    identity: Identity
    scans: List[Scan] = field(default_factory=list)  # attachable findings, one per family
    origin: str = "system"  # system | config | discovered
    shown_path: str = ""  # the path as the process sees it (in its own mount namespace)

    def __post_init__(self) -> None:
        self.shown_path = self.shown_path or self.path

    @property
    def families(self) -> List[str]:
        return [s.family for s in self.scans]


def file_identity(path: str) -> Optional[Identity]:
    """(device, inode) of the regular file `path` leads to after following links; else None."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino)


def system_libraries(ldconfig_output: Optional[str] = None) -> List[str]:
    """Paths of the TLS libraries (libssl, libgnutls, NSPR) for this machine's architecture
    from the linker cache."""
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
        m = _SYSTEM_TLS_RE.match(line)
        if m and arch_tag in m.group(2):
            paths.append(m.group(3))
    return paths


def scan_image(image: ElfImage) -> List[Scan]:
    """Every family's findings in one file, in registry order (a family that fails on an odd
    file is logged and skipped: one bad scanner must not hide the others)."""
    scans: List[Scan] = []
    for family in FAMILIES:
        if family.searches_code and any(s.attachable for s in scans):
            continue
        try:
            found = family.scan(image)
        except Exception:  # noqa: BLE001 - a scanner bug must not stop discovery
            log.exception("the %s scan of %s failed", family.name, image.path)
            continue
        if found is not None:
            scans.append(found)
    return scans


@functools.lru_cache(maxsize=4096)
def _scan_version(path: str, _version: Version) -> Tuple[Scan, ...]:
    """Scans of one file version (device, inode, size, mtime): a file is read once however many
    processes map it, and again only when it changes. Files that are no ELF scan as ()."""
    try:
        with ElfImage(path) as image:
            return tuple(scan_image(image))
    except NotElf:
        return ()


def scan_file(path: str) -> List[Scan]:
    """What every family finds in the file at `path` (cached per file version)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return []
    if not stat.S_ISREG(st.st_mode):
        return []
    return list(_scan_version(path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)))


def probe_target(path: str, origin: str, shown_path: str = "") -> Optional[TlsTarget]:
    """The target `path` leads to, or None when it is no regular file or nothing in it can be
    probed."""
    real = os.path.realpath(path) if not path.startswith("/proc/") else path
    identity = file_identity(real)
    if identity is None:
        return None
    scans = [s for s in scan_file(real) if s.attachable]
    if not scans:
        return None
    return TlsTarget(real, identity, scans, origin, shown_path or real)


def discover(extra_paths: Iterable[str] = ()) -> List[TlsTarget]:
    """System TLS libraries plus configured binaries, each file once (by device and inode, so the first
    path to a file names it), with their scans."""
    targets: Dict[Identity, TlsTarget] = {}
    for origin, paths in (("system", system_libraries()), ("config", list(extra_paths))):
        for path in paths:
            identity = file_identity(path)
            if identity is None or identity in targets:
                continue
            target = probe_target(path, origin)
            if target is not None:
                targets[identity] = target
    return list(targets.values())
