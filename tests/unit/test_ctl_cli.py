"""oisp-ctl against the real socket server and Operations: every command, --json, tail, errors
that name cause and fix, exit codes, and an unprivileged user refused with the group named."""
from __future__ import annotations

import io
import json
import os
import socket
import threading

import pytest

from oisp_ctl import cli
from oisp_ctl.cli import main, parse_since
from tests.support.control_server import ServerThread, event, wait_until
from tests.support.ctl_as_user import NOBODY, run_ctl_as_nobody
from tests.support.daemon_double import make_operations


@pytest.fixture
def server(daemon, public_dir, monkeypatch):
    srv = ServerThread(make_operations(daemon), str(public_dir / "control.sock"))
    monkeypatch.setenv("OISP_SOCKET", srv.path)
    yield srv
    srv.close()


class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def ctl(capsys):
    """Runs oisp-ctl in-process: ctl("status", "--json") -> Result(code, out, err)."""
    def run(*argv):
        out = io.StringIO()
        capsys.readouterr()
        code = main(list(argv), out=out)
        return Result(code, out.getvalue(), capsys.readouterr().err)
    return run


# -- control commands -------------------------------------------------------------------------


def test_status_prints_labelled_lines(server, ctl):
    result = ctl("status")
    assert result.code == 0, result.err
    assert "redaction:" in result.out and "safe" in result.out
    assert "libssl.so.3 (origin ldconfig, 2 symbols)" in result.out


def test_status_json_is_the_daemons_result(server, ctl, daemon):
    result = ctl("status", "--json")
    assert result.code == 0
    assert result.json()["redaction"] == "safe"
    assert result.json()["probes"] == daemon.status()["probes"]


def test_global_options_go_before_or_after_the_command(server, ctl, monkeypatch):
    monkeypatch.delenv("OISP_SOCKET")
    assert ctl("--socket", server.path, "--json", "status").json()["redaction"] == "safe"
    assert ctl("status", "--socket", server.path, "--json").json()["redaction"] == "safe"


def test_session_start_sends_filters_redaction_and_an_absolute_output(server, ctl, daemon, tmp_path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ctl("session", "start", "demo", "--type", "ai.*", "--type", "agent.*", "--pid", "42",
                 "--comm", "python3", "--uid", "1000", "--provider", "openai",
                 "--redaction", "minimal", "--output", "out/demo.jsonl")
    assert result.code == 0, result.err
    assert result.out.startswith("started session demo:")
    session = daemon.sessions.get("demo")
    assert session.filter.to_args() == {"types": ["ai.*", "agent.*"], "pids": [42],
                                        "comms": ["python3"], "uids": [1000],
                                        "providers": ["openai"]}
    assert session.redaction == "minimal"
    assert session.sink_path == str(tmp_path / "out" / "demo.jsonl")


def test_session_list_and_stop(server, ctl, daemon):
    assert "no sessions" in ctl("session", "list").out
    ctl("session", "start", "one", "--type", "ai.*")
    table = ctl("session", "list").out.splitlines()
    assert table[0].split()[:4] == ["NAME", "OWNER", "EVENTS", "REDACTION"]
    assert table[1].split()[:4] == ["one", str(os.getuid()), "0", "safe"]
    assert "types=ai.*" in table[1]
    assert [s["name"] for s in ctl("session", "list", "--json").json()] == ["one"]
    stopped = ctl("session", "stop", "one")
    assert stopped.code == 0 and stopped.out.startswith("stopped session one:")
    assert daemon.sessions.list() == []


def test_stopping_an_unknown_session_prints_the_daemons_message(server, ctl):
    result = ctl("session", "stop", "ghost")
    assert result.code == 1
    assert result.err == "oisp-ctl: no session named 'ghost'; see oisp-ctl session list\n"


def test_binary_paths_are_sent_absolute_and_listed(server, ctl, daemon, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "no extra binary paths" in ctl("binary-paths", "list").out
    assert ctl("binary-paths", "add", "bin/agent").out == "%s\n" % (tmp_path / "bin" / "agent")
    assert daemon.paths == [str(tmp_path / "bin" / "agent")]
    assert ctl("binary-paths", "list", "--json").json() == daemon.paths
    assert ctl("binary-paths", "remove", str(tmp_path / "bin" / "agent")).code == 0
    assert daemon.paths == []


def test_redaction_get_and_set(server, ctl, daemon):
    assert ctl("redaction", "get").out == "safe (0 custom patterns)\n"
    assert ctl("redaction", "set", "minimal").code == 0
    assert daemon.mode == "minimal"
    assert ctl("redaction", "get", "--json").json() == {"mode": "minimal", "custom_patterns": 0}


def test_reload_reports_success_and_failure(server, ctl, daemon):
    assert ctl("reload").out == "configuration reloaded\n"
    daemon.reload_error = "config.yaml: redaction.mode: 'loud' is not one of safe, minimal, full"
    failed = ctl("reload")
    assert failed.code == 1
    assert "reload failed: config.yaml: redaction.mode" in failed.err
    assert "keeps its previous configuration" in failed.err


def test_reload_pid_finds_the_socket_that_pid_listens_on(server, ctl, daemon, monkeypatch):
    monkeypatch.setenv("OISP_SOCKET", "/nonexistent/control.sock")  # --pid ignores what config says
    assert ctl("reload", "--pid", str(os.getpid())).out == "configuration reloaded\n"
    daemon.reload_error = "config.yaml: tail.replay: must be an integer"
    failed = ctl("reload", "--pid", str(os.getpid()))
    assert failed.code == 1 and "reload failed: config.yaml: tail.replay" in failed.err


def test_reload_pid_of_a_process_without_a_socket_says_so(ctl):
    child = os.fork()
    if child == 0:
        os.execvp("sleep", ["sleep", "30"])
    try:
        result = ctl("reload", "--pid", str(child))
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
    assert result.code == 1
    assert "pid %d listens on no Unix socket, not on one control socket" % child in result.err
    gone = ctl("reload", "--pid", str(child))
    assert gone.code == 1 and "cannot read the sockets of pid %d" % child in gone.err


# -- tail -------------------------------------------------------------------------------------


def test_tail_prints_the_replayed_events_in_the_human_format_and_exits(server, ctl, daemon):
    for n in range(3):
        daemon.hub.publish(event(n))
    daemon.hub.publish(event(3, event_type="process.exec"))
    result = ctl("tail", "--type", "ai.*")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 3
    assert "ai.response" in lines[0] and "python3[4242]" in lines[0]
    assert "openai/gpt-4o-mini" in lines[0] and "12→3 tok" in lines[0] and "812ms" in lines[0]
    assert "\033[" not in result.out  # not a terminal: no colors


def test_tail_json_prints_one_event_per_line(server, ctl, daemon):
    events = [event(n) for n in range(2)]
    for ev in events:
        daemon.hub.publish(ev)
    result = ctl("tail", "--json")
    assert [json.loads(line) for line in result.out.splitlines()] == events


def test_tail_since_limits_the_replay(server, ctl, daemon):
    daemon.hub.publish(dict(event(0), ts="2000-01-01T00:00:00Z"))
    daemon.hub.publish(dict(event(1), ts="2030-01-01T00:00:00Z"))
    result = ctl("tail", "--json", "--since", "2020-01-01T00:00:00Z")
    assert [json.loads(line)["event_id"] for line in result.out.splitlines()] == ["e1"]


def test_tail_follow_prints_live_events_until_the_daemon_stops(server, daemon, capsys):
    out = io.StringIO()
    codes = []
    runner = threading.Thread(target=lambda: codes.append(main(["tail", "-f", "--json"], out=out)))
    runner.start()
    try:
        wait_until(lambda: daemon.hub.count() == 1, what="the tail subscription")
        daemon.hub.publish(event(0))
        wait_until(lambda: '"e0"' in out.getvalue(), what="the live event")
    finally:
        server.close()
        runner.join(10)
    assert codes == [1]
    assert "the daemon ended the stream (shutdown)" in capsys.readouterr().err


def test_tail_refuses_the_bus(server, ctl):
    result = ctl("--bus", "tail")
    assert result.code == 2
    assert "never travels on D-Bus" in result.err


@pytest.mark.parametrize("text, expected", [
    ("300", 1000.0 - 300), ("5m", 1000.0 - 300), ("2h", 1000.0 - 7200), ("1.5s", 998.5),
    ("1970-01-01T00:10:00Z", 600.0), ("1970-01-01T00:10:00+00:00", 600.0),
])
def test_parse_since(text, expected):
    assert parse_since(text, now=1000.0) == expected


def test_parse_since_rejects_nonsense_as_a_usage_error(server, ctl, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tail", "--since", "yesterday"])
    assert exc.value.code == 2
    assert "neither seconds ago" in capsys.readouterr().err


# -- errors -----------------------------------------------------------------------------------


def test_a_missing_socket_says_whether_the_daemon_runs(ctl, tmp_path):
    path = str(tmp_path / "control.sock")
    result = ctl("--socket", path, "status")
    assert result.code == 1
    assert result.err == ("oisp-ctl: cannot connect to %s: no such file — is the daemon running? "
                          "(systemctl status oisp-sensor)\n" % path)


def test_a_socket_nobody_listens_on_says_connection_refused(ctl, tmp_path):
    path = str(tmp_path / "control.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    result = ctl("--socket", path, "status")
    assert result.code == 1
    assert "cannot connect to %s: connection refused" % path in result.err
    assert "systemctl status oisp-sensor" in result.err


def test_the_default_socket_path_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("OISP_SOCKET", raising=False)
    monkeypatch.delenv("OISP_SENSOR_CONTROL_SOCKET", raising=False)
    assert cli.socket_path(None) == "/run/oisp-sensor/control.sock"
    monkeypatch.setenv("OISP_SENSOR_CONTROL_SOCKET", "/b")
    assert cli.socket_path(None) == "/b"
    monkeypatch.setenv("OISP_SOCKET", "/a")
    assert cli.socket_path(None) == "/a"
    assert cli.socket_path("/c") == "/c"


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["session"], ["redaction", "set", "loud"],
                                  ["tail", "--pid", "-1"], ["completion", "fish"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


# -- another user -----------------------------------------------------------------------------


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid 65534 needs root")


@needs_root
def test_a_normal_user_may_read_status(server, public_dir):
    done = run_ctl_as_nobody(public_dir, "--socket", server.path, "status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["redaction"] == "safe"


@needs_root
def test_a_normal_user_is_refused_redaction_set_with_the_group_named(server, public_dir, daemon):
    done = run_ctl_as_nobody(public_dir, "--socket", server.path, "redaction", "set", "full")
    assert done.returncode == 1
    assert done.stderr.startswith("oisp-ctl: permission denied: setting redaction needs root or "
                                  "membership in group 'oisp-admin'")
    assert "uid 65534" in done.stderr
    assert daemon.mode == "safe"


@needs_root
def test_a_normal_user_tails_only_their_own_processes(server, public_dir, daemon):
    daemon.hub.publish(event(0, uid=0))
    daemon.hub.publish(event(1, uid=NOBODY))
    done = run_ctl_as_nobody(public_dir, "--socket", server.path, "tail", "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["event_id"] for line in done.stdout.splitlines()] == ["e1"]


@needs_root
def test_a_normal_user_may_not_ask_for_other_users_events(server, public_dir):
    done = run_ctl_as_nobody(public_dir, "--socket", server.path, "tail", "--uid", "0")
    assert done.returncode == 1
    assert "tailing other users' events (uid 0) needs root or membership in group 'oisp'" \
        in done.stderr
