"""Run oisp-ctl as another user, as an operator without privileges would.

The client runs as uid/gid 65534 (nobody) without supplementary groups under `setpriv`, on the
system interpreter, from a copy of the oisp_ctl package alone in a world-readable directory: so it
also proves that oisp-ctl needs nothing from oisp_daemon and that a user who cannot read the
checkout can still use it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Optional

from tests.support.paths import REPO_ROOT

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"


def _install_copy(public_dir: Path) -> Path:
    package = public_dir / "pkg"
    if not package.exists():
        shutil.copytree(REPO_ROOT / "oisp_ctl", package / "oisp_ctl",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(package):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o755)
        os.chmod(package, 0o755)
    return package


def run_ctl_as_nobody(public_dir: Path, *argv: str,
                      env: Optional[Dict[str, str]] = None) -> "subprocess.CompletedProcess[str]":
    """oisp-ctl ARGV as nobody; `public_dir` must be world-traversable (mode 0755)."""
    package = _install_copy(public_dir)
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(package),
                "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/"}
    full_env.update(env or {})
    return subprocess.run(
        ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
         SYSTEM_PYTHON, "-c", "import sys; from oisp_ctl.cli import main; sys.exit(main())"]
        + list(argv),
        env=full_env, capture_output=True, text=True, timeout=30, check=False)
