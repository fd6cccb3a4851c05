"""The daemon for real: sd_notify protocol, reloads, sessions across restarts, and authorization
over the real Unix socket and a private D-Bus system bus that includes the project's policy file."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.integration.daemon import ADMIN_GID, ADMIN_GROUP, NOBODY, USER_GID, USER_GROUP, DaemonProcess, as_user
from tests.support import clients
from tests.support.node import static_node
from tests.support.oisp_schema import assert_valid_event

pytestmark = pytest.mark.bpf


def ai_call(hosts, pki, fixture: str = "openai-chat-001", uid: int = 0) -> int:
    """Run the OpenAI SDK client (as `uid`) and return its pid."""
    argv = clients.openai_client(fixture, pki.ca_file)
    if uid:
        argv = as_user(argv, uid)
    result = clients.run_client(hosts, argv)
    result.check()
    return result.pid


def session_sink(daemon, name: str) -> Path:
    """The file a session writes to: each start gets a fresh one, named in the session list."""
    sessions = {s["name"]: s for s in daemon.ctl_json("session", "list")}
    return Path(sessions[name]["sink"]["path"])


def wait_for_file_events(path: Path, pid: int, count: int = 2, timeout: float = 20) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            events = [json.loads(line) for line in path.read_text().splitlines()]
            mine = [e for e in events if e.get("process", {}).get("pid") == pid]
            if len(mine) >= count:
                return mine
        time.sleep(0.1)
    raise AssertionError(f"no {count} events of pid {pid} in {path}")


# -- sd_notify and reload -----------------------------------------------------------------------


def test_ready_watchdog_and_reload_are_notified(daemon):
    ready = daemon.notify.wait_for("READY=1")
    daemon.notify.wait_for("WATCHDOG=1", after=ready, timeout=10)
    assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in daemon.notify.messages)
    mark = len(daemon.notify.messages)
    (daemon.dir / "config.d" / "10-hosts.yaml").write_text("providers:\n  hosts:\n    'gw.internal:8443': openai\n")
    daemon.signal(signal.SIGHUP)
    reloading = daemon.notify.wait_for("RELOADING=1", after=mark)
    assert "MONOTONIC_USEC=" in daemon.notify.messages[reloading]
    usec = int(daemon.notify.messages[reloading].split("MONOTONIC_USEC=")[1].split("\n")[0])
    assert abs(usec - time.monotonic_ns() // 1000) < 60_000_000
    daemon.notify.wait_for("READY=1", after=reloading + 1)
    status = daemon.ctl_json("status")
    assert status["last_reload"]["ok"] is True
    assert str(daemon.dir / "config.d" / "10-hosts.yaml") in status["config_files"]


def test_broken_reload_keeps_capturing_with_the_old_config(daemon, hosts, pki):
    assert daemon.ctl("session", "start", "before", "--type", "ai.*").returncode == 0
    mark = len(daemon.notify.messages)
    (daemon.dir / "config.d" / "90-broken.yaml").write_text("capture:\n  ring_buffer_mb: lots\n")
    daemon.signal(signal.SIGHUP)
    reloading = daemon.notify.wait_for("RELOADING=1", after=mark)
    daemon.notify.wait_for("READY=1", after=reloading + 1)
    status = daemon.ctl_json("status")
    assert status["last_reload"]["ok"] is False
    assert "90-broken.yaml: capture.ring_buffer_mb: 'lots' is not of type 'integer'" in status["last_reload"]["error"]
    pid = ai_call(hosts, pki)
    events = wait_for_file_events(session_sink(daemon, "before"), pid)
    assert [e["event_type"] for e in events] == ["ai.request", "ai.response"]
    result = daemon.ctl("reload")
    assert result.returncode != 0 and "90-broken.yaml" in result.stderr


def test_sigterm_drains_and_exits_zero(daemon):
    mark = len(daemon.notify.messages)
    assert daemon.stop() == 0
    daemon.notify.wait_for("STOPPING=1", after=mark, timeout=5)


# -- sessions -----------------------------------------------------------------------------------


def test_session_started_with_oisp_ctl_survives_a_restart(daemon, hosts, pki):
    result = daemon.ctl("session", "start", "keep", "--type", "ai.*", "--redaction", "minimal")
    assert result.returncode == 0, result.stderr
    sink = session_sink(daemon, "keep")
    first = ai_call(hosts, pki)
    wait_for_file_events(sink, first)
    assert daemon.stop() == 0
    daemon.start()
    sessions = {s["name"]: s for s in daemon.ctl_json("session", "list")}
    assert sessions["keep"]["origin"] == "runtime" and sessions["keep"]["redaction"] == "minimal"
    assert sessions["keep"]["filters"] == {"types": ["ai.*"]}
    second = ai_call(hosts, pki, "openai-chat-002")
    events = wait_for_file_events(sink, second)
    for event in events:
        assert_valid_event(event)
        assert event["confidence"]["redaction_profile"] == "minimal"
    assert oct(sink.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("daemon", [{"sessions": [{"name": "fleet", "filters": {"providers": ["anthropic"]}}]}], indirect=True)
def test_configured_session_starts_with_the_daemon_and_filters(daemon, hosts, pki):
    sessions = {s["name"]: s for s in daemon.ctl_json("session", "list")}
    assert sessions["fleet"]["origin"] == "config"
    openai_pid = ai_call(hosts, pki, "openai-chat-001")
    argv = clients.anthropic_client("anthropic-messages-001", pki.ca_file)
    anthropic = clients.run_client(hosts, argv)
    anthropic.check()
    sink = session_sink(daemon, "fleet")
    events = wait_for_file_events(sink, anthropic.pid)
    assert {e["data"]["provider"]["name"] for e in events} == {"anthropic"}
    written = sink.read_text()
    assert f'"pid":{openai_pid},' not in written
    refused = daemon.ctl("session", "stop", "fleet")
    assert refused.returncode != 0 and "comes from the configuration" in refused.stderr


# -- authorization over the Unix socket ---------------------------------------------------------


def refusal(result, group: str) -> str:
    assert result.returncode != 0, result.stdout
    assert f"group '{group}'" in result.stderr, result.stderr
    return result.stderr


def test_only_admins_set_redaction_or_binary_paths(daemon):
    nobody = daemon.ctl("redaction", "set", "full", uid=NOBODY)
    assert "permission denied: setting redaction needs root or membership in group 'staff'" in refusal(nobody, ADMIN_GROUP)
    member = daemon.ctl("redaction", "set", "full", uid=NOBODY, gid=USER_GID)
    refusal(member, ADMIN_GROUP)
    paths = daemon.ctl("binary-paths", "add", "/usr/bin/node", uid=NOBODY, gid=USER_GID)
    assert "adding binary paths needs root or membership in group 'staff'" in refusal(paths, ADMIN_GROUP)
    weaker = daemon.ctl("session", "start", "mine", "--redaction", "full", uid=NOBODY, gid=USER_GID)
    assert "weaker than the global" in refusal(weaker, ADMIN_GROUP)
    plain = daemon.ctl("session", "start", "mine", uid=NOBODY)
    assert "starting a session needs" in refusal(plain, USER_GROUP)

    assert daemon.ctl("redaction", "set", "minimal", uid=NOBODY, gid=ADMIN_GID).returncode == 0
    assert daemon.ctl_json("redaction", "get", uid=NOBODY)["mode"] == "minimal"
    assert daemon.ctl("redaction", "set", "safe").returncode == 0
    node = static_node()
    added = daemon.ctl("binary-paths", "add", node, uid=NOBODY, gid=ADMIN_GID)
    assert added.returncode == 0, added.stderr
    assert node in daemon.ctl_json("binary-paths", "list", uid=NOBODY)
    probes = {p["path"] for p in daemon.ctl_json("status")["probes"]}
    assert node in probes
    assert daemon.ctl("binary-paths", "remove", node).returncode == 0
    assert node not in daemon.ctl_json("binary-paths", "list")


def test_users_tail_their_own_events_and_members_tail_all(daemon, hosts, pki):
    mine = ai_call(hosts, pki, "openai-chat-001", uid=NOBODY)
    roots = ai_call(hosts, pki, "openai-chat-002")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        everything = daemon.tail_json(uid=NOBODY, gid=USER_GID)
        pids = {e["process"]["pid"] for e in everything}
        if {mine, roots} <= pids:
            break
        time.sleep(0.2)
    assert {mine, roots} <= pids, "a member of the user group sees every uid's events"
    own = daemon.tail_json(uid=NOBODY)
    assert own and {e["actor"]["uid"] for e in own} == {NOBODY}
    assert mine in {e["process"]["pid"] for e in own}
    refused = daemon.ctl("tail", "--json", "--since", "3600", "--uid", "0", uid=NOBODY)
    assert "tailing other users' events (uid 0) needs" in refusal(refused, USER_GROUP)


def test_control_socket_missing_says_is_the_daemon_running(tmp_path):
    result = DaemonProcess.__new__(DaemonProcess)
    result.socket = str(tmp_path / "nope.sock")
    out = result.ctl("status")
    assert out.returncode != 0 and "is the daemon running?" in out.stderr


# -- D-Bus --------------------------------------------------------------------------------------


def test_dbus_applies_the_same_authorization(bus_daemon):
    daemon, address = bus_daemon
    status = daemon.ctl("--bus", "status", "--json", uid=NOBODY, bus=address)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["version"]
    refused = daemon.ctl("--bus", "redaction", "set", "full", uid=NOBODY, bus=address)
    assert "permission denied: setting redaction needs root or membership in group 'staff'" in refused.stderr
    paths = daemon.ctl("--bus", "binary-paths", "add", "/usr/bin/node", uid=NOBODY, bus=address)
    assert "adding binary paths needs root or membership in group 'staff'" in paths.stderr
    assert daemon.ctl("--bus", "redaction", "set", "minimal", bus=address).returncode == 0
    assert daemon.ctl_json("redaction", "get")["mode"] == "minimal"
