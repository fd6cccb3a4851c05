"""Kernel headers for bcc when the running kernel has none installed.

bcc compiles the BPF C at start-up against /lib/modules/$(uname -r)/build. VMs and containers
often run a kernel whose headers are not packaged, while distro headers for another kernel are
installed (Debian splits them into linux-headers-<ver>-<flavour> and -common). Because our BPF
programs read no kernel structs (DESIGN.md, BPF rule 1), any recent header tree is good enough:
this module merges the two Debian halves into one tree of symlinks and points bcc at it through
BCC_KERNEL_SOURCE.
"""
from __future__ import annotations

import glob
import logging
import os
import platform
import re
import shutil
from dataclasses import dataclass
from typing import List, Optional

log = logging.getLogger(__name__)


class KernelHeadersError(RuntimeError):
    """No usable kernel headers: the message says what to install."""


@dataclass
class HeaderChoice:
    path: str  # directory bcc compiles against
    assembled: bool  # True when we built a tree from headers of another kernel
    description: str  # for the log line


def _usable(tree: str) -> bool:
    return os.path.isfile(os.path.join(tree, "include", "generated", "autoconf.h")) or (
        os.path.isdir(os.path.join(tree, "include", "linux"))
        and os.path.isdir(os.path.join(tree, "include", "generated"))
    )


def _version_key(path: str) -> List[int]:
    return [int(n) for n in re.findall(r"\d+", os.path.basename(path))]


def _merge(dest: str, sources: List[str]) -> None:
    """Symlink farm: a directory present in several sources becomes a real directory merged
    recursively; everything else is a symlink to the first source that has it."""
    os.makedirs(dest, exist_ok=True)
    names: dict = {}
    for src in sources:
        for name in os.listdir(src):
            names.setdefault(name, []).append(os.path.join(src, name))
    for name, paths in names.items():
        target = os.path.join(dest, name)
        dirs = [p for p in paths if os.path.isdir(p)]
        if len(dirs) > 1:
            _merge(target, dirs)
        elif not os.path.lexists(target):
            os.symlink(paths[0], target)


def _debian_pairs(usr_src: str) -> List[tuple]:
    pairs = []
    for arch_dir in glob.glob(os.path.join(usr_src, "linux-headers-*-amd64")) + glob.glob(
        os.path.join(usr_src, "linux-headers-*-arm64")
    ):
        common = re.sub(r"-(amd64|arm64)$", "-common", arch_dir)
        if os.path.isdir(common):
            pairs.append((arch_dir, common))
    return sorted(pairs, key=lambda p: _version_key(p[0]), reverse=True)


def choose_headers(
    cache_dir: str,
    release: Optional[str] = None,
    modules_dir: str = "/lib/modules",
    usr_src: str = "/usr/src",
) -> HeaderChoice:
    """Return the header tree bcc should use, assembling one under cache_dir if needed."""
    release = release or platform.release()
    build = os.path.join(modules_dir, release, "build")
    if _usable(build):
        return HeaderChoice(build, False, f"headers of the running kernel ({build})")
    pairs = _debian_pairs(usr_src)
    if not pairs:
        raise KernelHeadersError(
            f"no kernel headers: {build} is missing and no /usr/src/linux-headers-* are installed. "
            "Install the headers for this kernel (Debian/Ubuntu: apt-get install linux-headers-$(uname -r), "
            "or linux-headers-amd64 when none exist for it; Fedora/RHEL: dnf install kernel-devel)."
        )
    arch_dir, common = pairs[0]
    dest = os.path.join(cache_dir, "kernel-headers", f"{release}--{os.path.basename(arch_dir)}")
    if not _usable(dest):
        # Build beside the destination and rename, so a concurrent start never sees half a tree.
        tmp = f"{dest}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _merge(tmp, [arch_dir, common])
        shutil.rmtree(dest, ignore_errors=True)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process finished first: use its tree
            shutil.rmtree(tmp, ignore_errors=True)
    return HeaderChoice(
        dest,
        True,
        f"no headers for kernel {release}; assembled a tree from {os.path.basename(arch_dir)} "
        f"and {os.path.basename(common)} at {dest} (safe: the BPF programs read no kernel structs)",
    )


def apply(choice: HeaderChoice) -> None:
    """Point bcc at the chosen tree (read by libbcc when it compiles)."""
    if choice.assembled:
        os.environ["BCC_KERNEL_SOURCE"] = choice.path
