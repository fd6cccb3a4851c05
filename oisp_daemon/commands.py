"""Commands handed from other threads to the one thread that owns capture state.

The attached probes, runtime.json and the pipeline belong to the thread that consumes capture
(DESIGN.md: one owner, control operations hand it commands). A control worker thread calls
`call(fn)`: the command waits in a bounded queue, the owner runs it between two records
(`run_pending`), and the caller gets its result or its exception. A command that has not started
when the caller's timeout runs out is cancelled, so a caller that was told "timed out" never has
its change carried out later behind its back.
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Optional, Tuple

from .errors import DaemonError, LimitExceeded

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 64
DEFAULT_TIMEOUT_S = 20.0  # below oisp-ctl's 30 s, so the caller hears why rather than a silence

Command = Tuple[Callable[[], Any], "Future[Any]", str]


class CommandQueue:
    """A bounded queue of commands, each with a future its caller waits on."""

    def __init__(
        self,
        max_pending: int = DEFAULT_MAX_PENDING,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        wake: Optional[Callable[[], None]] = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._queue: "queue.Queue[Command]" = queue.Queue(maxsize=max_pending)
        self._wake = wake
        self._closed = threading.Event()
        self.owner: Optional[int] = None  # thread ident of the owner once it runs commands

    def call(self, fn: Callable[[], Any], what: str, timeout_s: Optional[float] = None) -> Any:
        """Run fn on the owning thread and return its result (or raise its exception).

        On the owner's own thread fn runs at once (a SIGHUP reload is already there). Raises
        LimitExceeded when too many commands wait, DaemonError when the owner does not get to it
        in time or the daemon is stopping."""
        if self.owner == threading.get_ident():
            return fn()
        if self._closed.is_set():
            raise DaemonError(f"{what}: the daemon is stopping")
        future: "Future[Any]" = Future()
        try:
            self._queue.put_nowait((fn, future, what))
        except queue.Full:
            raise LimitExceeded(
                f"{what}: {self._queue.maxsize} control commands are already waiting for the "
                "capture thread; try again in a moment"
            ) from None
        if self._wake is not None:
            self._wake()
        wait = self.timeout_s if timeout_s is None else timeout_s
        try:
            return future.result(timeout=wait)
        except FutureTimeout:
            if future.cancel():
                raise DaemonError(
                    f"{what}: the capture thread did not get to it within {wait:g} s, so nothing "
                    "was changed (is the daemon overloaded or stuck? journalctl -u oisp-sensor)"
                ) from None
            try:
                return future.result(timeout=wait)  # it started just now: its outcome answers
            except FutureTimeout:
                raise DaemonError(f"{what}: still running after {2 * wait:g} s (see journalctl -u oisp-sensor)") from None
        except CancelledError:
            raise DaemonError(f"{what}: the daemon stopped before carrying it out") from None

    def run_pending(self, limit: int = DEFAULT_MAX_PENDING) -> int:
        """(owner thread) Run up to `limit` waiting commands; returns how many ran."""
        self.owner = threading.get_ident()
        done = 0
        while done < limit:
            try:
                fn, future, what = self._queue.get_nowait()
            except queue.Empty:
                break
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up: do not change anything behind its back
            done += 1
            try:
                result = fn()
            except DaemonError as exc:  # a refusal: the caller's answer
                future.set_exception(exc)
            except BaseException as exc:  # a bug: the caller hears of it, the owner carries on
                log.exception("control command %s failed", what)
                future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                future.set_result(result)
        return done

    def close(self) -> None:
        """No more commands: waiting ones are cancelled (their callers hear the daemon stops)."""
        self._closed.set()
        while True:
            try:
                _fn, future, _what = self._queue.get_nowait()
            except queue.Empty:
                return
            future.cancel()

    def pending(self) -> int:
        return self._queue.qsize()
