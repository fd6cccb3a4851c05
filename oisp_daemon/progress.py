"""A one-line progress indicator for the terminal while slow start-up work runs.

bcc compiles the BPF C with clang at start-up, which takes seconds on a slow machine; a silent
terminal in that time looks like a hang. Off a terminal (journal, pipes) it prints nothing.
"""
from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import Optional, TextIO, Type


class Progress:
    FRAMES = "|/-\\"

    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.stream = stream
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._start = 0.0

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(0.1):
            elapsed = time.monotonic() - self._start
            self.stream.write(f"\r{self.FRAMES[i % 4]} {self.label} ({elapsed:.1f}s)")
            self.stream.flush()
            i += 1

    def __enter__(self) -> "Progress":
        self._start = time.monotonic()
        if self.stream.isatty():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            status = "failed" if exc_type else "done"
            elapsed = time.monotonic() - self._start
            self.stream.write(f"\r{self.label}: {status} in {elapsed:.1f}s\n")
            self.stream.flush()
