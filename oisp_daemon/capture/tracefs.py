"""Make sure tracefs (and debugfs, where bcc 0.26 still looks) is mounted.

bcc reads tracepoint field layouts from tracefs to compile TRACEPOINT_PROBE programs. systemd
mounts both at boot; minimal VMs and containers often do not, and then compilation fails with
"incomplete definition of type struct tracepoint__...". As root we can simply mount them.
"""
from __future__ import annotations

import logging
import os
import subprocess
from typing import List

log = logging.getLogger(__name__)

MOUNTS = (("debugfs", "/sys/kernel/debug"), ("tracefs", "/sys/kernel/tracing"))


def _has_events(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "events"))


def ensure_mounted() -> List[str]:
    """Mount what is missing; return a description of each mount made (for the log)."""
    made = []
    for fstype, path in MOUNTS:
        probe = os.path.join(path, "tracing") if fstype == "debugfs" else path
        if _has_events(probe) or not os.path.isdir(path):
            continue
        result = subprocess.run(
            ["mount", "-t", fstype, fstype, path], capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            made.append(f"mounted {fstype} at {path}")
        else:
            log.warning("could not mount %s at %s: %s", fstype, path, result.stderr.strip())
    return made
