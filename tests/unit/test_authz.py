"""Authorization: the rule matrix for every op and caller kind, refusal texts, tail scope, peer credentials."""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import sys

import pytest

from oisp_ctl import protocol
from oisp_daemon.control.authz import (
    Authorizer,
    Caller,
    PermissionDenied,
    TailScope,
    caller_from_credentials,
    caller_from_socket,
    caller_from_uid,
)

ROOT = Caller(0, 0, frozenset({"root"}), pid=1, user="root")
ADMIN = Caller(1001, 1001, frozenset({"bob", "oisp-admin"}), pid=None, user="bob")
MEMBER = Caller(1000, 1000, frozenset({"alice", "oisp"}), pid=None, user="alice")
PLAIN = Caller(1002, 1002, frozenset({"carol"}), pid=None, user="carol")
CALLERS = {"root": ROOT, "admin": ADMIN, "member": MEMBER, "plain": PLAIN}

ADMIN_NEEDED = "needs root or membership in group 'oisp-admin'"
MEMBER_NEEDED = "needs root or membership in group 'oisp' or 'oisp-admin'"


@pytest.fixture
def authz():
    return Authorizer()


def refusal(authz, caller, op, **context):
    with pytest.raises(PermissionDenied) as info:
        authz.check(caller, op, **context)
    assert info.value.code == protocol.E_PERMISSION_DENIED
    return info.value.message


# op (with the context the operation layer passes) -> caller kinds allowed
MATRIX = [
    (protocol.OP_HELLO, {}, {"root", "admin", "member", "plain"}),
    (protocol.OP_STATUS, {}, {"root", "admin", "member", "plain"}),
    (protocol.OP_REDACTION_GET, {}, {"root", "admin", "member", "plain"}),
    (protocol.OP_BINARY_PATHS_LIST, {}, {"root", "admin", "member", "plain"}),
    (protocol.OP_TAIL, {}, {"root", "admin", "member", "plain"}),
    (protocol.OP_SESSION_LIST, {}, {"root", "admin", "member"}),
    (protocol.OP_SESSION_START, {}, {"root", "admin", "member"}),
    (protocol.OP_REDACTION_SET, {}, {"root", "admin"}),
    (protocol.OP_BINARY_PATHS_ADD, {}, {"root", "admin"}),
    (protocol.OP_BINARY_PATHS_REMOVE, {}, {"root", "admin"}),
    (protocol.OP_RELOAD, {}, {"root", "admin"}),
    (protocol.OP_SESSION_START, {"owner_uid": 4000}, {"root", "admin"}),
    (protocol.OP_SESSION_STOP, {"owner_uid": 4000}, {"root", "admin"}),
    (protocol.OP_TAIL, {"uids": [4000]}, {"root", "admin", "member"}),
    (protocol.OP_SESSION_START, {"redaction": "full", "global_redaction": "safe"}, {"root", "admin"}),
    (protocol.OP_SESSION_START, {"redaction": "safe", "global_redaction": "minimal"}, {"root", "admin"}),
    (protocol.OP_SESSION_START, {"redaction": "minimal", "global_redaction": "safe"},
     {"root", "admin", "member"}),
    (protocol.OP_SESSION_START, {"redaction": "safe", "global_redaction": "safe"},
     {"root", "admin", "member"}),
]


@pytest.mark.parametrize("op, context, allowed", MATRIX)
@pytest.mark.parametrize("kind", sorted(CALLERS))
def test_matrix(authz, kind, op, context, allowed):
    caller = CALLERS[kind]
    if kind in allowed:
        authz.check(caller, op, **context)
    else:
        with pytest.raises(PermissionDenied):
            authz.check(caller, op, **context)


def test_every_protocol_op_has_a_rule(authz):
    for op in protocol.OPS:
        context = {"owner_uid": 0} if op == protocol.OP_SESSION_STOP else {}
        authz.check(ROOT, op, **context)


def test_own_session_is_managed_by_members_only(authz):
    authz.check(MEMBER, protocol.OP_SESSION_START, owner_uid=MEMBER.uid)
    authz.check(MEMBER, protocol.OP_SESSION_STOP, owner_uid=MEMBER.uid)
    assert refusal(authz, PLAIN, protocol.OP_SESSION_STOP, owner_uid=PLAIN.uid) == (
        "permission denied: stopping a session " + MEMBER_NEEDED
        + " (you are uid 1002 'carol', groups: carol)")


def test_tail_of_own_uid_needs_no_group(authz):
    authz.check(PLAIN, protocol.OP_TAIL, uids=[PLAIN.uid])


@pytest.mark.parametrize("caller, op, context, message", [
    (MEMBER, protocol.OP_REDACTION_SET, {},
     "permission denied: setting redaction " + ADMIN_NEEDED
     + " (you are uid 1000 'alice', groups: alice, oisp)"),
    (MEMBER, protocol.OP_BINARY_PATHS_ADD, {},
     "permission denied: adding binary paths " + ADMIN_NEEDED
     + " (you are uid 1000 'alice', groups: alice, oisp)"),
    (PLAIN, protocol.OP_BINARY_PATHS_REMOVE, {},
     "permission denied: removing binary paths " + ADMIN_NEEDED
     + " (you are uid 1002 'carol', groups: carol)"),
    (MEMBER, protocol.OP_RELOAD, {},
     "permission denied: reloading the configuration " + ADMIN_NEEDED
     + " (you are uid 1000 'alice', groups: alice, oisp)"),
    (PLAIN, protocol.OP_SESSION_LIST, {},
     "permission denied: listing sessions " + MEMBER_NEEDED
     + " (you are uid 1002 'carol', groups: carol)"),
    (PLAIN, protocol.OP_SESSION_START, {},
     "permission denied: starting a session " + MEMBER_NEEDED
     + " (you are uid 1002 'carol', groups: carol)"),
    (MEMBER, protocol.OP_SESSION_START, {"owner_uid": 4000},
     "permission denied: starting a session for another user (uid 4000) " + ADMIN_NEEDED
     + " (you are uid 1000 'alice', groups: alice, oisp)"),
    (MEMBER, protocol.OP_SESSION_STOP, {"owner_uid": 4000},
     "permission denied: stopping another user's session (uid 4000) " + ADMIN_NEEDED
     + " (you are uid 1000 'alice', groups: alice, oisp)"),
    (MEMBER, protocol.OP_SESSION_START, {"redaction": "full", "global_redaction": "safe"},
     "permission denied: a session with redaction 'full', weaker than the global 'safe', "
     + ADMIN_NEEDED + " (you are uid 1000 'alice', groups: alice, oisp)"),
    (PLAIN, protocol.OP_TAIL, {"uids": [0, 1002, 5]},
     "permission denied: tailing other users' events (uid 0, 5) " + MEMBER_NEEDED
     + " (you are uid 1002 'carol', groups: carol)"),
])
def test_refusal_messages(authz, caller, op, context, message):
    assert refusal(authz, caller, op, **context) == message


def test_refusal_of_caller_without_user_or_groups(authz):
    nobody = Caller(54321, None, frozenset())
    assert refusal(authz, nobody, protocol.OP_RELOAD) == (
        "permission denied: reloading the configuration " + ADMIN_NEEDED
        + " (you are uid 54321, groups: none)")


def test_configured_group_names_are_used_and_named():
    authz = Authorizer(user_group="ai-users", admin_group="wheel")
    authz.check(Caller(7, 7, frozenset({"wheel"})), protocol.OP_RELOAD)
    authz.check(Caller(8, 8, frozenset({"ai-users"})), protocol.OP_SESSION_START)
    assert "group 'wheel'" in refusal(authz, MEMBER, protocol.OP_RELOAD)
    assert "group 'ai-users' or 'wheel'" in refusal(authz, MEMBER, protocol.OP_SESSION_LIST)


@pytest.mark.parametrize("user_group, admin_group", [("", "oisp-admin"), ("oisp", None)])
def test_empty_group_names_are_refused(user_group, admin_group):
    with pytest.raises(ValueError):
        Authorizer(user_group=user_group, admin_group=admin_group)


def test_programming_errors_are_not_permission_errors(authz):
    with pytest.raises(ValueError, match="owner_uid"):
        authz.check(ROOT, protocol.OP_SESSION_STOP)
    with pytest.raises(ValueError, match="global_redaction"):
        authz.check(ROOT, protocol.OP_SESSION_START, redaction="full")
    with pytest.raises(ValueError, match="unknown redaction mode 'none'"):
        authz.check(ROOT, protocol.OP_SESSION_START, redaction="none", global_redaction="safe")
    with pytest.raises(ValueError, match="no authorization rule"):
        authz.check(ROOT, "format.disk")


@pytest.mark.parametrize("kind, scope", [
    ("root", TailScope(None)),
    ("admin", TailScope(None)),
    ("member", TailScope(None)),
    ("plain", TailScope(1002)),
])
def test_tail_scope(authz, kind, scope):
    assert authz.tail_scope(CALLERS[kind]) == scope


def test_scope_allows_only_own_events():
    own = TailScope(1002)
    assert own.allows({"actor": {"uid": 1002}})
    assert not own.allows({"actor": {"uid": 0}})
    assert not own.allows({"event_type": "process.exec"})  # no uid: not provably the caller's
    assert TailScope().allows({"event_type": "process.exec"})
    assert TailScope().everything and not own.everything


@pytest.mark.parametrize("kind, perms", [
    ("plain", ["read", "tail.own"]),
    ("member", ["read", "tail.own", "tail.all", "sessions.own"]),
    ("admin", ["read", "tail.own", "tail.all", "sessions.own", "sessions.all", "configure"]),
    ("root", ["read", "tail.own", "tail.all", "sessions.own", "sessions.all", "configure"]),
])
def test_permissions(authz, kind, perms):
    assert authz.permissions(CALLERS[kind]) == perms
    assert set(perms) <= set(protocol.PERMISSIONS)


def test_caller_from_socket_reads_peer_credentials():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        caller = caller_from_socket(a)
    assert (caller.uid, caller.gid, caller.pid) == (os.getuid(), os.getgid(), os.getpid())
    assert caller.user == pwd.getpwuid(os.getuid()).pw_name
    assert grp.getgrgid(os.getgid()).gr_name in caller.groups


@pytest.fixture
def supplementary_group():
    """A group of its own with nobody as a supplementary member, removed again afterwards."""
    if os.geteuid() != 0 or shutil.which("groupadd") is None:
        pytest.skip("creating a group needs root and groupadd (Debian package passwd)")
    name = "oisp-t%d" % os.getpid()
    subprocess.run(["groupadd", name], check=True)
    try:
        subprocess.run(["gpasswd", "--add", "nobody", name], check=True, capture_output=True)
        yield grp.getgrnam(name)
    finally:
        subprocess.run(["groupdel", name], check=True)


def test_caller_from_uid_includes_primary_and_supplementary_groups(supplementary_group):
    entry = pwd.getpwnam("nobody")
    caller = caller_from_uid(entry.pw_uid, pid=99)
    assert caller.user == "nobody"
    assert (caller.gid, caller.pid) == (entry.pw_gid, 99)
    assert {supplementary_group.gr_name, grp.getgrgid(entry.pw_gid).gr_name} <= caller.groups


def test_live_groups_win_over_the_user_database(supplementary_group):
    """A process that dropped the group (setpriv --clear-groups) is not a member; one that has a
    group its user is not listed in is."""
    nobody = pwd.getpwnam("nobody")
    dropped = caller_from_credentials(nobody.pw_uid, [nobody.pw_gid])
    assert supplementary_group.gr_name not in dropped.groups
    given = caller_from_credentials(nobody.pw_uid, [nobody.pw_gid, 0])
    assert "root" in given.groups


def test_caller_from_socket_reads_live_supplementary_groups(supplementary_group):
    """The peer's supplementary groups (SO_PEERGROUPS), as the process has them."""
    name = "oisp-authz-test-%d" % os.getpid()  # abstract socket: reachable by any uid
    address = "\0" + name
    script = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.settimeout(10); "
              "s.connect('\\0' + sys.argv[1]); s.sendall(b'x'); s.recv(1)")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(address)
        server.listen(1)
        server.settimeout(10)
        child = subprocess.Popen(
            ["setpriv", "--reuid", "65534", "--regid", "65534",
             "--groups", str(supplementary_group.gr_gid), sys.executable, "-c", script, name])
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                assert conn.recv(1) == b"x"
                caller = caller_from_socket(conn)
                conn.sendall(b"y")
        finally:
            child.wait(10)
    assert caller.uid == 65534
    assert supplementary_group.gr_name in caller.groups
    assert caller.start_time is not None  # the polkit subject of a socket caller


def test_caller_from_uid_without_passwd_entry():
    known = {p.pw_uid for p in pwd.getpwall()}
    uid = next(u for u in range(54321, 60000) if u not in known)
    assert caller_from_uid(uid) == Caller(uid, None, frozenset(), None, None)


def test_session_sink_path_of_ones_choosing_needs_admin():
    auth = Authorizer()
    member = Caller(uid=1000, gid=1000, groups=frozenset({"alice", "oisp"}), user="alice")
    with pytest.raises(PermissionDenied, match="writing a session to a file of your choice needs root or membership in group 'oisp-admin'"):
        auth.check(member, protocol.OP_SESSION_START, custom_sink=True)
    auth.check(member, protocol.OP_SESSION_START)
    auth.check(Caller(uid=0, gid=0, groups=frozenset({"root"}), user="root"), protocol.OP_SESSION_START, custom_sink=True)
