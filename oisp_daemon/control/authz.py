"""Who may do what over the control plane: the one authorization module both transports use.

Both transports identify the caller by its live credentials, the ones the kernel recorded when it
connected: the Unix socket with SO_PEERCRED and SO_PEERGROUPS, D-Bus with GetConnectionCredentials
(UnixUserID, UnixGroupIDs, ProcessID). Both end in `caller_from_credentials`, so a group counts
the same way on both: as a group the calling process has, as for file access, not as a line in
/etc/group (a user added to `oisp` gets the right at the next login, and `sg`/`newgrp` give it).
Only when a transport cannot tell the groups does the user database stand in for them. Every
operation is checked here, so the two transports cannot drift apart. The rules (DESIGN.md,
Control plane):

- anyone may read status and configuration and tail the events of their own uid's processes;
- group `oisp` may tail everything, list sessions and start and stop their own sessions;
- root or group `oisp-admin` may change redaction and binary paths, reload, manage other users'
  sessions, and give a session a redaction mode weaker than the global one.

Admins have every right of `oisp` members. Every refusal names the operation, the caller and the
group that would allow it, so the message itself tells the operator the fix.

Each right beyond reading is also a polkit action (polkit.ACTIONS, systemd/dev.oisp.Sensor1.policy).
Unless the caller is root, polkit is asked first: its yes grants the right, its no refuses it, and
where it makes no decision (its shipped defaults, or polkit not running) the group rule decides.
"""
from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Optional, Tuple

from oisp_ctl import protocol
from oisp_daemon.control import polkit as polkit_
from oisp_daemon.control.polkit import Polkit, Subject, Verdict
from oisp_daemon.sessions.event_filter import TailScope

# Redaction modes from weakest (keeps captured content) to strongest (keeps least).
REDACTION_STRENGTH: Dict[str, int] = {"full": 0, "safe": 1, "minimal": 2}

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; Python has no name for it
_GID = struct.Struct("I")
_PEERGROUPS_FIRST_TRY = 256  # groups; the kernel answers ERANGE when the peer has more

_READ_OPS = frozenset({
    protocol.OP_HELLO, protocol.OP_STATUS, protocol.OP_REDACTION_GET, protocol.OP_BINARY_PATHS_LIST,
})
_CONFIG_ACTIONS = {
    protocol.OP_REDACTION_SET: "setting redaction",
    protocol.OP_BINARY_PATHS_ADD: "adding binary paths",
    protocol.OP_BINARY_PATHS_REMOVE: "removing binary paths",
    protocol.OP_RELOAD: "reloading the configuration",
}


class PermissionDenied(protocol.ProtocolError):
    """A refused operation; travels as an error reply with code permission_denied."""

    def __init__(self, message: str) -> None:
        super().__init__(protocol.E_PERMISSION_DENIED, message)


@dataclass(frozen=True)
class Caller:
    """The identity of a control-plane peer.

    `gid` is None when only the uid is known and it has no passwd entry; `pid` is None when the
    transport does not give it (or the peer is in another pid namespace); `user` is the login name.
    `bus_name` (the D-Bus unique name) or `pid` with `start_time` make the polkit subject.
    """

    uid: int
    gid: Optional[int]
    groups: FrozenSet[str]
    pid: Optional[int] = None
    user: Optional[str] = None
    bus_name: Optional[str] = None
    start_time: Optional[int] = None

    def polkit_subject(self) -> Optional[Subject]:
        """The subject polkit is asked about: the bus name, else the process; None if neither."""
        if self.bus_name is not None:
            return Subject.bus_name(self.bus_name)
        if self.pid is not None and self.start_time is not None:
            return Subject.process(self.pid, self.start_time, self.uid)
        return None

    def describe(self) -> str:
        """E.g. "uid 1000 'alice', groups: alice, oisp", for refusal messages."""
        who = "uid %d" % self.uid if self.user is None else "uid %d %r" % (self.uid, self.user)
        return "%s, groups: %s" % (who, ", ".join(sorted(self.groups)) or "none")


def _group_names(gids: Iterable[int]) -> FrozenSet[str]:
    names = set()
    for g in gids:
        try:
            names.add(grp.getgrgid(g).gr_name)
        except KeyError:
            continue  # a gid without a name cannot be one of the configured groups
    return frozenset(names)


def _user(uid: int) -> Tuple[Optional[str], Optional[int]]:
    """(login name, primary gid) of `uid`, or (None, None) without a passwd entry."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return None, None
    return entry.pw_name, entry.pw_gid


def caller_from_credentials(uid: int, gids: Optional[Iterable[int]], *, gid: Optional[int] = None,
                            pid: Optional[int] = None, bus_name: Optional[str] = None,
                            start_time: Optional[int] = None) -> Caller:
    """The Caller for a transport's live credentials: the one group rule of both transports.

    `gids` are all the groups the calling process has (effective and supplementary); None when
    the transport cannot tell them, and only then are the user's groups read from the user
    database instead (os.getgrouplist, as login sets them). `gid` is the effective gid where the
    transport gives it apart, else the user's primary group.
    """
    user, primary = _user(uid)
    if gids is None:
        live = set()
        if user is not None and primary is not None:
            live.update(os.getgrouplist(user, primary))
    else:
        live = set(gids)
    if gid is not None:
        live.add(gid)
    if start_time is None and pid is not None and bus_name is None:
        start_time = polkit_.process_start_time(pid)
    return Caller(uid=uid, gid=gid if gid is not None else primary, groups=_group_names(live),
                  pid=pid, user=user, bus_name=bus_name, start_time=start_time)


def _peer_groups(sock: socket.socket) -> Optional[List[int]]:
    """The peer's supplementary groups at connect time (SO_PEERGROUPS); None where unsupported."""
    count = _PEERGROUPS_FIRST_TRY
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, count * _GID.size)
        except OSError as exc:
            if exc.errno == errno.ERANGE and count < 65536:
                count *= 16
                continue
            return None
        return [g for (g,) in _GID.iter_unpack(raw[: len(raw) - len(raw) % _GID.size])]


def caller_from_socket(sock: socket.socket) -> Caller:
    """The Caller at the other end of a connected Unix socket, from SO_PEERCRED and SO_PEERGROUPS.

    The credentials are those the peer had when it connected, which the kernel vouches for.
    """
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(creds)
    return caller_from_credentials(uid, _peer_groups(sock), gid=gid, pid=pid or None)


def caller_from_uid(uid: int, pid: Optional[int] = None) -> Caller:
    """The Caller for a uid alone; its groups come from the user database."""
    return caller_from_credentials(uid, None, pid=pid)


class Authorizer:
    """Applies the control-plane rules to a Caller; group names come from the configuration.

    `polkit`, when given, is asked about every right beyond reading before the group rule.
    """

    def __init__(self, user_group: str = "oisp", admin_group: str = "oisp-admin",
                 polkit: Optional[Polkit] = None) -> None:
        for name, value in (("user_group", user_group), ("admin_group", admin_group)):
            if not isinstance(value, str) or not value:
                raise ValueError("%s must be a non-empty group name, got %r" % (name, value))
        self.user_group = user_group
        self.admin_group = admin_group
        self.polkit = polkit

    def is_admin(self, caller: Caller) -> bool:
        """Root or a member of the admin group."""
        return caller.uid == 0 or self.admin_group in caller.groups

    def is_member(self, caller: Caller) -> bool:
        """A member of the user group, or an admin."""
        return self.is_admin(caller) or self.user_group in caller.groups

    def check(
        self,
        caller: Caller,
        op: str,
        *,
        owner_uid: Optional[int] = None,
        redaction: Optional[str] = None,
        global_redaction: Optional[str] = None,
        uids: Optional[Iterable[int]] = None,
        custom_sink: bool = False,
    ) -> None:
        """Raise PermissionDenied unless `caller` may perform `op`.

        Context, where the op needs it: `owner_uid` is the uid owning the session (session.start:
        the uid it is started for, default the caller's; session.stop: required); `redaction` and
        `global_redaction` are the session's and the global mode (session.start); `uids` are the
        uids a tail filter asks for; `custom_sink` is a session written to a file the caller chose
        (the daemon writes as root, so only admins may name the file).
        """
        if op in _READ_OPS:
            return
        if op in _CONFIG_ACTIONS:
            self._need_admin(caller, op, protocol.PERM_CONFIGURE, _CONFIG_ACTIONS[op])
        elif op == protocol.OP_SESSION_LIST:
            self._need_member(caller, op, protocol.PERM_SESSIONS_OWN, "listing sessions")
        elif op == protocol.OP_SESSION_START:
            self._check_session_start(caller, owner_uid, redaction, global_redaction)
            if custom_sink:
                self._need_admin(caller, op, protocol.PERM_SESSIONS_ALL,
                                 "writing a session to a file of your choice")
        elif op == protocol.OP_SESSION_STOP:
            if owner_uid is None:
                raise ValueError("session.stop is checked against the session's owner_uid")
            self._need_member(caller, op, protocol.PERM_SESSIONS_OWN, "stopping a session")
            if owner_uid != caller.uid:
                self._need_admin(caller, op, protocol.PERM_SESSIONS_ALL,
                                 "stopping another user's session (uid %d)" % owner_uid)
        elif op == protocol.OP_TAIL:
            others = sorted(set(uids or ()) - {caller.uid})
            if others:
                self._need_member(caller, op, protocol.PERM_TAIL_ALL,
                                  "tailing other users' events (uid %s)"
                                  % ", ".join(str(u) for u in others))
        else:
            raise ValueError("no authorization rule for operation %r" % (op,))

    def _check_session_start(self, caller: Caller, owner_uid: Optional[int],
                             redaction: Optional[str], global_redaction: Optional[str]) -> None:
        op = protocol.OP_SESSION_START
        self._need_member(caller, op, protocol.PERM_SESSIONS_OWN, "starting a session")
        if owner_uid is not None and owner_uid != caller.uid:
            self._need_admin(caller, op, protocol.PERM_SESSIONS_ALL,
                             "starting a session for another user (uid %d)" % owner_uid)
        if redaction is None:
            return
        if global_redaction is None:
            raise ValueError("a session's redaction is checked against global_redaction")
        if _strength(redaction) < _strength(global_redaction):
            self._need_admin(caller, op, protocol.PERM_SESSIONS_ALL,
                             "a session with redaction %r, weaker than the global %r,"
                             % (redaction, global_redaction))

    def tail_scope(self, caller: Caller) -> TailScope:
        """Every uid for holders of tail.all (members, or whom polkit grants it), else the caller's."""
        verdict = self._polkit(caller, protocol.OP_TAIL, protocol.PERM_TAIL_ALL)
        everything = verdict is Verdict.GRANTED or (verdict is Verdict.NO_DECISION
                                                    and self.is_member(caller))
        return TailScope(None if everything else caller.uid)

    def permissions(self, caller: Caller) -> List[str]:
        """The protocol.PERM_* names the caller's groups give, for the hello reply.

        From the group rule alone: polkit is asked per operation, when one is tried.
        """
        perms = [protocol.PERM_READ, protocol.PERM_TAIL_OWN]
        if self.is_member(caller):
            perms += [protocol.PERM_TAIL_ALL, protocol.PERM_SESSIONS_OWN]
        if self.is_admin(caller):
            perms += [protocol.PERM_SESSIONS_ALL, protocol.PERM_CONFIGURE]
        return perms

    def _polkit(self, caller: Caller, op: str, right: str) -> Verdict:
        """polkit's verdict on `right` for a non-root caller; NO_DECISION without polkit."""
        subject = caller.polkit_subject()
        if self.polkit is None or caller.uid == 0 or subject is None:
            return Verdict.NO_DECISION
        return self.polkit.check(subject, polkit_.ACTIONS[right], {"operation": op})

    def _refused_by_polkit(self, caller: Caller, op: str, right: str, action: str) -> bool:
        verdict = self._polkit(caller, op, right)
        if verdict is Verdict.DENIED:
            raise PermissionDenied("permission denied: %s is refused by this system's polkit rules "
                                   "(action %s; you are %s)"
                                   % (action, polkit_.ACTIONS[right], caller.describe()))
        return verdict is Verdict.GRANTED

    def _need_admin(self, caller: Caller, op: str, right: str, action: str) -> None:
        if self._refused_by_polkit(caller, op, right, action):
            return
        if not self.is_admin(caller):
            raise PermissionDenied("permission denied: %s needs root or membership in group %r "
                                   "(you are %s)" % (action, self.admin_group, caller.describe()))

    def _need_member(self, caller: Caller, op: str, right: str, action: str) -> None:
        if self._refused_by_polkit(caller, op, right, action):
            return
        if not self.is_member(caller):
            raise PermissionDenied("permission denied: %s needs root or membership in group %r or "
                                   "%r (you are %s)" % (action, self.user_group, self.admin_group,
                                                        caller.describe()))


def _strength(mode: str) -> int:
    try:
        return REDACTION_STRENGTH[mode]
    except KeyError:
        raise ValueError("unknown redaction mode %r; known modes: %s"
                         % (mode, ", ".join(REDACTION_STRENGTH))) from None
