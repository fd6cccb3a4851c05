"""JSON Lines sink: one event per line, flushed as it is written.

Flushing each line means `tail -f` and a crash both see every event written so far; the cost is
one write(2) per event, which is small next to the decoding that produced it.

The file holds captured prompts and answers, and the daemon writing it is root, so it is opened
through private_files: mode 0600 whatever the umask, never through a symlink, and never a file
that belongs to someone other than the uid it is written for.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, Optional, TextIO

from ..private_files import create_private, make_dirs, open_private

# Missing sink directories: traversable, so a session's owner reaches their own file, not listable.
SINK_DIR_MODE = 0o711


class JsonlSink:
    def __init__(self, path: str, owner_uid: Optional[int] = None, fresh: bool = False) -> None:
        """Open `path` for `owner_uid` (default: the writer's own uid), mode 0600.

        `fresh`: the file must not exist yet (O_EXCL), so no earlier content is handed over.
        Otherwise an existing file is appended to only if it already belongs to the owner."""
        self.path = os.path.abspath(path)
        make_dirs(os.path.dirname(self.path), SINK_DIR_MODE)
        fd = (create_private if fresh else open_private)(self.path, owner_uid, 0o600)
        self._fh: Optional[TextIO] = open(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self.written = 0

    def write(self, event: Dict[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if self._fh is None:
                raise ValueError(f"sink {self.path} is closed")
            self._fh.write(line + "\n")
            self._fh.flush()
            self.written += 1

    @property
    def closed(self) -> bool:
        return self._fh is None

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
