"""The .deb in a booted Debian 12: installed with apt, run by systemd, used by normal users, purged.

One container for the module (booting and installing are paid once); the tests run in file order
and follow the package's life: start, reload, use over the socket and the bus, stop, purge. The
root filesystem is cached (rootfs.sh) with every dependency installed, and the container has no
network but its own loopback, so `apt install ./oisp-sensor_*.deb` proves the package resolves
from distro packages alone. The HTTPS requests are curl (the container's libssl) against the
replay server of tests/support, answering as api.openai.com on the container's 127.0.0.1.

Users: alice (group oisp), carol (group oisp-admin), bob (neither).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import pytest

from tests.support.paths import FIXTURES_DIR, REPO_ROOT
from tests.system.container import Container, ContainerError

pytestmark = pytest.mark.bpf

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FIXTURE = "openai-chat-001"
REPLAY_DIR = "/srv/replay"  # the replay server's code, fixture and test CA inside the container
USERS = {"alice": "oisp", "carol": "oisp-admin", "bob": None}
# Build and container tools of the host (Debian 12 names), installed when missing.
HOST_PACKAGES = ("debhelper", "dh-python", "pybuild-plugin-pyproject", "python3-all",
                 "python3-setuptools", "systemd-container", "debootstrap", "lintian", "rpm")
# Paths that change by themselves while packages come and go (apt's and dpkg's books, logs,
# caches, the users' homes): left out of the "no stray files" comparison.
CHURN = ("/var/lib/apt/", "/var/lib/dpkg/", "/var/cache/apt/", "/var/cache/debconf/",
         "/var/log/", "/var/lib/systemd/", "/var/cache/ldconfig/", "/var/cache/man/",
         "/etc/ld.so.cache", "/tmp/", "/var/tmp/", "/home/", "/root/", REPLAY_DIR)
EVENT_WAIT_S = 60


def cannot_run(reason: str) -> None:
    if IN_CI:
        pytest.fail("system test cannot run under CI: %s" % reason)
    pytest.skip(reason)


def _host_tools() -> None:
    missing = [p for p in HOST_PACKAGES
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, capture_output=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=600)


@pytest.fixture(scope="module")
def deb() -> Path:
    """The package, built from this tree by `make deb` (as `make packages` does)."""
    if os.geteuid() != 0:
        cannot_run("needs root (debootstrap, systemd-nspawn)")
    _host_tools()
    built = subprocess.run(["make", "-C", str(REPO_ROOT), "deb"], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    found = sorted((REPO_ROOT / "build" / "packages").glob("oisp-sensor_*_all.deb"))
    assert found, "make deb built no package"
    return found[-1]


@pytest.fixture(scope="module")
def rootfs(deb: Path) -> Path:
    made = subprocess.run(["bash", str(Path(__file__).with_name("rootfs.sh"))], capture_output=True,
                          text=True, timeout=1800)
    assert made.returncode == 0, made.stderr[-3000:]
    return Path(made.stdout.strip().splitlines()[-1])


def _file_list(box: Container) -> Set[str]:
    listing = box.run(["find", "/", "-xdev", "(", "-path", "/proc", "-o", "-path", "/sys", ")",
                       "-prune", "-o", "-print"], check=False)
    return set(listing.stdout.splitlines())


def _copy_replay_server(box: Container, tmp: Path) -> None:
    """The replay server's code, one fixture and a test CA; api.openai.com -> 127.0.0.1."""
    from tests.support.tls import make_pki

    dest = box.path(REPLAY_DIR)
    (dest / "tests").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "tests" / "__init__.py", dest / "tests")
    shutil.copytree(REPO_ROOT / "tests" / "support", dest / "tests" / "support",
                    ignore=shutil.ignore_patterns("__pycache__"))
    fixtures = dest / "shared" / "fixtures" / "llm"
    fixtures.mkdir(parents=True)
    shutil.copy(FIXTURES_DIR / (FIXTURE + ".json"), fixtures)
    with open(FIXTURES_DIR / (FIXTURE + ".json"), encoding="utf-8") as fh:
        (dest / "body.json").write_text(json.load(fh)["request"]["body"])
    pki = make_pki(tmp / "pki")
    for name in ("ca_file", "cert_file", "key_file"):
        shutil.copy(getattr(pki, name), dest / Path(getattr(pki, name)).name)
    subprocess.run(["chmod", "-R", "a+rX", str(dest)], check=True)
    with open(box.path("/etc/hosts"), "a", encoding="utf-8") as hosts:
        hosts.write("127.0.0.1 api.openai.com\n")


@pytest.fixture(scope="module")
def box(rootfs: Path, deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The booted container, the package installed (apt, offline), the users and the replay server."""
    if shutil.which("systemd-nspawn") is None:
        cannot_run("systemd-nspawn is missing (apt-get install systemd-container)")
    container = Container(rootfs)
    replay = None
    try:
        _copy_replay_server(container, tmp_path_factory.mktemp("system"))
        shutil.copy(deb, container.path("/root/") / deb.name)
        container.boot()
        for user, group in USERS.items():
            container.run(["useradd", "--create-home", user])
        container.before_install = _file_list(container)  # type: ignore[attr-defined]
        installed = container.run(["apt-get", "install", "-y", "/root/" + deb.name], check=False,
                                  timeout=600, input="")
        assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
        for user, group in USERS.items():
            if group:
                container.run(["usermod", "--append", "--groups", group, user])
        replay = container.popen(
            ["env", "PYTHONPATH=" + REPLAY_DIR, "OISP_SHARED_DIR=%s/shared" % REPLAY_DIR,
             "python3", "-m", "tests.support.replay_server", "--cert", REPLAY_DIR + "/server.pem",
             "--key", REPLAY_DIR + "/server.key", "--log", "/tmp/replay.log"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert replay.stdout is not None
        ready = replay.stdout.readline()
        assert '"ready": true' in ready, ready + replay.stdout.read()
        yield container
    except ContainerError as exc:
        pytest.fail(str(exc))
    finally:
        if replay is not None:  # not a unit of the container's systemd: stopped here, not at halt
            replay.terminate()
            replay.wait(timeout=30)
        container.remove()


def _request(box: Container, user: str) -> None:
    """One chat completion over HTTPS through the container's libssl, as `user`."""
    done = box.run(["curl", "-sS", "--fail", "--cacert", REPLAY_DIR + "/ca.pem",
                    "-H", "Content-Type: application/json", "--data", "@%s/body.json" % REPLAY_DIR,
                    "https://api.openai.com/v1/chat/completions"], user=user)
    assert "chat.completion" in done.stdout


def _events(box: Container, user: str, *flags: str) -> List[Dict[str, Any]]:
    """Every event `user` may see of those the daemon keeps (oisp-ctl tail without -f)."""
    done = box.run(["oisp-ctl", *flags, "--json", "tail", "--type", "ai.*"], user=user)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _wait_for_uids(box: Container, user: str, uids: Set[int]) -> List[Dict[str, Any]]:
    """`user`'s view once it has an ai.response of each uid in `uids` (or the deadline passed)."""
    deadline = time.monotonic() + EVENT_WAIT_S
    while True:
        events = _events(box, user)
        seen = {e["actor"]["uid"] for e in events if e["event_type"] == "ai.response"}
        if uids <= seen or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def _uid(box: Container, user: str) -> int:
    return int(box.run(["id", "-u", user]).stdout)


def _show(box: Container, *props: str) -> Dict[str, str]:
    out = box.run(["systemctl", "show", "oisp-sensor", "-p", ",".join(props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_start_reaches_active_after_ready(box: Container) -> None:
    box.run(["systemctl", "stop", "oisp-sensor"])
    box.run(["systemctl", "start", "oisp-sensor"], timeout=330)  # returns once READY=1 came (Type=notify)
    state = _show(box, "ActiveState", "SubState", "StatusText", "NRestarts", "MainPID")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert state["StatusText"].startswith("capturing"), state  # the daemon's own STATUS= after READY=1
    assert state["NRestarts"] == "0"
    status = box.run(["oisp-ctl", "status"]).stdout
    assert str(state["MainPID"]) in status


def _last_reload(box: Container) -> Dict[str, Any]:
    return json.loads(box.run(["oisp-ctl", "status", "--json"]).stdout)["last_reload"] or {}


def _journal_says(box: Container, line: str, timeout: float = 15) -> bool:
    """journald takes the daemon's stderr asynchronously: the line may come a moment later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line in box.run(["journalctl", "-u", "oisp-sensor", "-o", "cat", "--no-pager"]).stdout:
            return True
        time.sleep(0.5)
    return False


def test_reload_rereads_the_configuration_before_it_returns(box: Container) -> None:
    before = _show(box, "MainPID")["MainPID"]
    asked = time.time()
    box.run(["systemctl", "reload", "oisp-sensor"])
    done = _last_reload(box)  # read at once: ExecReload waited for the daemon's answer
    assert done["ok"] is True and done["at"] >= asked, done
    assert _show(box, "MainPID", "ActiveState") == {"MainPID": before, "ActiveState": "active"}
    assert _journal_says(box, "configuration reloaded from /etc/oisp-sensor/config.yaml")


def test_a_reload_of_an_invalid_file_fails_and_keeps_the_daemon(box: Container) -> None:
    before = _show(box, "MainPID")["MainPID"]
    drop_in = "/etc/oisp-sensor/config.d/zz-system-test.yaml"
    box.run(["mkdir", "-p", "/etc/oisp-sensor/config.d"])
    box.run(["tee", drop_in], input="redaction:\n  mode: loud\n")
    try:
        failed = box.run(["systemctl", "reload", "oisp-sensor"], check=False)
        assert failed.returncode != 0, failed.stdout + failed.stderr
        assert _last_reload(box)["ok"] is False
        assert _show(box, "MainPID", "ActiveState") == {"MainPID": before, "ActiveState": "active"}
        assert _journal_says(box, "reload failed, keeping the running configuration")
    finally:
        box.run(["rm", "-f", drop_in])
    box.run(["systemctl", "reload", "oisp-sensor"])
    assert _last_reload(box)["ok"] is True


def test_group_member_tails_every_users_events_over_the_socket(box: Container) -> None:
    _request(box, "alice")
    _request(box, "bob")
    events = _wait_for_uids(box, "alice", {_uid(box, "alice"), _uid(box, "bob")})
    by_uid = {(e["actor"]["uid"], e["event_type"]) for e in events}
    for user in ("alice", "bob"):
        assert (_uid(box, user), "ai.request") in by_uid, events
        assert (_uid(box, user), "ai.response") in by_uid, events
    response = next(e for e in events if e["event_type"] == "ai.response")
    assert response["process"]["name"] == "curl"
    # read from /proc/PID/exe inside the container: right only if the BPF pid is the namespace's
    assert response["process"]["exe"] == "/usr/bin/curl", response["process"]
    assert response["data"]["model"]["id"].startswith("gpt-4.1")


def test_group_member_uses_the_system_bus(box: Container) -> None:
    assert "version:" in box.run(["oisp-ctl", "--bus", "status"], user="alice").stdout
    box.run(["oisp-ctl", "--bus", "session", "start", "alice-bus", "--type", "ai.*"], user="alice")
    assert "alice-bus" in box.run(["oisp-ctl", "--bus", "session", "list"], user="alice").stdout
    box.run(["oisp-ctl", "--bus", "session", "stop", "alice-bus"], user="alice")
    # captured content never travels on the bus: tail says so and names the socket
    refused = box.run(["oisp-ctl", "--bus", "tail"], user="alice", check=False)
    assert refused.returncode == 2 and "control socket" in refused.stderr  # a usage error


def test_user_outside_the_group_sees_only_their_own_events(box: Container) -> None:
    _request(box, "bob")
    _request(box, "alice")
    _wait_for_uids(box, "alice", {_uid(box, "alice"), _uid(box, "bob")})
    events = _events(box, "bob")
    assert {e["actor"]["uid"] for e in events} == {_uid(box, "bob")}, events
    assert any(e["event_type"] == "ai.response" for e in events)


@pytest.mark.parametrize("transport", [(), ("--bus",)], ids=["socket", "bus"])
def test_redaction_set_is_refused_for_a_member_and_allowed_for_oisp_admin(box: Container, transport) -> None:
    refused = box.run(["oisp-ctl", *transport, "redaction", "set", "full"], user="alice", check=False)
    assert refused.returncode == 1
    assert "oisp-admin" in refused.stderr
    assert box.run(["oisp-ctl", "redaction", "get"]).stdout.startswith("safe")
    box.run(["oisp-ctl", *transport, "redaction", "set", "full"], user="carol")
    assert box.run(["oisp-ctl", "redaction", "get"], user="alice").stdout.startswith("full")
    box.run(["oisp-ctl", *transport, "redaction", "set", "safe"], user="carol")


def test_a_polkit_rule_grants_redaction_to_a_user_outside_the_groups(box: Container) -> None:
    rule = box.path("/etc/polkit-1/rules.d/50-oisp-test.rules")
    rule.write_text('polkit.addRule(function (action, subject) {\n'
                    '  if (action.id == "dev.oisp.Sensor1.configure" && subject.user == "bob")\n'
                    '    return polkit.Result.YES;\n});\n')
    try:
        box.run(["systemctl", "restart", "polkit"])  # read the rule now, not at its next inotify scan
        assert box.run(["oisp-ctl", "redaction", "set", "minimal"], user="bob", check=False).returncode == 0
        assert box.run(["oisp-ctl", "redaction", "get"]).stdout.startswith("minimal")
        box.run(["oisp-ctl", "--bus", "redaction", "set", "safe"], user="bob")
    finally:
        rule.unlink()
        box.run(["systemctl", "restart", "polkit"])
    refused = box.run(["oisp-ctl", "redaction", "set", "full"], user="bob", check=False)
    assert refused.returncode == 1 and "oisp-admin" in refused.stderr


# bob's Python in a mount namespace of his own (unshare -Urm), its libssl a copy on a tmpfs that
# only that namespace sees: discovery reaches it through /proc/PID/root or map_files of another
# user's process. The import maps the copy; the pause gives discovery its time.
PRIVATE_LIBSSL_CLIENT = """
import os, ssl, sys, time, urllib.request
time.sleep(4)
context = ssl.create_default_context(cafile=sys.argv[1] + "/ca.pem")
request = urllib.request.Request("https://api.openai.com/v1/chat/completions",
                                 data=open(sys.argv[1] + "/body.json", "rb").read(),
                                 headers={"Content-Type": "application/json"})
urllib.request.urlopen(request, context=context).read()
print(os.getpid())
"""
PRIVATE_LIBSSL_SHELL = ("mount -t tmpfs tmpfs /home/bob/lib && cp /usr/lib/x86_64-linux-gnu/libssl.so.3 /home/bob/lib/"
                        " && LD_LIBRARY_PATH=/home/bob/lib exec python3 -c \"$0\" \"$1\"")


def _private_libssl_request(box: Container) -> int:
    """The pid of bob's Python that made one chat completion through its private libssl."""
    box.run(["mkdir", "-p", "/home/bob/lib"], user="bob")
    done = box.run(["unshare", "-Urm", "sh", "-c", PRIVATE_LIBSSL_SHELL, PRIVATE_LIBSSL_CLIENT, REPLAY_DIR],
                   user="bob")
    return int(done.stdout.split()[-1])


def _responses_of(box: Container, pid: int, wait_s: float) -> List[Dict[str, Any]]:
    deadline = time.monotonic() + wait_s
    while True:
        found = [e for e in _events(box, "alice") if e["event_type"] == "ai.response" and e["process"]["pid"] == pid]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_another_users_private_libssl_is_found_and_that_needs_cap_sys_ptrace(box: Container) -> None:
    pid = _private_libssl_request(box)
    response = _responses_of(box, pid, EVENT_WAIT_S)
    assert response and response[0]["actor"]["uid"] == _uid(box, "bob"), response
    # Without CAP_SYS_PTRACE, root may still read another user's /proc/PID/maps but not follow its
    # root or map_files: the copy stays unprobed, and the process is listed as unseen.
    drop_in = "/etc/systemd/system/oisp-sensor.service.d/no-ptrace.conf"
    bounding = _show(box, "CapabilityBoundingSet")["CapabilityBoundingSet"].split()
    assert "cap_sys_ptrace" in bounding, bounding
    box.run(["mkdir", "-p", "/etc/systemd/system/oisp-sensor.service.d"])
    box.run(["tee", drop_in], input="[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=%s\n"
            % " ".join(c.upper() for c in bounding if c != "cap_sys_ptrace"))
    try:
        box.run(["systemctl", "daemon-reload"])
        box.run(["systemctl", "restart", "oisp-sensor"], timeout=330)
        blind = _private_libssl_request(box)
        assert _responses_of(box, blind, 10) == []
        unseen = json.loads(box.run(["oisp-ctl", "status", "--json"]).stdout)["unseen_tls"]
        assert blind in {entry["pid"] for entry in unseen}, unseen
    finally:
        box.run(["rm", "-f", drop_in])
        box.run(["systemctl", "daemon-reload"])
        box.run(["systemctl", "restart", "oisp-sensor"], timeout=330)


def test_stop_is_clean(box: Container) -> None:
    box.run(["systemctl", "stop", "oisp-sensor"], timeout=120)
    state = _show(box, "ActiveState", "Result", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    journal = box.run(["journalctl", "-u", "oisp-sensor", "-o", "cat", "--no-pager"]).stdout
    assert "Traceback" not in journal
    assert not box.run(["test", "-e", "/run/oisp-sensor/control.sock"], check=False).returncode == 0


def test_a_bus_call_starts_the_stopped_service(box: Container) -> None:
    """D-Bus activation: dev.oisp.Sensor1.service hands the name to systemd's unit."""
    assert _show(box, "ActiveState")["ActiveState"] == "inactive"
    # the first call may time out while bcc compiles; what matters is that it started the unit
    box.run(["oisp-ctl", "--bus", "status"], user="alice", check=False, timeout=120)
    deadline = time.monotonic() + 300
    while _show(box, "ActiveState")["ActiveState"] != "active" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _show(box, "ActiveState")["ActiveState"] == "active"
    assert "version:" in box.run(["oisp-ctl", "--bus", "status"], user="alice").stdout
    journal = box.run(["journalctl", "-b", "-o", "cat", "--no-pager", "_COMM=dbus-daemon"]).stdout
    assert "Activating via systemd: service name='dev.oisp.Sensor1'" in journal
    box.run(["systemctl", "stop", "oisp-sensor"], timeout=120)


def test_purge_removes_the_service_and_leaves_no_stray_files(box: Container) -> None:
    box.run(["apt-get", "purge", "-y", "oisp-sensor"], timeout=300)
    assert "could not be found" in box.run(["systemctl", "status", "oisp-sensor"], check=False).stderr
    # Debian leaves system groups in place (files and rules may still name them)
    assert box.run(["getent", "group", "oisp", "oisp-admin"]).stdout.count("\n") == 2
    stray = sorted(p for p in _file_list(box) - box.before_install  # type: ignore[attr-defined]
                   if not p.startswith(CHURN) and p + "/" not in CHURN)
    assert stray == [], stray


def test_deb_is_lintian_clean_at_warning_level(deb: Path) -> None:
    changes = sorted(deb.parent.glob("deb/oisp-sensor_*.changes"))
    done = subprocess.run(["lintian", "--fail-on", "error,warning", str(changes[-1])], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [l for l in done.stdout.splitlines() if l.startswith(("E:", "W:"))], done.stdout


def test_rpm_builds_and_lists_the_unit_policies_man_pages_and_config(deb: Path) -> None:
    built = subprocess.run(["make", "-C", str(REPO_ROOT), "rpm"], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    rpm = sorted((REPO_ROOT / "build" / "packages").glob("oisp-sensor-*.noarch.rpm"))[-1]
    listed = set(subprocess.run(["rpm", "-qpl", str(rpm)], capture_output=True, text=True, check=True).stdout.split())
    for path in ("/usr/lib/systemd/system/oisp-sensor.service", "/usr/share/dbus-1/system.d/dev.oisp.Sensor1.conf",
                 "/usr/share/dbus-1/system-services/dev.oisp.Sensor1.service",
                 "/usr/share/polkit-1/actions/dev.oisp.Sensor1.policy", "/usr/lib/sysusers.d/oisp-sensor.conf",
                 "/usr/lib/tmpfiles.d/oisp-sensor.conf", "/etc/oisp-sensor/config.yaml",
                 "/usr/share/man/man8/oisp-sensor.8", "/usr/share/man/man1/oisp-ctl.1",
                 "/usr/share/man/man5/oisp-sensor.yaml.5", "/usr/share/oisp-sensor/bpf/emit.h",
                 "/usr/bin/oisp-sensor", "/usr/bin/oisp-ctl"):
        assert path in listed or path + ".gz" in listed, path
    config = subprocess.run(["rpm", "-qpc", str(rpm)], capture_output=True, text=True, check=True).stdout.split()
    assert config == ["/etc/oisp-sensor/config.yaml"]
    scripts = subprocess.run(["rpm", "-qp", "--scripts", str(rpm)], capture_output=True, text=True, check=True).stdout
    assert "systemctl --no-reload preset oisp-sensor.service" in scripts or "systemd-update-helper" in scripts
