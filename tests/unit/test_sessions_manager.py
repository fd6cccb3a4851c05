"""SessionManager as a member would attack it: reused names, planted links, floods, huge specs,
configured names, and a global redaction mode tightened under running sessions."""
from __future__ import annotations

import json
import logging
import os
import stat

import pytest

from oisp_daemon.config.defaults import defaults
from oisp_daemon.control.authz import REDACTION_STRENGTH as AUTHZ_STRENGTH
from oisp_daemon.errors import Conflict, InvalidArgument, LimitExceeded
from oisp_daemon.sessions.manager import REDACTION_STRENGTH, SessionLimits, SessionManager

NOBODY = 65534


def event(n: int, pid: int = 1000) -> dict:
    return {"event_type": "ai.request", "process": {"pid": pid}, "n": n}


def redacted_by_mode(ev: dict):
    return lambda mode: dict(ev, mode=mode)


def config(sessions=(), **limits) -> dict:
    cfg = defaults()
    cfg["sessions"] = list(sessions)
    cfg["session_limits"].update(limits)
    return cfg


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def manager(state):
    mgr = SessionManager(str(state))
    yield mgr
    mgr.close()


def lines(path) -> list:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_a_member_reusing_roots_stopped_session_name_gets_a_fresh_empty_file(manager):
    roots = manager.start({"name": "audit", "redaction": "full"}, 0, "runtime", "safe")
    manager.dispatch(event(1), redacted_by_mode(event(1)))
    manager.stop("audit")
    mine = manager.start({"name": "audit"}, NOBODY, "runtime", "safe")
    assert mine.sink_path != roots.sink_path
    st = os.stat(mine.sink_path)
    assert st.st_size == 0 and st.st_uid == NOBODY and stat.S_IMODE(st.st_mode) == 0o600
    old = os.stat(roots.sink_path)
    assert old.st_uid == 0 and stat.S_IMODE(old.st_mode) == 0o600
    assert [e["n"] for e in lines(roots.sink_path)] == [1]


def test_an_fd_kept_open_across_a_stop_sees_none_of_the_next_owners_events(manager):
    first = manager.start({"name": "x"}, NOBODY, "runtime", "safe")
    manager.dispatch(event(1), redacted_by_mode(event(1)))
    kept = open(first.sink_path, encoding="utf-8")
    assert len(kept.readlines()) == 1
    manager.stop("x")
    manager.start({"name": "x"}, 0, "runtime", "safe")
    manager.dispatch(event(2), redacted_by_mode(event(2)))
    assert kept.read() == ""
    kept.close()


def test_default_sink_paths_are_fresh_and_in_the_sessions_directory(manager, state):
    paths = {manager.default_sink_path("a") for _ in range(20)}
    assert len(paths) == 20
    assert {os.path.dirname(p) for p in paths} == {str(state / "sessions")}
    assert all(os.path.basename(p).startswith("a-") and p.endswith(".jsonl") for p in paths)


def test_a_planted_symlink_at_a_sink_path_is_refused_and_the_target_untouched(manager, tmp_path):
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    victim.chmod(0o644)
    link = tmp_path / "drop" / "out.jsonl"
    link.parent.mkdir()
    link.symlink_to(victim)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        manager.start({"name": "s", "sink": {"path": str(link)}}, NOBODY, "runtime", "safe")
    st = os.stat(victim)
    assert victim.read_text() == "root:x:0:0\n" and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o644
    assert manager.list() == []


def test_an_explicit_sink_is_reused_only_when_it_already_belongs_to_the_owner(manager, tmp_path):
    roots = tmp_path / "roots.jsonl"
    roots.write_text('{"secret": 1}\n')
    with pytest.raises(InvalidArgument, match="belongs to uid 0"):
        manager.start({"name": "s", "sink": {"path": str(roots)}}, NOBODY, "runtime", "safe")
    assert os.stat(roots).st_uid == 0
    session = manager.start({"name": "s", "sink": {"path": str(roots)}}, 0, "runtime", "safe")
    manager.dispatch(event(1), redacted_by_mode(event(1)))
    assert session.sink_path == str(roots) and len(lines(roots)) == 2


def test_files_are_private_whatever_the_umask(state):
    old = os.umask(0)
    try:
        mgr = SessionManager(str(state))
        session = mgr.start({"name": "u"}, NOBODY, "runtime", "safe")
        mgr.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(state / "sessions.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state / "sessions").st_mode) == 0o711
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(session.sink_path).st_mode) == 0o600


def test_a_planted_sessions_json_symlink_is_neither_read_nor_followed(state, tmp_path, caplog):
    victim = tmp_path / "victim.json"
    victim.write_text(json.dumps({"sessions": [{"name": "evil", "owner_uid": NOBODY}]}))
    mgr = SessionManager(str(state))
    (state / "sessions.json").symlink_to(victim)
    with caplog.at_level(logging.ERROR):
        assert mgr.restore("safe") == []
    assert "symbolic link" in caplog.text
    mgr.start({"name": "ok"}, 0, "runtime", "safe")
    assert not (state / "sessions.json").is_symlink()
    assert json.loads(victim.read_text())["sessions"][0]["name"] == "evil"
    mgr.close()


def test_a_flood_of_sessions_stops_at_the_per_owner_cap_and_root_still_stops_them(state):
    mgr = SessionManager(str(state))
    mgr.apply_config(config(max_per_owner=5, max_total=50), "safe")
    for i in range(5):
        mgr.start({"name": f"f{i}"}, NOBODY, "runtime", "safe")
    for i in range(5, 979):
        with pytest.raises(LimitExceeded, match="max_per_owner"):
            mgr.start({"name": f"f{i}"}, NOBODY, "runtime", "safe")
    assert len(os.listdir(state / "sessions")) == 5
    mgr.start({"name": "roots"}, 0, "runtime", "safe")  # other owners are not blocked
    for i in range(5):
        mgr.stop(f"f{i}")
    mgr.start({"name": "again"}, NOBODY, "runtime", "safe")
    mgr.close()


def test_the_total_cap_holds_across_owners(state):
    mgr = SessionManager(str(state), SessionLimits(max_per_owner=10, max_total=3))
    for uid in range(3):
        mgr.start({"name": f"u{uid}"}, 1000 + uid, "runtime", "safe")
    with pytest.raises(LimitExceeded, match="max_total"):
        mgr.start({"name": "u4"}, 2000, "runtime", "safe")
    mgr.close()


def test_a_10mb_filter_is_refused_before_anything_is_written(manager, state):
    huge = {"name": "big", "filters": {"comms": ["x" * 1024] * 10240}}
    with pytest.raises(LimitExceeded, match="max_spec_bytes"):
        manager.start(huge, NOBODY, "runtime", "safe")
    assert not (state / "sessions.json").exists() and manager.list() == []


def test_limits_are_read_from_the_config_on_every_apply(state):
    mgr = SessionManager(str(state))
    mgr.apply_config(config(max_spec_bytes=300), "safe")
    with pytest.raises(LimitExceeded):
        mgr.start({"name": "m", "filters": {"comms": ["c" * 400]}}, NOBODY, "runtime", "safe")
    mgr.apply_config(config(max_spec_bytes=4096), "safe")
    mgr.start({"name": "m", "filters": {"comms": ["c" * 400]}}, NOBODY, "runtime", "safe")
    mgr.close()


def test_the_configured_session_wins_over_a_runtime_one_of_the_same_name(state, caplog):
    mgr = SessionManager(str(state))
    mgr.apply_config(config(), "safe")
    squatter = mgr.start({"name": "fleet"}, NOBODY, "runtime", "safe")
    with caplog.at_level(logging.WARNING):
        mgr.apply_config(config([{"name": "fleet", "filters": {"types": ["ai.*"]}}]), "safe")
    assert "runtime session fleet (owner uid 65534) stopped" in caplog.text
    fleet = mgr.get("fleet")
    assert fleet.origin == "config" and fleet.owner_uid == 0 and fleet.sink_path != squatter.sink_path
    with pytest.raises(Conflict, match="belongs to a session in the configuration"):
        mgr.start({"name": "fleet"}, NOBODY, "runtime", "safe")
    assert json.loads((state / "sessions.json").read_text())["sessions"] == []
    mgr.close()


def test_a_persisted_session_with_a_configured_name_is_not_restored(state):
    mgr = SessionManager(str(state))
    mgr.start({"name": "fleet"}, NOBODY, "runtime", "safe")
    mgr.close()
    mgr = SessionManager(str(state))
    mgr.apply_config(config([{"name": "fleet"}]), "safe")
    mgr.restore("safe")
    assert [(s.name, s.origin) for s in mgr.list()] == [("fleet", "config")]
    mgr.close()


def test_tightening_the_global_mode_raises_running_sessions_at_once(manager, state):
    member = manager.start({"name": "m"}, NOBODY, "runtime", "safe")
    admin = manager.start({"name": "debug", "redaction": "full"}, 0, "runtime", "safe")
    strict = manager.start({"name": "strict", "redaction": "minimal"}, 0, "runtime", "full")
    raised = manager.enforce_floor("minimal")
    assert {s.name for s in raised} == {"m", "debug"}
    assert member.redaction == admin.redaction == strict.redaction == "minimal"
    manager.dispatch(event(1), redacted_by_mode(event(1)))
    assert lines(member.sink_path)[0]["mode"] == "minimal"
    persisted = json.loads((state / "sessions.json").read_text())["sessions"]
    assert {s["redaction"] for s in persisted} == {"minimal"}
    assert manager.enforce_floor("full") == [] and member.redaction == "minimal"


def test_a_restored_session_is_checked_again_against_the_current_global_mode(state):
    mgr = SessionManager(str(state))
    first = mgr.start({"name": "keep", "redaction": "full"}, 0, "runtime", "safe")
    mgr.dispatch(event(1), redacted_by_mode(event(1)))
    mgr.close()
    mgr = SessionManager(str(state))
    (restored,) = mgr.restore("minimal")
    assert restored.redaction == "minimal" and restored.sink_path == first.sink_path
    mgr.dispatch(event(2), redacted_by_mode(event(2)))
    assert [e["mode"] for e in lines(first.sink_path)] == ["full", "minimal"]
    mgr.close()


def test_configured_sessions_run_at_least_in_the_global_mode_and_are_not_restarted_for_it(state):
    mgr = SessionManager(str(state))
    cfg = config([{"name": "fleet", "redaction": "full"}])
    mgr.apply_config(cfg, "safe")
    fleet = mgr.get("fleet")
    assert fleet.redaction == "safe"
    mgr.apply_config(cfg, "safe")
    assert mgr.get("fleet") is fleet
    mgr.apply_config(cfg, "minimal")
    assert mgr.get("fleet") is fleet and fleet.redaction == "minimal"
    mgr.close()


def test_a_configured_session_with_a_default_sink_keeps_its_file_across_reloads(state):
    mgr = SessionManager(str(state))
    cfg = config([{"name": "fleet"}])
    mgr.apply_config(cfg, "safe")
    path = mgr.get("fleet").sink_path
    mgr.apply_config(cfg, "safe")
    assert mgr.get("fleet").sink_path == path
    mgr.close()


def test_the_redaction_order_agrees_with_authz():
    assert REDACTION_STRENGTH == AUTHZ_STRENGTH


def test_an_event_racing_a_stop_is_not_counted_as_a_write_error(manager, caplog):
    session = manager.start({"name": "r"}, 0, "runtime", "safe")
    session.sink.close()  # what stop() does after the pipeline took its snapshot of sessions
    with caplog.at_level(logging.ERROR):
        manager.dispatch(event(1), redacted_by_mode(event(1)))
    assert session.sink_errors == 0 and "failed" not in caplog.text
