"""Issue 6, files and sessions, against the real daemon: each test does what a local user
(uid 65534, as a plain user or as a member of the user group) would do to take over a session
file, redirect a root write through a link, exhaust the daemon with sessions, squat a configured
session name, or keep a weaker redaction mode than the global one. Each asserts the attack fails
and that the daemon still answers root."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.integration.daemon import NOBODY, NOGROUP, USER_GID, as_user, shared_tmpdir
from tests.integration.test_daemon import ai_call, session_sink, wait_for_file_events

pytestmark = pytest.mark.bpf

# Sessions here record only the test's own client (run as 65534): other work on the machine also
# talks TLS, and a session of everything would have to be searched through all of it.
ONLY_NOBODY = ("--type", "ai.*", "--uid", str(NOBODY))

# A control client speaking the wire protocol by hand, run as the attacker: hello, then every
# request on one connection without waiting, then one line per reply: [ok, error code, message].
RAW_CLIENT = r"""
import json, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
requests = json.loads(sys.stdin.read())
out = sock.makefile("rb")
sock.sendall(json.dumps({"id": 0, "op": "hello", "args": {"protocol": 1, "client": "attacker/1"}}).encode() + b"\n")
json.loads(out.readline())
for i, (op, args) in enumerate(requests, 1):
    sock.sendall(json.dumps({"id": i, "op": op, "args": args}).encode() + b"\n")
for _ in requests:
    line = out.readline()
    if not line:
        print(json.dumps([False, "closed", ""]))
        break
    reply = json.loads(line)
    error = reply.get("error") or {}
    print(json.dumps([reply.get("ok"), error.get("code"), error.get("message")]), flush=True)
"""


def raw_requests(daemon, requests: List[Any], uid: int = NOBODY, gid: int = USER_GID) -> List[List[Any]]:
    """Replies [ok, code, message] to `requests` [(op, args)...] sent as uid/gid (0: as root)."""
    payload = json.dumps(requests)
    argv = [sys.executable, "-c", RAW_CLIENT, daemon.socket]
    result = subprocess.run(
        as_user(argv, uid, gid) if uid else argv,
        input=payload, capture_output=True, text=True, timeout=300, cwd="/",
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def sessions(daemon) -> Dict[str, Dict[str, Any]]:
    return {s["name"]: s for s in daemon.ctl_json("session", "list")}


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def victim():
    """A root file the attacker wants root to append to, chown or chmod."""
    directory = shared_tmpdir("oisp-victim-")
    path = directory / "victim.conf"
    path.write_text("root owns this\n")
    path.chmod(0o644)
    return path


def assert_untouched(victim: Path) -> None:
    st = os.stat(victim)
    assert victim.read_text() == "root owns this\n"
    assert st.st_uid == 0 and mode(victim) == 0o644


@pytest.fixture
def attacker_dir():
    """A directory the attacker owns (a sink directory an admin was asked to use)."""
    path = shared_tmpdir("oisp-drop-")
    os.chown(path, NOBODY, NOGROUP)
    return path


def drop_spec(path: Path) -> Dict[str, Any]:
    """An admin's session for uid 65534, written where that user can write."""
    return {"name": "drop", "owner_uid": NOBODY, "sink": {"path": str(path)}}


def as_nobody(*argv: str) -> None:
    subprocess.run(as_user(list(argv)), check=True, capture_output=True, timeout=30, cwd="/")


# -- no takeover of session files ---------------------------------------------------------------


def test_a_member_reusing_roots_session_name_gets_a_fresh_empty_file(daemon, hosts, pki):
    assert daemon.ctl("session", "start", "audit", *ONLY_NOBODY, "--redaction", "full").returncode == 0
    roots_file = session_sink(daemon, "audit")
    wait_for_file_events(roots_file, ai_call(hosts, pki, uid=NOBODY))
    roots_content = roots_file.read_bytes()
    assert daemon.ctl("session", "stop", "audit").returncode == 0

    started = daemon.ctl("session", "start", "audit", uid=NOBODY, gid=USER_GID)
    assert started.returncode == 0, started.stderr
    mine = session_sink(daemon, "audit")
    assert mine != roots_file
    st = os.stat(mine)
    assert st.st_size == 0 and st.st_uid == NOBODY and mode(mine) == 0o600
    assert os.stat(roots_file).st_uid == 0 and mode(roots_file) == 0o600
    stolen = subprocess.run(as_user(["cat", str(roots_file)]), capture_output=True, timeout=30)
    assert stolen.returncode != 0 and stolen.stdout == b""
    readable = subprocess.run(as_user(["cat", str(mine)]), capture_output=True, timeout=30)
    assert readable.returncode == 0 and readable.stdout == b""
    assert roots_file.read_bytes() == roots_content


def test_an_fd_kept_open_across_a_stop_sees_none_of_the_next_sessions_events(daemon, hosts, pki):
    assert daemon.ctl("session", "start", "shared", *ONLY_NOBODY, uid=NOBODY, gid=USER_GID).returncode == 0
    path = session_sink(daemon, "shared")
    holder = subprocess.Popen(
        as_user([sys.executable, "-c",
                 "import sys; f = open(sys.argv[1]); f.read(); print('open', flush=True); "
                 "sys.stdin.readline(); sys.stdout.write(f.read())", str(path)]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
    )
    try:
        assert holder.stdout.readline() == "open\n"
        assert daemon.ctl("session", "stop", "shared", uid=NOBODY, gid=USER_GID).returncode == 0
        assert daemon.ctl("session", "start", "shared", *ONLY_NOBODY, "--redaction", "full").returncode == 0
        roots = session_sink(daemon, "shared")
        wait_for_file_events(roots, ai_call(hosts, pki, uid=NOBODY))
        leaked, _ = holder.communicate("go\n", timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert leaked == ""
    assert roots != path and os.stat(roots).st_uid == 0


# -- no following of links ----------------------------------------------------------------------


def test_a_symlink_planted_at_a_sink_path_is_refused_at_start(daemon, victim, attacker_dir):
    link = attacker_dir / "out.jsonl"
    as_nobody("ln", "-s", str(victim), str(link))
    (reply,) = raw_requests(daemon, [("session.start", drop_spec(link))], uid=0)
    assert reply[:2] == [False, "invalid_argument"] and "symbolic link" in reply[2], reply
    assert_untouched(victim)
    assert "drop" not in sessions(daemon)


def test_a_symlink_swapped_in_before_a_restart_is_not_followed_on_restore(daemon, victim, attacker_dir):
    sink = attacker_dir / "out.jsonl"
    assert raw_requests(daemon, [("session.start", drop_spec(sink))], uid=0) == [[True, None, None]]
    assert os.stat(sink).st_uid == NOBODY and mode(sink) == 0o600
    assert daemon.stop() == 0
    as_nobody("rm", str(sink))
    as_nobody("ln", "-s", str(victim), str(sink))
    daemon.start()
    assert "drop" not in sessions(daemon)
    assert "persisted session 'drop' not restored" in daemon.log() and "symbolic link" in daemon.log()
    assert_untouched(victim)


def test_state_files_are_private_under_umask_000_and_planted_links_are_replaced(tmp_path, victim):
    from tests.integration.conftest import cannot_run
    from tests.integration.daemon import DaemonProcess

    if os.geteuid() != 0:
        cannot_run("the daemon needs root")
    proc = DaemonProcess(shared_tmpdir("oisp-daemon-"), {})
    state = proc.dir / "state"
    state.mkdir(mode=0o755)
    (state / "runtime.json").symlink_to(victim)
    (state / "sessions.json.tmp").symlink_to(victim)
    old = os.umask(0)
    try:
        proc.start()
    finally:
        os.umask(old)
    try:
        assert "symbolic link" in proc.log()  # runtime.json was not read through the link
        assert proc.ctl("redaction", "set", "minimal").returncode == 0
        assert proc.ctl("session", "start", "m", uid=NOBODY, gid=USER_GID).returncode == 0
        assert_untouched(victim)
        for name in ("runtime.json", "sessions.json"):
            assert not (state / name).is_symlink() and mode(state / name) == 0o600
        assert json.loads((state / "runtime.json").read_text())["redaction"] == "minimal"
        assert mode(state) == 0o711 and mode(state / "sessions") == 0o711
        assert mode(proc.dir / "cache") == 0o700 and mode(proc.dir / "run") == 0o755
        assert mode(session_sink(proc, "m")) == 0o600
    finally:
        code = proc.stop()
        log = proc.log()
        proc.close()
    assert code == 0 and "Traceback" not in log, log


# -- sessions are bounded and configuration wins ------------------------------------------------


def test_a_flood_of_979_sessions_stops_at_the_cap_and_root_still_stops_them(daemon):
    replies = raw_requests(daemon, [("session.start", {"name": f"flood{i}"}) for i in range(979)])
    assert len(replies) == 979
    assert [r[:2] for r in replies[:16]] == [[True, None]] * 16
    assert [r[:2] for r in replies[16:]] == [[False, "limit_exceeded"]] * (979 - 16)
    assert "session_limits.max_per_owner" in replies[-1][2]
    assert len(list((daemon.dir / "state" / "sessions").iterdir())) == 16
    stopped = daemon.ctl("session", "stop", "flood0")
    assert stopped.returncode == 0, stopped.stderr
    assert daemon.ctl("session", "start", "roots").returncode == 0
    assert daemon.ctl_json("status")["counters"]["sessions"] == 16


def test_huge_filters_are_refused_and_sessions_json_stays_small(daemon):
    just_under_a_line = {"name": "big", "filters": {"comms": ["c" * 1000] * 900}}  # ~0.9 MB
    ten_mb = {"name": "huge", "filters": {"comms": ["c" * 1000] * 10_000}}
    replies = raw_requests(daemon, [("session.start", just_under_a_line), ("session.start", ten_mb)])
    assert replies[0][:2] == [False, "limit_exceeded"] and "max_spec_bytes" in replies[0][2]
    assert replies[1:] and replies[1][0] is False
    assert not (daemon.dir / "state" / "sessions.json").exists() or (
        (daemon.dir / "state" / "sessions.json").stat().st_size < 64 * 1024
    )
    assert sessions(daemon) == {}
    assert daemon.ctl("session", "start", "small", "--comm", "curl", uid=NOBODY, gid=USER_GID).returncode == 0


def test_a_runtime_session_squatting_a_configured_name_gives_way_on_reload(daemon):
    assert daemon.ctl("session", "start", "fleet", uid=NOBODY, gid=USER_GID).returncode == 0
    squatted = session_sink(daemon, "fleet")
    (daemon.dir / "config.d" / "20-fleet.yaml").write_text("sessions:\n  - name: fleet\n    filters: {types: ['ai.*']}\n")
    reloaded = daemon.ctl("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    fleet = sessions(daemon)["fleet"]
    assert fleet["origin"] == "config" and fleet["owner_uid"] == 0
    assert fleet["sink"]["path"] != str(squatted)
    assert "runtime session fleet (owner uid 65534) stopped: the configuration defines a session of that name" in daemon.log()
    again = daemon.ctl("session", "start", "fleet", uid=NOBODY, gid=USER_GID)
    assert again.returncode != 0 and "belongs to a session in the configuration" in again.stderr


def test_tightening_the_global_mode_applies_to_a_running_session_at_once(daemon, hosts, pki):
    assert daemon.ctl("session", "start", "mine", *ONLY_NOBODY, uid=NOBODY, gid=USER_GID).returncode == 0
    assert sessions(daemon)["mine"]["redaction"] == "safe"
    assert daemon.ctl("redaction", "set", "minimal").returncode == 0
    assert sessions(daemon)["mine"]["redaction"] == "minimal"
    events = wait_for_file_events(session_sink(daemon, "mine"), ai_call(hosts, pki, uid=NOBODY))
    assert {e["confidence"]["redaction_profile"] for e in events} == {"minimal"}
    assert "session mine (owner uid 65534): redaction raised from safe to the global minimal" in daemon.log()


def test_a_restored_session_is_raised_to_a_global_mode_tightened_while_it_was_down(daemon, hosts, pki):
    assert daemon.ctl("session", "start", "dbg", *ONLY_NOBODY, "--redaction", "full").returncode == 0
    assert daemon.stop() == 0
    (daemon.dir / "config.d" / "30-strict.yaml").write_text("redaction:\n  mode: minimal\n")
    daemon.start()
    assert sessions(daemon)["dbg"]["redaction"] == "minimal"
    events = wait_for_file_events(session_sink(daemon, "dbg"), ai_call(hosts, pki, uid=NOBODY))
    assert {e["confidence"]["redaction_profile"] for e in events} == {"minimal"}


# -- record's output is private -----------------------------------------------------------------


def test_record_output_is_0600_under_umask_000(tmp_path):
    from tests.integration.conftest import start_sensor

    old = os.umask(0)
    try:
        sensor = start_sensor(tmp_path)
    finally:
        os.umask(old)
    try:
        st = os.stat(sensor.output)
        assert mode(sensor.output) == 0o600 and st.st_uid == 0
    finally:
        assert sensor.stop() == 0


def test_record_refuses_an_output_planted_as_a_symlink(tmp_path, victim, attacker_dir):
    link = attacker_dir / "events.jsonl"
    as_nobody("ln", "-s", str(victim), str(link))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"paths:\n  cache_dir: {tmp_path / 'cache'}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "oisp_daemon.cli", "record", "--output", str(link), "--config", str(cfg)],
        capture_output=True, text=True, timeout=300, cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert proc.returncode == 1 and "symbolic link" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert_untouched(victim)
