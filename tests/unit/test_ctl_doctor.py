"""oisp-ctl doctor: each check on real files, commands and groups, the report and its exit code."""
from __future__ import annotations

import json
import os
import sys
import tempfile

import pytest

from oisp_ctl import doctor
from oisp_ctl.cli import main
from oisp_ctl.doctor import FAIL, OK, WARN, Check
from tests.support.control_server import ServerThread
from tests.support.daemon_double import DaemonDouble, make_operations

RELEASE = "6.18.44-test"


def write(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("release, status", [("6.1.0-18-amd64", OK), ("5.8.0", OK),
                                             ("5.4.0-42-generic", FAIL), ("weird", WARN)])
def test_kernel_version(release, status):
    check = doctor.check_kernel(release)
    assert check.status == status
    if status == FAIL:
        assert "5.8" in check.detail and "boot a kernel" in check.fix


def test_btf(tmp_path):
    assert doctor.check_btf(str(write(tmp_path / "vmlinux"))).status == OK
    missing = doctor.check_btf(str(tmp_path / "none"))
    assert missing.status == WARN and "CONFIG_DEBUG_INFO_BTF" in missing.fix


def test_tracefs(tmp_path):
    mounts = write(tmp_path / "mounts", "proc /proc proc rw 0 0\n"
                                        "tracefs /sys/kernel/tracing tracefs rw 0 0\n")
    filesystems = write(tmp_path / "filesystems", "nodev\tsysfs\nnodev\ttracefs\n")
    assert doctor.check_tracefs(str(mounts), str(filesystems)).detail == \
        "mounted at /sys/kernel/tracing"
    unmounted = write(tmp_path / "mounts2", "proc /proc proc rw 0 0\n")
    check = doctor.check_tracefs(str(unmounted), str(filesystems))
    assert check.status == WARN and "mount -t tracefs" in check.fix
    unsupported = write(tmp_path / "filesystems2", "nodev\tsysfs\n")
    assert doctor.check_tracefs(str(unmounted), str(unsupported)).status == FAIL


def test_headers_of_the_running_kernel(tmp_path):
    write(tmp_path / "modules" / RELEASE / "build" / "include" / "generated" / "autoconf.h")
    check = doctor.check_headers(RELEASE, str(tmp_path / "modules"), str(tmp_path / "src"))
    assert check.status == OK and "running kernel" in check.detail


def test_headers_of_another_kernel_are_assembled(tmp_path):
    for name in ("linux-headers-6.1.0-9-amd64", "linux-headers-6.1.0-9-common",
                 "linux-headers-6.1.0-12-amd64", "linux-headers-6.1.0-12-common"):
        (tmp_path / "src" / name).mkdir(parents=True)
    check = doctor.check_headers(RELEASE, str(tmp_path / "modules"), str(tmp_path / "src"))
    assert check.status == OK
    assert "assembles a tree from linux-headers-6.1.0-12-amd64" in check.detail


def test_no_headers_at_all(tmp_path):
    (tmp_path / "src" / "linux-headers-6.1.0-9-amd64").mkdir(parents=True)  # no -common half
    check = doctor.check_headers(RELEASE, str(tmp_path / "modules"), str(tmp_path / "src"))
    assert check.status == FAIL
    assert "apt-get install linux-headers-%s" % RELEASE in check.fix
    assert "kernel-devel" in check.fix


@pytest.mark.skipif(not os.path.exists(doctor.DAEMON_PYTHON), reason="no system python3")
def test_bcc_is_tried_in_the_system_interpreter():
    check = doctor.check_bcc()
    assert check.status in (OK, FAIL)
    assert doctor.DAEMON_PYTHON in check.detail
    if check.status == FAIL:
        assert "python3-bpfcc" in check.fix


def test_bcc_missing_names_the_package(tmp_path):
    # an interpreter without site-packages cannot import bcc, wherever it is installed
    python = write(tmp_path / "python", "#!/bin/sh\nexec %s -I -S \"$@\"\n" % doctor.DAEMON_PYTHON)
    python.chmod(0o755)
    check = doctor.check_bcc(python=str(python))
    assert check.status == FAIL
    assert "No module named 'bcc'" in check.detail
    assert "python3-bpfcc" in check.fix and "unrelated" in check.fix


def test_bcc_with_an_interpreter_that_does_not_exist(tmp_path):
    check = doctor.check_bcc(python=str(tmp_path / "nope"))
    assert check.status == FAIL and "cannot run" in check.detail


def test_libssl_from_the_linker_cache():
    check = doctor.check_libssl()
    assert check.status in (OK, WARN)
    if check.status == OK:
        assert "libssl.so." in check.detail


def test_libssl_parsing():
    cache = ("3 libs found in cache `/etc/ld.so.cache'\n"
             "\tlibssl.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so.3\n"
             "\tlibssl3.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl3.so\n"
             "\tlibssl.so.1.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so.1.1\n")
    assert doctor.check_libssl(lambda argv: (0, cache)).detail == "libssl.so.1.1, libssl.so.3"
    none = doctor.check_libssl(lambda argv: (0, "1 libs found\n\tlibc.so.6 => /lib/libc.so.6\n"))
    assert none.status == WARN and "libssl3" in none.fix
    assert doctor.check_libssl(lambda argv: None).status == WARN


def test_daemon_reachable(tmp_path):
    daemon = DaemonDouble(str(tmp_path / "state"))
    server = ServerThread(make_operations(daemon), str(tmp_path / "control.sock"))
    try:
        check = doctor.check_daemon(server.path)
    finally:
        server.close()
        daemon.close()
    assert check.status == OK
    assert check.detail.startswith("oisp-sensor/")
    assert "you may: read, tail.own" in check.detail


def test_daemon_unreachable_with_the_unit_installed_says_systemctl(tmp_path):
    units = [str(tmp_path / "etc"), str(tmp_path / "lib")]
    write(tmp_path / "lib" / "oisp-sensor.service", "[Service]\nExecStart=/usr/bin/oisp-sensor run\n")
    check = doctor.check_daemon(str(tmp_path / "control.sock"), unit_dirs=units)
    assert check.status == FAIL
    assert "no such file — is the daemon running?" in check.detail
    assert check.fix.startswith("sudo systemctl start oisp-sensor; then journalctl -u oisp-sensor")


def test_daemon_unreachable_without_a_unit_says_run_it_in_the_foreground(tmp_path):
    # a checkout set up by scripts/setup.sh: the daemon is .venv/bin/oisp-sensor, beside the python
    sensor = os.path.join(os.path.dirname(sys.executable), "oisp-sensor")
    assert os.path.exists(sensor), "the tests run from the venv that has the console scripts"
    write(tmp_path / "lib" / "other.service")
    check = doctor.check_daemon(str(tmp_path / "control.sock"), unit_dirs=[str(tmp_path / "lib")])
    assert check.status == FAIL
    assert "systemctl" not in check.fix
    assert "no oisp-sensor.service is installed" in check.fix
    assert "sudo %s run (add --config FILE" % sensor in check.fix


def test_installed_unit_is_found_in_any_unit_dir(tmp_path):
    dirs = [str(tmp_path / d) for d in ("etc", "run", "usr")]
    assert doctor.installed_unit(dirs) is None
    unit = write(tmp_path / "usr" / "oisp-sensor.service")
    assert doctor.installed_unit(dirs) == str(unit)


def test_groups_for_root():
    assert doctor.check_groups(uid=0).status == OK


# Group states are checked with real groups of every Debian system standing in for oisp/oisp-admin:
# nobody's primary group nogroup (65534) and root's group (0), which nobody is not in.

def test_groups_active_membership(monkeypatch):
    monkeypatch.setattr(doctor, "USER_GROUP", "nogroup")
    check = doctor.check_groups(uid=65534, process_gids=[65534])
    assert check.status == OK and "is in nogroup" in check.detail


def test_groups_added_after_login(monkeypatch):
    monkeypatch.setattr(doctor, "USER_GROUP", "nogroup")
    check = doctor.check_groups(uid=65534, process_gids=[])
    assert check.status == WARN and "log out and in again" in check.fix


def test_groups_not_a_member(monkeypatch):
    monkeypatch.setattr(doctor, "USER_GROUP", "root")
    monkeypatch.setattr(doctor, "ADMIN_GROUP", "root")
    check = doctor.check_groups(uid=65534, process_gids=[65534])
    assert check.status == WARN
    assert check.fix == "sudo usermod -aG root nobody, then log in again"


def test_groups_that_do_not_exist(monkeypatch):
    monkeypatch.setattr(doctor, "USER_GROUP", "oisp-no-such-group")
    monkeypatch.setattr(doctor, "ADMIN_GROUP", "oisp-no-such-admin-group")
    check = doctor.check_groups(uid=65534, process_gids=[65534])
    assert check.status == WARN and "does not exist" in check.detail


def test_report_and_exit_code():
    checks = [Check("kernel", OK, "Linux 6.1"), Check("headers", FAIL, "none", "install them"),
              Check("groups", WARN, "not in oisp", "usermod")]
    lines = doctor.render(checks).splitlines()
    assert lines[0] == "OK    kernel   Linux 6.1"
    assert lines[1] == "FAIL  headers  none"
    assert lines[2] == "               fix: install them"
    assert doctor.exit_code(checks) == 1
    assert doctor.exit_code([checks[0], checks[2]]) == 0


def test_doctor_command_json(tmp_path, capsys):
    with tempfile.TemporaryDirectory() as empty:
        code = main(["doctor", "--json", "--socket", os.path.join(empty, "control.sock")])
    checks = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in checks] == ["kernel", "btf", "tracefs", "headers", "bcc", "libssl",
                                           "daemon", "groups"]
    assert code == 1  # the daemon check fails: nothing listens
    assert {c["status"] for c in checks} <= {OK, WARN, FAIL}
