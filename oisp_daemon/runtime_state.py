"""What the daemon keeps on disk of its own: its directories, and runtime.json.

Both are root's and private whatever the umask (tests run it with umask 000): the state
directory is traversable but not listable, so a session's owner can reach the session file
handed to them (0600, theirs) and nothing else; the cache is root's alone; the runtime directory
stays readable because it holds the control socket every local user talks to.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, List, Mapping, Optional

from .private_files import UnsafeFile, ensure_private_dir, read_private, write_atomic

log = logging.getLogger(__name__)

DIRECTORY_MODES = (("state_dir", 0o711), ("cache_dir", 0o700), ("runtime_dir", 0o755))
MAX_STATE_BYTES = 4 * 1024 * 1024  # far above what binary paths and a mode can need


def prepare_directories(paths: Mapping[str, str]) -> None:
    """Create or fix the daemon's directories (config `paths`); raises OSError if one is unsafe."""
    for key, mode in DIRECTORY_MODES:
        ensure_private_dir(paths[key], mode)


class RuntimeState:
    """Changes made through the control plane that outlive a restart: binary paths added and
    the global redaction mode set by an admin (which then wins over the config's)."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "runtime.json")
        self.binary_paths: List[str] = []
        self.redaction: Optional[str] = None
        try:
            data: Any = json.loads(read_private(self.path, MAX_STATE_BYTES))
            self.binary_paths = [p for p in data.get("binary_paths", []) if isinstance(p, str)]
            self.redaction = data.get("redaction") if isinstance(data.get("redaction"), str) else None
        except FileNotFoundError:
            pass
        except UnsafeFile as exc:
            log.error("ignoring %s: %s", self.path, exc.strerror)
        except (OSError, ValueError, AttributeError) as exc:
            log.error("ignoring unreadable %s: %s", self.path, exc)

    def save(self) -> None:
        data = {"binary_paths": self.binary_paths, "redaction": self.redaction}
        write_atomic(self.path, json.dumps(data, indent=1).encode(), 0o600)
