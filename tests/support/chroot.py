"""Chroot trees for the tests that put a TLS library where only a process's own root shows it."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def copy_with_libraries(binary: str, root: Path) -> None:
    """`binary` and every library ldd names, at their own paths under `root` (each path a link
    resolves through too, so the dynamic loader finds them by either name)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = [binary] + [part for line in out.splitlines() for part in line.split() if part.startswith("/")]
    for path in paths:
        real = os.path.realpath(path)
        for name in {path, real}:
            dest = root / name.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copyfile(real, dest)
                shutil.copymode(real, dest)
