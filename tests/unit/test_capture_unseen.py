"""capture/unseen.py: processes whose TLS the sensor cannot see are listed, bounded, and dropped."""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Set

import pytest

from oisp_daemon.capture import records as rec
from oisp_daemon.capture.unseen import GRACE_S, TICK_S, UnseenTls

RUSTLS = "rustls, static: not supported"
GONE_PID = 2 ** 22 + 12345  # above pid_max's default ceiling: no such process


class Clock:
    """A settable monotonic clock: time passes when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Machine:
    """What discovery would answer: which pids map a probed library, which have an unsupported one."""

    def __init__(self) -> None:
        self.covered: Set[int] = set()
        self.unsupported = {}

    def is_covered(self, pid: int) -> bool:
        return pid in self.covered

    def library(self, pid: int) -> Optional[str]:
        return self.unsupported.get(pid)


@pytest.fixture
def machine() -> Machine:
    return Machine()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def unseen(machine: Machine, clock: Clock) -> UnseenTls:
    return UnseenTls(machine.is_covered, machine.library, tls_ports=(443,), monotonic=clock, keep_exited_s=60,
                     max_entries=3)


def pids(unseen: UnseenTls) -> List[int]:
    return [e["pid"] for e in unseen.entries()]


def judged(unseen: UnseenTls, clock: Clock) -> List[int]:
    """The listed pids once the grace of every connect so far is over."""
    clock.now += GRACE_S
    unseen.tick()
    return pids(unseen)


def test_uncovered_process_connecting_to_443_is_listed_with_its_exe_and_comm(unseen: UnseenTls,
                                                                             clock: Clock) -> None:
    unseen.on_connect(os.getpid(), 443)
    assert unseen.entries() == [] and unseen.count() == 0, "listed only after the grace"
    assert judged(unseen, clock) == [os.getpid()]
    [entry] = unseen.entries()
    assert entry["pid"] == os.getpid()
    assert entry["exe"] == os.path.realpath(sys.executable)
    with open("/proc/self/comm") as fh:
        assert entry["comm"] == fh.read().strip()
    assert entry["library"] is None and entry["connects"] == 1
    assert entry["first_seen"] > 0
    assert unseen.count() == 1


def test_covered_process_is_not_listed(unseen: UnseenTls, machine: Machine, clock: Clock) -> None:
    machine.covered.add(os.getpid())
    unseen.on_connect(os.getpid(), 443)
    assert judged(unseen, clock) == [] and unseen.count() == 0


def test_a_process_discovery_reads_during_the_grace_is_not_listed(unseen: UnseenTls, machine: Machine,
                                                                  clock: Clock) -> None:
    unseen.on_connect(GONE_PID, 443)  # before discovery read its maps
    unseen.on_exit(GONE_PID)  # a short-lived client: gone, but discovery keeps its answer
    machine.covered.add(GONE_PID)
    assert judged(unseen, clock) == []


def chunk(pid: int, ssl: int) -> rec.DataChunk:
    return rec.DataChunk("write", pid, pid, 0, ssl, 0, 5, 0, 1, "curl", b"GET /", False)


def test_a_process_whose_tls_records_arrived_is_covered_though_gone_unread(unseen: UnseenTls,
                                                                         clock: Clock) -> None:
    unseen.handle(rec.Connect(GONE_PID, 5, "127.0.0.1", 443, 1))
    unseen.handle(chunk(GONE_PID, 0x5555_0000))  # its first SSL_write, AI or not
    unseen.handle(rec.Exit(GONE_PID, 2))  # gone before discovery or the maps check read it
    assert judged(unseen, clock) == []


def test_an_ssl_set_fd_record_proves_coverage_too(unseen: UnseenTls, clock: Clock) -> None:
    unseen.handle(rec.SetFd(GONE_PID, 0x5555_0000, 5, 1))
    unseen.handle(rec.Connect(GONE_PID, 5, "127.0.0.1", 443, 2))
    assert judged(unseen, clock) == []


def test_plain_http_records_prove_nothing_about_tls(unseen: UnseenTls, clock: Clock) -> None:
    unseen.handle(chunk(GONE_PID, rec.PLAIN_TAG | 1 << 32 | 5))
    unseen.handle(rec.Connect(GONE_PID, 6, "127.0.0.1", 443, 2))
    assert judged(unseen, clock) == [GONE_PID]


def test_an_exec_forgets_what_the_old_image_carried(unseen: UnseenTls, clock: Clock) -> None:
    unseen.handle(chunk(GONE_PID, 0x5555_0000))
    unseen.handle(rec.Exec(GONE_PID, "/usr/bin/blind", "blind", 0, 2))
    unseen.handle(rec.Connect(GONE_PID, 5, "127.0.0.1", 443, 3))
    assert judged(unseen, clock) == [GONE_PID]


def test_a_listed_process_whose_records_arrive_later_is_dropped(unseen: UnseenTls, clock: Clock) -> None:
    unseen.on_connect(os.getpid(), 443)
    assert judged(unseen, clock) == [os.getpid()]
    unseen.handle(chunk(os.getpid(), 0x5555_0000))  # a library attached after it started
    assert judged(unseen, clock) == []


def test_a_library_named_during_the_grace_is_listed_by_name(unseen: UnseenTls, machine: Machine,
                                                            clock: Clock) -> None:
    unseen.on_connect(GONE_PID, 443)
    machine.unsupported[GONE_PID] = RUSTLS
    assert judged(unseen, clock) == [GONE_PID]
    assert unseen.entries()[0]["library"] == RUSTLS


def test_settle_judges_what_is_pending(unseen: UnseenTls, machine: Machine) -> None:
    unseen.on_connect(GONE_PID, 443)
    unseen.on_connect(GONE_PID + 1, 443)
    machine.covered.add(GONE_PID + 1)
    unseen.settle()  # no time has passed: the sensor is stopping
    assert pids(unseen) == [GONE_PID]


def test_unsupported_library_is_listed_by_name_even_when_something_else_is_covered(
        unseen: UnseenTls, machine: Machine) -> None:
    machine.covered.add(GONE_PID)
    machine.unsupported[GONE_PID] = RUSTLS
    unseen.on_connect(GONE_PID, 443)
    [entry] = unseen.entries()  # a named library needs no grace
    assert entry["library"] == RUSTLS
    assert entry["exe"] is None and entry["comm"] is None  # gone: nothing to read in /proc


def test_other_ports_are_not_tls(unseen: UnseenTls, clock: Clock) -> None:
    unseen.on_connect(GONE_PID, 80)
    unseen.on_connect(GONE_PID, 8443)
    assert judged(unseen, clock) == []


def test_configured_tls_ports(machine: Machine, clock: Clock) -> None:
    unseen = UnseenTls(machine.is_covered, machine.library, tls_ports=(8443,), monotonic=clock)
    unseen.on_connect(GONE_PID, 443)
    unseen.on_connect(GONE_PID + 1, 8443)
    assert judged(unseen, clock) == [GONE_PID + 1]


def test_connects_are_counted_per_process(unseen: UnseenTls, clock: Clock) -> None:
    for _ in range(3):
        unseen.on_connect(GONE_PID, 443)
    judged(unseen, clock)
    [entry] = unseen.entries()
    assert entry["connects"] == 3


def test_records_feed_it(unseen: UnseenTls, clock: Clock) -> None:
    unseen.handle(rec.Connect(GONE_PID, 5, "127.0.0.1", 443, 1))
    unseen.handle(rec.Fork(1, GONE_PID, 1))  # other records are not its business
    assert judged(unseen, clock) == [GONE_PID]
    unseen.handle(rec.Exit(GONE_PID, 2))
    clock.now += 61
    unseen.tick()
    assert unseen.entries() == []


def test_exited_process_stays_listed_for_a_while(unseen: UnseenTls, clock: Clock) -> None:
    unseen.on_connect(GONE_PID, 443)
    unseen.on_exit(GONE_PID)
    assert judged(unseen, clock) == [GONE_PID]
    clock.now += 30
    unseen.tick()
    assert pids(unseen) == [GONE_PID]
    clock.now += 31
    unseen.tick()
    assert pids(unseen) == []


def test_a_new_process_with_an_old_pid_is_a_new_entry(unseen: UnseenTls, clock: Clock) -> None:
    unseen.on_connect(GONE_PID, 443)
    unseen.on_connect(GONE_PID, 443)
    unseen.on_exit(GONE_PID)
    unseen.on_connect(GONE_PID, 443)
    judged(unseen, clock)
    [entry] = unseen.entries()
    assert entry["connects"] == 1


def test_a_process_covered_later_is_dropped_at_the_next_tick(unseen: UnseenTls, machine: Machine,
                                                              clock: Clock) -> None:
    unseen.on_connect(GONE_PID, 443)
    assert judged(unseen, clock) == [GONE_PID]
    machine.covered.add(GONE_PID)  # discovery attached its library later
    unseen.tick()
    assert pids(unseen) == [GONE_PID], "ticks are rate-limited"
    clock.now += TICK_S
    unseen.tick()
    assert pids(unseen) == []


def test_a_named_unsupported_library_stays_even_if_covered_later(unseen: UnseenTls, machine: Machine,
                                                                 clock: Clock) -> None:
    machine.unsupported[GONE_PID] = RUSTLS
    unseen.on_connect(GONE_PID, 443)
    machine.covered.add(GONE_PID)
    assert judged(unseen, clock) == [GONE_PID]


def test_bounded_exited_processes_go_first(unseen: UnseenTls, clock: Clock) -> None:
    for pid in (GONE_PID, GONE_PID + 1, GONE_PID + 2):
        unseen.on_connect(pid, 443)
    unseen.on_exit(GONE_PID + 1)
    unseen.on_connect(GONE_PID + 3, 443)
    assert sorted(judged(unseen, clock)) == [GONE_PID, GONE_PID + 2, GONE_PID + 3]
    unseen.on_connect(GONE_PID + 4, 443)  # none exited: the least recently active goes
    judged(unseen, clock)
    assert sorted(pids(unseen)) == [GONE_PID + 2, GONE_PID + 3, GONE_PID + 4]
    assert unseen.count() == 3


def test_recent_activity_protects_an_entry_from_eviction(unseen: UnseenTls, clock: Clock) -> None:
    for pid in (GONE_PID, GONE_PID + 1, GONE_PID + 2):
        unseen.on_connect(pid, 443)
    unseen.on_connect(GONE_PID, 443)  # the oldest is active again
    unseen.on_connect(GONE_PID + 3, 443)
    assert sorted(judged(unseen, clock)) == [GONE_PID, GONE_PID + 2, GONE_PID + 3]


# -- how status and doctor show them ----------------------------------------------------------

CODEX_ENTRY = {"pid": 42, "exe": "/opt/codex/codex", "comm": "codex", "library": RUSTLS,
               "first_seen": 1_800_000_000.0, "connects": 3}


def test_status_lists_unseen_processes_last() -> None:
    from oisp_ctl.format import format_status
    text = format_status({"version": "1", "probes": [], "unseen_tls": [CODEX_ENTRY]}).splitlines()
    assert text[-2].startswith("unseen TLS:") and " 1 " in text[-2] + " "
    assert text[-1].startswith("  pid 42 codex (/opt/codex/codex): rustls, static: not supported; 3 TLS connects since ")
    quiet = format_status({"version": "1", "unseen_tls": []}).splitlines()
    assert quiet[-1].split() == ["unseen", "TLS:", "0"]


def test_status_names_an_unknown_library() -> None:
    from oisp_ctl.format import unseen_line
    line = unseen_line(dict(CODEX_ENTRY, library=None, exe=None))
    assert line.startswith("pid 42 codex: no TLS library the sensor probes; ")


def test_doctor_warns_about_unseen_processes() -> None:
    from oisp_ctl import doctor
    check = doctor.check_unseen({"unseen_tls": [CODEX_ENTRY, dict(CODEX_ENTRY, pid=43, library=None)]})
    assert check.status == doctor.WARN and check.name == "unseen"
    assert check.detail.startswith("2 processes talk TLS the sensor cannot see: pid 42 codex")
    assert check.detail.endswith("(through an unknown library, rustls, static: not supported)")
    assert doctor.check_unseen({"unseen_tls": []}).status == doctor.OK
    assert doctor.check_unseen({}).status == doctor.WARN  # an older daemon


def test_record_describes_an_unseen_process() -> None:
    from oisp_daemon.capture.unseen import describe
    assert describe(CODEX_ENTRY) == "/opt/codex/codex (pid 42, rustls, static: not supported, 3 TLS connects)"
    assert describe(dict(CODEX_ENTRY, exe=None, library=None)) == (
        "codex (pid 42, no TLS library the sensor probes, 3 TLS connects)")


def test_a_process_gone_before_its_connect_is_read_keeps_its_exec_name(unseen: UnseenTls, clock: Clock) -> None:
    unseen.handle(rec.Exec(GONE_PID, "/usr/bin/gone", "gone", 0, 1, b"gone\0", "/usr/bin/gone-real"))
    unseen.handle(rec.Connect(GONE_PID, 3, "127.0.0.1", 443, 2))
    judged(unseen, clock)
    [entry] = unseen.entries()
    assert (entry["exe"], entry["comm"]) == ("/usr/bin/gone-real", "gone")


def test_doctor_names_the_known_libraries_first() -> None:
    from oisp_ctl import doctor
    unknown = [dict(CODEX_ENTRY, pid=100 + i, library=None) for i in range(doctor.SHOWN_UNSEEN)]
    check = doctor.check_unseen({"unseen_tls": unknown + [CODEX_ENTRY]})
    assert "pid 42 codex (/opt/codex/codex): rustls" in check.detail
    assert " and 1 more (through " in check.detail


def test_a_library_named_after_the_verdict_is_filled_in(unseen: UnseenTls, machine: Machine, clock: Clock) -> None:
    unseen.on_connect(GONE_PID, 443)
    assert judged(unseen, clock) == [GONE_PID]
    machine.unsupported[GONE_PID] = RUSTLS  # discovery finished scanning the binary late
    clock.now += TICK_S
    unseen.tick()
    assert unseen.entries()[0]["library"] == RUSTLS


def test_maps_probed_compares_devices_and_inodes_of_executable_mappings() -> None:
    from oisp_daemon.capture.unseen import maps_probed
    st = os.stat(os.path.realpath(sys.executable))  # mapped executable by this very process
    assert maps_probed(os.getpid(), [(st.st_dev, st.st_ino)])
    assert not maps_probed(os.getpid(), [(st.st_dev, st.st_ino + 1_000_000_007)])
    assert not maps_probed(os.getpid(), [])
    assert not maps_probed(GONE_PID, [(st.st_dev, st.st_ino)])
    data = os.stat("/proc/self/maps")  # not an executable mapping of ours
    assert not maps_probed(os.getpid(), [(data.st_dev, data.st_ino)])
