"""Ask polkit whether a caller holds one of the daemon's rights (systemd/dev.oisp.Sensor1.policy).

authz.py asks before it applies its group rule, so that a site's polkit rules
(/etc/polkit-1/rules.d/*.rules) can grant a right to someone outside the groups or deny it to a
member. The question is org.freedesktop.PolicyKit1.Authority.CheckAuthorization on the system bus,
without user interaction (a daemon has no agent to ask for a password), about:

- a D-Bus caller: a `system-bus-name` subject, its unique name, which polkit resolves itself;
- a socket caller: a `unix-process` subject with pid, start time (which pins the pid against
  reuse) and uid, all from SO_PEERCRED and /proc at connect time.

Answers (Verdict): polkit says yes -> GRANTED; polkit says no without offering authentication
(a local rule returned NO, or a site set the defaults to "no") -> DENIED; polkit offers
authentication (the shipped defaults, auth_admin, or a rule returning AUTH_ADMIN) -> NO_DECISION,
and so does a polkit that is not running or not reachable: the group rule then decides.

The calls are blocking (authz runs in the operations' worker threads) and go through one bus
connection served by a loop thread of this module, made on first use and remade after a loss.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from oisp_ctl import protocol

log = logging.getLogger(__name__)

SYSTEM_BUS = "system"
POLKIT_NAME = "org.freedesktop.PolicyKit1"
_AUTHORITY = dict(destination=POLKIT_NAME, path="/org/freedesktop/PolicyKit1/Authority",
                  interface="org.freedesktop.PolicyKit1.Authority")

# The daemon's rights (protocol.PERM_*) that polkit may grant or deny, as the actions of
# systemd/dev.oisp.Sensor1.policy. Reading (status, redaction.get, own tail) is everyone's right
# and never asks.
ACTIONS: Dict[str, str] = {
    protocol.PERM_TAIL_ALL: "dev.oisp.Sensor1.tail-all",
    protocol.PERM_SESSIONS_OWN: "dev.oisp.Sensor1.manage-sessions",
    protocol.PERM_SESSIONS_ALL: "dev.oisp.Sensor1.manage-all-sessions",
    protocol.PERM_CONFIGURE: "dev.oisp.Sensor1.configure",
}

TIMEOUT_S = 5.0
# After polkit or the bus could not be reached, ask again only after this long.
_RETRY_S = 10.0
# Errors meaning "polkit is not there": the group rule decides without a warning per call.
_ABSENT = frozenset({
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
})


class Verdict(enum.Enum):
    GRANTED = "granted"
    DENIED = "denied"
    NO_DECISION = "no_decision"


@dataclass(frozen=True)
class Subject:
    """A polkit subject: its kind and details, as CheckAuthorization takes them."""

    kind: str
    details: Tuple[Tuple[str, str, Any], ...]  # (key, D-Bus signature, value)

    @staticmethod
    def bus_name(name: str) -> "Subject":
        return Subject("system-bus-name", (("name", "s", name),))

    @staticmethod
    def process(pid: int, start_time: int, uid: int) -> "Subject":
        return Subject("unix-process", (("pid", "u", pid), ("start-time", "t", start_time),
                                        ("uid", "i", uid)))


def process_start_time(pid: int) -> Optional[int]:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), what polkit compares; None if gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: the fields after it follow the last ')'
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


class Polkit:
    """The polkit authority on the bus at `address` ("system" or a D-Bus address)."""

    def __init__(self, address: str = SYSTEM_BUS, timeout: float = TIMEOUT_S) -> None:
        self.address = address
        self.timeout = timeout
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._bus: Any = None
        self._unavailable_until = 0.0
        self._available: Optional[bool] = None  # last state logged
        self.checks = 0
        self.failures = 0

    def check(self, subject: Subject, action: str, details: Optional[Dict[str, str]] = None
              ) -> Verdict:
        """Ask polkit about `subject` and `action`; never raises (NO_DECISION when it cannot)."""
        if time.monotonic() < self._unavailable_until:
            return Verdict.NO_DECISION
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(self._check(subject, action, details or {}), loop)
        try:
            verdict = future.result(self.timeout + 1.0)
        except Exception as exc:  # a timeout, the bus gone: the group rule decides
            future.cancel()
            self._unavailable("%s: %s" % (type(exc).__name__, exc))
            return Verdict.NO_DECISION
        return verdict

    def close(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None:
            return

        def stop() -> None:
            if self._bus is not None:
                self._bus.disconnect()
                self._bus = None
            loop.stop()

        loop.call_soon_threadsafe(stop)
        if thread is not None:
            thread.join(self.timeout)
        loop.close()

    # -- on the loop thread --------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever,
                                                name="oisp-polkit", daemon=True)
                self._thread.start()
            return self._loop

    async def _connection(self) -> Any:
        from dbus_next import BusType
        from dbus_next.aio import MessageBus

        if self._bus is None or not self._bus.connected:
            bus = MessageBus(bus_type=BusType.SYSTEM) if self.address == SYSTEM_BUS \
                else MessageBus(bus_address=self.address)
            self._bus = await asyncio.wait_for(bus.connect(), self.timeout)
            # a lost bus ends that future with an error; the next check simply reconnects
            asyncio.ensure_future(bus.wait_for_disconnect()).add_done_callback(
                lambda done: done.cancelled() or done.exception())
        return self._bus

    async def _check(self, subject: Subject, action: str, details: Dict[str, str]) -> Verdict:
        from dbus_next import Message, MessageType, Variant

        self.checks += 1
        bus = await self._connection()
        body = [[subject.kind, {key: Variant(sig, value) for key, sig, value in subject.details}],
                action, details, 0, ""]
        reply = await asyncio.wait_for(bus.call(Message(
            member="CheckAuthorization", signature="(sa{sv})sa{ss}us", body=body, **_AUTHORITY)),
            self.timeout)
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            if reply.error_name in _ABSENT or (reply.error_name or "").startswith(
                    "org.freedesktop.DBus.Error.Spawn"):
                self._unavailable("%s is not running (%s)" % (POLKIT_NAME, reply.error_name))
            else:  # e.g. the action is not installed: say so, the group rule decides
                self.failures += 1
                log.warning("polkit: CheckAuthorization of %s failed: %s %s; the group rule "
                            "decides", action, reply.error_name, text[:200])
            return Verdict.NO_DECISION
        self._mark_available()
        authorized, challenge, _ = reply.body[0]
        if authorized:
            return Verdict.GRANTED
        return Verdict.NO_DECISION if challenge else Verdict.DENIED

    def _unavailable(self, why: str) -> None:
        self.failures += 1
        self._unavailable_until = time.monotonic() + _RETRY_S
        if self._available is not False:
            self._available = False
            log.info("polkit: not consulted (%s); the group rule decides, next try in %.0f s",
                     why, _RETRY_S)

    def _mark_available(self) -> None:
        if self._available is not True:
            self._available = True
            log.info("polkit: consulted on %s", "the system bus" if self.address == SYSTEM_BUS
                     else self.address)
