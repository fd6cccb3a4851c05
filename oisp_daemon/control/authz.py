"""Who may do what over the control plane: the one authorization module both transports use.

The Unix socket identifies its peer with SO_PEERCRED, D-Bus with GetConnectionUnixUser; both end
in a `Caller` (uid, gid, group names), and every operation is checked here, so the two transports
cannot drift apart. The rules (DESIGN.md, Control plane):

- anyone may read status and configuration and tail the events of their own uid's processes;
- group `oisp` may tail everything, list sessions and start and stop their own sessions;
- root or group `oisp-admin` may change redaction and binary paths, reload, manage other users'
  sessions, and give a session a redaction mode weaker than the global one.

Admins have every right of `oisp` members. Every refusal names the operation, the caller and the
group that would allow it, so the message itself tells the operator the fix.
"""
from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Tuple

from oisp_ctl import protocol
from oisp_daemon.sessions.event_filter import TailScope

# Redaction modes from weakest (keeps captured content) to strongest (keeps least).
REDACTION_STRENGTH: Dict[str, int] = {"full": 0, "safe": 1, "minimal": 2}

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

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
    """

    uid: int
    gid: Optional[int]
    groups: FrozenSet[str]
    pid: Optional[int] = None
    user: Optional[str] = None

    def describe(self) -> str:
        """E.g. "uid 1000 'alice', groups: alice, oisp", for refusal messages."""
        who = "uid %d" % self.uid if self.user is None else "uid %d %r" % (self.uid, self.user)
        return "%s, groups: %s" % (who, ", ".join(sorted(self.groups)) or "none")


def _resolve(uid: int, gid: Optional[int]) -> Tuple[Optional[str], Optional[int], FrozenSet[str]]:
    """(user name, primary gid, group names) of `uid` from the user and group databases.

    Supplementary groups come from os.getgrouplist, the same source login uses; `gid` (the peer's
    effective gid, when known) is added because a process may run with a group its user is not in.
    """
    gids = set()
    user: Optional[str] = None
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        primary = gid
    else:
        user, primary = entry.pw_name, entry.pw_gid
        gids.update(os.getgrouplist(entry.pw_name, entry.pw_gid))
    if gid is not None:
        gids.add(gid)
    names = set()
    for g in gids:
        try:
            names.add(grp.getgrgid(g).gr_name)
        except KeyError:
            continue  # a gid without a name cannot be one of the configured groups
    return user, primary, frozenset(names)


def caller_from_socket(sock: socket.socket) -> Caller:
    """The Caller at the other end of a connected Unix socket, from SO_PEERCRED.

    The credentials are those the peer had when it connected, which the kernel vouches for.
    """
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(creds)
    user, _, groups = _resolve(uid, gid)
    return Caller(uid=uid, gid=gid, groups=groups, pid=pid or None, user=user)


def caller_from_uid(uid: int, pid: Optional[int] = None) -> Caller:
    """The Caller for a uid alone (D-Bus: GetConnectionUnixUser); groups come from the user's entry."""
    user, primary, groups = _resolve(uid, None)
    return Caller(uid=uid, gid=primary, groups=groups, pid=pid, user=user)


class Authorizer:
    """Applies the control-plane rules to a Caller; group names come from the configuration."""

    def __init__(self, user_group: str = "oisp", admin_group: str = "oisp-admin") -> None:
        for name, value in (("user_group", user_group), ("admin_group", admin_group)):
            if not isinstance(value, str) or not value:
                raise ValueError("%s must be a non-empty group name, got %r" % (name, value))
        self.user_group = user_group
        self.admin_group = admin_group

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
            self._need_admin(caller, _CONFIG_ACTIONS[op])
        elif op == protocol.OP_SESSION_LIST:
            self._need_member(caller, "listing sessions")
        elif op == protocol.OP_SESSION_START:
            self._check_session_start(caller, owner_uid, redaction, global_redaction)
            if custom_sink:
                self._need_admin(caller, "writing a session to a file of your choice")
        elif op == protocol.OP_SESSION_STOP:
            if owner_uid is None:
                raise ValueError("session.stop is checked against the session's owner_uid")
            self._need_member(caller, "stopping a session")
            if owner_uid != caller.uid:
                self._need_admin(caller, "stopping another user's session (uid %d)" % owner_uid)
        elif op == protocol.OP_TAIL:
            others = sorted(set(uids or ()) - {caller.uid})
            if others:
                self._need_member(caller, "tailing other users' events (uid %s)"
                                  % ", ".join(str(u) for u in others))
        else:
            raise ValueError("no authorization rule for operation %r" % (op,))

    def _check_session_start(self, caller: Caller, owner_uid: Optional[int],
                             redaction: Optional[str], global_redaction: Optional[str]) -> None:
        self._need_member(caller, "starting a session")
        if owner_uid is not None and owner_uid != caller.uid:
            self._need_admin(caller, "starting a session for another user (uid %d)" % owner_uid)
        if redaction is None:
            return
        if global_redaction is None:
            raise ValueError("a session's redaction is checked against global_redaction")
        if _strength(redaction) < _strength(global_redaction):
            self._need_admin(caller, "a session with redaction %r, weaker than the global %r,"
                             % (redaction, global_redaction))

    def tail_scope(self, caller: Caller) -> TailScope:
        """Every uid for members, otherwise only the caller's own."""
        return TailScope(None if self.is_member(caller) else caller.uid)

    def permissions(self, caller: Caller) -> List[str]:
        """The protocol.PERM_* names the caller holds, for the hello reply."""
        perms = [protocol.PERM_READ, protocol.PERM_TAIL_OWN]
        if self.is_member(caller):
            perms += [protocol.PERM_TAIL_ALL, protocol.PERM_SESSIONS_OWN]
        if self.is_admin(caller):
            perms += [protocol.PERM_SESSIONS_ALL, protocol.PERM_CONFIGURE]
        return perms

    def _need_admin(self, caller: Caller, action: str) -> None:
        if not self.is_admin(caller):
            raise PermissionDenied("permission denied: %s needs root or membership in group %r "
                                   "(you are %s)" % (action, self.admin_group, caller.describe()))

    def _need_member(self, caller: Caller, action: str) -> None:
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
