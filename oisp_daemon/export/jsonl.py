"""JSON Lines sink: one event per line, flushed as it is written.

Flushing each line means `tail -f` and a crash both see every event written so far; the cost is
one write(2) per event, which is small next to the decoding that produced it.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, Optional, TextIO


class JsonlSink:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._fh: Optional[TextIO] = open(self.path, "a", encoding="utf-8")
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

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
