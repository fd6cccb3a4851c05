"""Continuous discovery on real processes and real files (no BPF: attaching is recorded)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from oisp_daemon.capture.discovery import ATTACHED_ALREADY, ATTACHED_NEW, Discovery, parse_maps
from oisp_daemon.capture.tls_scan import format_reports, reports_for
from tests.support.chroot import copy_with_libraries

SYSTEM_LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"

MAPS = """\
55d0c0a00000-55d0c0a2c000 r--p 00000000 fe:00 1316                       /usr/bin/python3.11
55d0c0a2c000-55d0c0d3a000 r-xp 0002c000 fe:00 1316                       /usr/bin/python3.11
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
7f1000000000-7f1000020000 r--p 00000000 fe:00 2001                       /tmp/x/libssl.so.3
7f1000020000-7f1000080000 r-xp 00020000 fe:00 2001                       /tmp/x/libssl.so.3
7f2000000000-7f2000001000 r-xp 00000000 fe:00 2002                       /tmp/gone.so (deleted)
7f3000000000-7f3000001000 r--p 00000000 fe:00 2003                       /usr/share/locale/data
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
garbage line
"""


def test_parse_maps_lists_each_file_once_with_whether_it_is_executable():
    files = {m.path: m for m in parse_maps(MAPS)}
    assert set(files) == {"/usr/bin/python3.11", "/tmp/x/libssl.so.3", "/usr/share/locale/data"}
    assert files["/tmp/x/libssl.so.3"].executable and files["/tmp/x/libssl.so.3"].key == ("fe:00", 2001)
    assert not files["/usr/share/locale/data"].executable


class Recorder:
    def __init__(self, already=()) -> None:
        self.attached: List = []
        self.detached: List = []
        self.already = set(already)

    def attach(self, target):
        if target.identity in self.already:
            return ATTACHED_ALREADY
        self.attached.append(target)
        return ATTACHED_NEW

    def detach(self, identity):
        self.detached.append(identity)


@pytest.fixture
def libcopy(tmp_path) -> Path:
    """A private copy of the system libssl: a new inode nobody has seen."""
    libdir = tmp_path / "vendored"
    libdir.mkdir()
    shutil.copyfile(SYSTEM_LIBSSL, libdir / "libssl.so.3")
    return libdir


def python_with(libdir: Path, seconds: float = 30) -> subprocess.Popen:
    """A Python that loads libssl from `libdir` (LD_LIBRARY_PATH) and waits, ready when it prints."""
    proc = subprocess.Popen([sys.executable, "-c", f"import ssl, time; print('up', flush=True); time.sleep({seconds})"],
                            env=dict(os.environ, LD_LIBRARY_PATH=str(libdir)), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    return proc


def test_a_process_mapping_a_private_libssl_copy_gets_it_attached_once(libcopy):
    rec = Recorder(already={(os.stat(SYSTEM_LIBSSL).st_dev, os.stat(SYSTEM_LIBSSL).st_ino)})
    found = Discovery(rec.attach, rec.detach)
    first, second = python_with(libcopy), python_with(libcopy)
    try:
        assert found.scan_pid(first.pid) is True
        assert found.scan_pid(second.pid) is False  # the same file: already probed
        assert [t.shown_path for t in rec.attached] == [str(libcopy / "libssl.so.3")]
        assert rec.attached[0].families == ["openssl"] and rec.attached[0].origin == "discovered"
        assert found.is_covered(first.pid) and found.is_covered(second.pid)
        assert found.counters["discovery_targets_attached"] == 1
    finally:
        first.kill(), second.kill(), first.wait(), second.wait()


def test_a_file_nobody_maps_any_more_is_released_by_the_sweep(libcopy):
    rec = Recorder()
    found = Discovery(rec.attach, rec.detach)
    proc = python_with(libcopy)
    try:
        found.scan_pid(proc.pid)
        copy = [t for t in rec.attached if t.shown_path == str(libcopy / "libssl.so.3")]
        assert copy
        found.scan_all(release_after_s=0)
        assert copy[0].identity not in rec.detached  # still mapped
    finally:
        proc.kill()
        proc.wait()
    found.scan_all()
    assert copy[0].identity not in rec.detached  # kept a while for the next run
    found.scan_all(release_after_s=0)
    assert copy[0].identity in rec.detached
    assert not found.is_covered(proc.pid)
    assert found.counters["discovery_targets_detached"] >= 1


def test_a_system_file_is_covered_but_never_released_by_discovery():
    identity = (os.stat(SYSTEM_LIBSSL).st_dev, os.stat(SYSTEM_LIBSSL).st_ino)
    rec = Recorder(already={identity})
    found = Discovery(rec.attach, rec.detach)
    proc = subprocess.Popen([sys.executable, "-c", "import ssl, time; print('up', flush=True); time.sleep(30)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        found.scan_pid(proc.pid)
        assert found.is_covered(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    found.scan_all()
    assert identity not in rec.detached and all(t.identity != identity for t in rec.attached)


def jailed_sleep(root: Path) -> subprocess.Popen:
    """sleep(1) chrooted into `root`, preloading a libssl copy that exists only in its private
    mount namespace (a tmpfs mounted there at /opt/tls): the daemon reaches it only through
    /proc/PID/root, as it reaches a container's files."""
    for binary in ("/bin/sleep", "/usr/bin/env", SYSTEM_LIBSSL):
        copy_with_libraries(binary, root)
    (root / "opt" / "tls").mkdir(parents=True)
    script = (f"mount -t tmpfs tls {root}/opt/tls && cp {SYSTEM_LIBSSL} {root}/opt/tls/libssl.so.3 && "
              f"exec chroot {root} /usr/bin/env LD_PRELOAD=/opt/tls/libssl.so.3 /bin/sleep 30")
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot and mount need root")
def test_a_libssl_that_exists_only_under_proc_pid_root_is_reached_through_it(tmp_path):
    rec = Recorder(already={(os.stat(SYSTEM_LIBSSL).st_dev, os.stat(SYSTEM_LIBSSL).st_ino)})
    found = Discovery(rec.attach, rec.detach)
    proc = jailed_sleep(tmp_path / "jail")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not found.scan_pid(proc.pid):
            time.sleep(0.05)
        assert not (tmp_path / "jail" / "opt" / "tls" / "libssl.so.3").exists()  # not from here
        assert len(rec.attached) == 1 and rec.attached[0].shown_path.endswith("/opt/tls/libssl.so.3")
        assert rec.attached[0].path.startswith(f"/proc/{proc.pid}/")
        assert rec.attached[0].families == ["openssl"]
        assert found.is_covered(proc.pid)
        text = format_reports(reports_for(str(proc.pid)))
        assert f"/opt/tls/libssl.so.3 (as /proc/{proc.pid}/" in text and "SSL_write" in text
    finally:
        proc.kill()
        proc.wait()


def test_notifications_for_one_pid_are_coalesced_and_a_full_queue_is_counted(monkeypatch):
    found = Discovery(Recorder().attach, Recorder().detach)
    for _ in range(5):
        found.notify(1234)
    assert found._queue.qsize() == 1
    monkeypatch.setattr(found, "_queue", __import__("queue").Queue(maxsize=1))
    found._pending.clear()
    found.notify(1)
    found.notify(2)
    assert found.counters["discovery_notifications_dropped"] == 1


def test_gone_or_unreadable_processes_are_skipped():
    found = Discovery(Recorder().attach, Recorder().detach)
    assert found.scan_pid(2 ** 22 + 7) is False
    assert found.scan_pid(os.getpid()) is False  # never itself


def test_the_started_thread_attaches_a_new_process_told_by_notify(libcopy):
    rec = Recorder()
    found = Discovery(rec.attach, rec.detach)
    found.start()
    try:
        proc = python_with(libcopy)
        found.notify(proc.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(t.shown_path.startswith(str(libcopy)) for t in rec.attached):
            time.sleep(0.02)
        assert any(t.shown_path.startswith(str(libcopy)) for t in rec.attached)
        assert found.last_attach_ms is not None
        proc.kill()
        proc.wait()
    finally:
        found.stop()


def test_tls_scan_of_a_file_names_every_point_and_how_it_was_found():
    text = format_reports(reports_for(SYSTEM_LIBSSL))
    assert "OpenSSL" in text and "[openssl]: probed" in text
    for point in ("SSL_write", "SSL_read_ex", "SSL_free"):
        assert point in text
    assert "by symbol" in text
    assert "no such regular file" in format_reports(reports_for("/nonexistent"))
    assert "no TLS library found" in format_reports(reports_for("/bin/true"), show_all=True)


def test_a_file_mapped_by_a_process_gone_before_its_scan_is_probed_for_the_next(libcopy):
    """notify() opens new files as they are mapped: the scan that comes after the process has
    exited still finds (and probes) its private libssl."""
    rec = Recorder()
    found = Discovery(rec.attach, rec.detach)
    found.scan_all()  # what runs now is known; the copy is not
    proc = python_with(libcopy)
    found.notify(proc.pid)
    proc.kill()
    proc.wait()
    found._scan_notified(found._queue.get_nowait())
    copies = [t for t in rec.attached if t.shown_path == str(libcopy / "libssl.so.3")]
    assert len(copies) == 1 and copies[0].path.startswith(f"/proc/{os.getpid()}/fd/")
    assert found._held == {}


def test_a_released_file_mapped_again_by_a_process_gone_before_its_scan_is_probed_again(libcopy):
    """A file released after its grace stays known by its path; when the next process to map it
    is gone before its scan, notify() has still held it, so it is probed again for the run after."""
    rec = Recorder()
    found = Discovery(rec.attach, rec.detach)
    proc = python_with(libcopy)
    found.scan_pid(proc.pid)
    proc.kill()
    proc.wait()
    found.scan_all(release_after_s=0)
    [copy] = [t for t in rec.attached if t.shown_path == str(libcopy / "libssl.so.3")]
    assert copy.identity in rec.detached
    again = python_with(libcopy)
    found.notify(again.pid)
    again.kill()
    again.wait()
    found._scan_notified(found._queue.get_nowait())
    assert [t.identity for t in rec.attached].count(copy.identity) == 2 and found._held == {}
