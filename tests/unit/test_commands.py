"""The command queue: control threads hand capture-state changes to the one owning thread."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, List

import pytest

from oisp_daemon.commands import CommandQueue
from oisp_daemon.errors import Conflict, DaemonError, LimitExceeded


class Owner:
    """The owning thread: a loop that runs queued commands until told to stop, as the sensor's."""

    def __init__(self, commands: CommandQueue) -> None:
        self.commands = commands
        self.ident = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.ident = threading.get_ident()
        while not self._stop.is_set():
            self.commands.run_pending()
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def queue_and_owner():
    commands = CommandQueue(max_pending=8, timeout_s=5)
    owner = Owner(commands)
    yield commands, owner
    owner.stop()


def in_thread(fn: Callable[[], Any]) -> "list":
    """Run fn on a new thread; returns [result or exception] once it ends."""
    out: List[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # the test looks at it
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return out


def test_a_command_runs_on_the_owner_thread_and_returns_its_result(queue_and_owner):
    commands, owner = queue_and_owner
    out = in_thread(lambda: commands.call(lambda: ("ran on", threading.get_ident()), "probe"))
    assert out == [("ran on", owner.ident)]


def test_a_refusal_reaches_the_caller_and_the_owner_carries_on(queue_and_owner):
    commands, _owner = queue_and_owner

    def refuse() -> None:
        raise Conflict("already attached")

    def broken() -> None:
        raise KeyError("bug")

    assert isinstance(in_thread(lambda: commands.call(refuse, "add"))[0], Conflict)
    assert isinstance(in_thread(lambda: commands.call(broken, "add"))[0], KeyError)
    assert in_thread(lambda: commands.call(lambda: 42, "after"))[0] == 42


def test_commands_from_many_threads_run_one_at_a_time_in_order_per_caller():
    commands = CommandQueue(max_pending=64, timeout_s=10)
    owner = Owner(commands)
    running, seen, overlaps = [0], {}, []

    def command(client: int, n: int) -> int:
        running[0] += 1
        if running[0] != 1:
            overlaps.append((client, n))
        seen.setdefault(client, []).append(n)
        running[0] -= 1
        return n

    def client(i: int) -> None:
        for n in range(25):
            assert commands.call(lambda: command(i, n), f"client {i}") == n

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    owner.stop()
    assert overlaps == []
    assert seen == {i: list(range(25)) for i in range(6)}


def test_a_full_queue_refuses_at_once():
    commands = CommandQueue(max_pending=2, timeout_s=0.2)  # nobody runs them
    waiting = [threading.Thread(target=in_thread, args=(lambda: commands.call(lambda: 1, "wait"),)) for _ in range(2)]
    for t in waiting:
        t.start()
    deadline = time.monotonic() + 5
    while commands.pending() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(LimitExceeded, match="2 control commands are already waiting"):
        commands.call(lambda: 1, "one too many")
    for t in waiting:
        t.join(5)


def test_a_timed_out_command_never_runs_later():
    commands = CommandQueue(max_pending=4, timeout_s=0.1)
    ran: List[str] = []
    with pytest.raises(DaemonError, match="did not get to it within 0.1 s, so nothing was changed"):
        commands.call(lambda: ran.append("late"), "add /x")
    assert commands.run_pending() == 0  # the owner comes round now: the cancelled one is skipped
    assert ran == []


def test_the_owner_calling_runs_at_once():
    commands = CommandQueue()
    commands.run_pending()  # this thread owns it now (as the main loop after its first turn)
    assert commands.call(lambda: "direct", "reload") == "direct"
    assert commands.pending() == 0


def test_a_new_command_wakes_the_owner():
    woken = threading.Event()
    commands = CommandQueue(wake=woken.set, timeout_s=0.05)
    with pytest.raises(DaemonError):
        commands.call(lambda: None, "nudge")
    assert woken.is_set()


def test_closing_answers_waiting_callers_and_refuses_new_ones():
    commands = CommandQueue(timeout_s=10)
    result: List[Any] = []
    caller = threading.Thread(target=lambda: result.extend(in_thread(lambda: commands.call(lambda: 1, "reload"))))
    caller.start()
    deadline = time.monotonic() + 5
    while commands.pending() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    commands.close()
    caller.join(5)
    assert isinstance(result[0], DaemonError) and "stopped before carrying it out" in result[0].message
    with pytest.raises(DaemonError, match="the daemon is stopping"):
        commands.call(lambda: 1, "reload")
