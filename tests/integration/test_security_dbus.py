"""Attacks on the daemon's D-Bus side, as a plain local user would make them (issue 6).

The real daemon runs on a private system-style bus with the project's bus policy
(tests/support/private_bus.py); the attacker is uid 65534 under setpriv, without groups unless a
test gives it the stand-in group. Every test asserts that the attack fails and that the daemon
is still on the bus and answers root afterwards.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from tests.integration.daemon import (
    ADMIN_GID, ADMIN_GROUP, NOBODY, NOGROUP, USER_GID, USER_GROUP, DaemonProcess, as_user, running_daemon,
    shared_tmpdir,
)
from tests.support.paths import REPO_ROOT
from tests.support.private_bus import PrivateBus, start_polkitd, start_private_bus

pytestmark = pytest.mark.bpf

SYSTEM_PYTHON = "/usr/bin/python3"
ERR = "dev.oisp.Sensor1.Error."

# The attacker's client: many connections, many calls in flight each, and arguments of any size.
# It sends through the daemon's own EAGAIN-tolerant connection class, since dbus-next's own
# gives up on a full socket buffer before a 30 MB message is out.
_ATTACK = r"""
import asyncio, json, sys
from dbus_next import Message, MessageType
from oisp_daemon.control.dbus_service import _Bus

async def flood(address, calls, in_flight, member, signature, body):
    bus = await _Bus(address).connect()
    gate = asyncio.Semaphore(in_flight)
    outcome = {"ok": 0, "errors": {}, "timeouts": 0, "longest_error": 0}
    async def one():
        async with gate:
            try:
                reply = await asyncio.wait_for(bus.call(Message(
                    destination="dev.oisp.Sensor1", path="/dev/oisp/Sensor1",
                    interface="dev.oisp.Sensor1.Manager", member=member, signature=signature,
                    body=body)), 60)
            except asyncio.TimeoutError:
                outcome["timeouts"] += 1
                return
            if reply.message_type == MessageType.ERROR:
                name = reply.error_name
                outcome["errors"][name] = outcome["errors"].get(name, 0) + 1
                text = reply.body[0] if reply.body else ""
                outcome["longest_error"] = max(outcome["longest_error"], len(text))
            else:
                outcome["ok"] += 1
    await asyncio.gather(*(one() for _ in range(calls)))
    bus.disconnect()
    return outcome

async def main(address, connections, calls, in_flight, member, signature, body):
    print(json.dumps(await asyncio.gather(*(
        flood(address, calls, in_flight, member, signature, body) for _ in range(connections)))))

address, connections, calls, in_flight, member, signature, spec = sys.argv[1:]
body = [("x" * item["big"]) if isinstance(item, dict) else item for item in json.loads(spec)]
asyncio.run(main(address, int(connections), int(calls), int(in_flight), member, signature, body))
"""

# Listens for the daemon's signals for a few seconds and prints them.
_LISTEN = r"""
import asyncio, json, sys
from dbus_next import Message, MessageType
from dbus_next.aio import MessageBus

async def main(address, seconds):
    bus = await MessageBus(bus_address=address).connect()
    await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                           interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                           body=["type='signal',path='/dev/oisp/Sensor1'"]))
    seen = []
    def on(msg):
        if msg.message_type == MessageType.SIGNAL:
            seen.append({"member": msg.member, "signature": msg.signature,
                         "body": json.loads(json.dumps(msg.body, default=lambda v: v.value))})
    bus.add_message_handler(on)
    print("listening", flush=True)
    await asyncio.sleep(float(seconds))
    print(json.dumps(seen))

asyncio.run(main(*sys.argv[1:]))
"""

# One call, the reply printed as JSON.
_CALL = r"""
import asyncio, json, sys
from dbus_next import Message, MessageType
from dbus_next.aio import MessageBus

async def main(address, interface, member, signature, body):
    bus = await MessageBus(bus_address=address).connect()
    reply = await asyncio.wait_for(bus.call(Message(
        destination="dev.oisp.Sensor1", path="/dev/oisp/Sensor1", interface=interface,
        member=member, signature=signature, body=json.loads(body))), 10)
    error = reply.error_name if reply.message_type == MessageType.ERROR else None
    print(json.dumps({"error": error, "body": reply.body}))

asyncio.run(main(*sys.argv[1:]))
"""


def _env() -> Dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT),
            "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/"}


def as_nobody(script: str, *args: str, gid: int = NOGROUP, timeout: float = 300
              ) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(as_user([SYSTEM_PYTHON, "-c", script, *args], NOBODY, gid),
                          capture_output=True, text=True, timeout=timeout, cwd="/", env=_env())


def attack(bus: PrivateBus, connections: int, calls: int, in_flight: int, member: str,
           signature: str, body: List[Any]) -> List[Dict[str, Any]]:
    done = as_nobody(_ATTACK, bus.address, str(connections), str(calls), str(in_flight), member,
                     signature, json.dumps(body))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def call(bus: PrivateBus, member: str, signature: str = "", *body: Any, uid: int = 0,
         gid: int = NOGROUP, interface: str = "dev.oisp.Sensor1.Manager") -> Tuple[Any, Any]:
    argv = [SYSTEM_PYTHON, "-c", _CALL, bus.address, interface, member, signature,
            json.dumps(list(body))]
    if uid:
        argv = as_user(argv, uid, gid)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/", env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    return out["error"], out["body"]


def assert_serves_root(daemon: DaemonProcess, bus: PrivateBus) -> None:
    """The daemon owns the name and answers root over the bus, and its log has no traceback."""
    error, body = call(bus, "Status")
    assert error is None, body
    assert json.loads(body[0])["dbus"]["connected"] is True
    assert "Traceback" not in daemon.log(), daemon.log()[-5000:]


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bus() -> Iterator[PrivateBus]:
    from tests.integration.conftest import cannot_run

    if os.geteuid() != 0:
        cannot_run("the daemon needs root")
    private = start_private_bus(polkit=True)
    yield private
    private.stop()


@pytest.fixture(scope="module")
def daemon(bus: PrivateBus) -> Iterator[DaemonProcess]:
    """One daemon for the module (BPF compilation is paid once); tests leave it as they found it."""
    with running_daemon(dbus_address=bus.address) as proc:
        yield proc


def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met within %.0f s" % timeout)


# --- flooding and big arguments -------------------------------------------------------------

def test_a_flood_of_calls_is_refused_past_the_cap_and_root_is_still_served(daemon, bus):
    outcomes = attack(bus, connections=4, calls=500, in_flight=100, member="Status",
                      signature="", body=[])
    assert sum(o["ok"] + sum(o["errors"].values()) + o["timeouts"] for o in outcomes) == 2000
    assert all(o["timeouts"] == 0 for o in outcomes), outcomes
    refused = sum(o["errors"].get(ERR + "limit_exceeded", 0) for o in outcomes)
    assert refused > 0 and sum(o["ok"] for o in outcomes) > 0, outcomes
    assert_serves_root(daemon, bus)
    assert daemon.ctl_json("status")["dbus"]["refused_calls"] >= refused


def test_a_flood_of_generic_calls_from_a_group_member(daemon, bus):
    outcomes = attack(bus, connections=4, calls=300, in_flight=100, member="Call",
                      signature="ss", body=["session.list", "{}"])
    assert all(o["timeouts"] == 0 for o in outcomes), outcomes
    assert_serves_root(daemon, bus)


@pytest.mark.parametrize("member, signature, body", [
    ("SetRedaction", "s", [{"big": 30 << 20}]),
    ("Call", "ss", ["status", {"big": 30 << 20}]),
    ("StartSession", "ss", ["big", {"big": 30 << 20}]),
    ("AddBinaryPath", "s", [{"big": 20 << 20}]),
])
def test_huge_arguments_are_refused_without_being_echoed(daemon, bus, member, signature, body):
    outcomes = attack(bus, connections=3, calls=4, in_flight=4, member=member,
                      signature=signature, body=body)
    assert all(o["timeouts"] == 0 for o in outcomes), outcomes
    answered = {name for o in outcomes for name in o["errors"]}
    # the bus daemon itself may refuse some (LimitsExceeded); the daemon refuses the rest
    assert answered <= {ERR + "invalid_argument", "org.freedesktop.DBus.Error.LimitsExceeded"}
    assert ERR + "invalid_argument" in answered
    assert max(o["longest_error"] for o in outcomes) < 1024
    assert_serves_root(daemon, bus)


def test_deeply_nested_json_is_refused_cleanly(daemon, bus):
    for text in ("[" * 50000 + "]" * 50000, '{"a":' * 5000 + "1" + "}" * 5000):
        error, body = call(bus, "Call", "ss", "status", text, uid=NOBODY)
        assert error == ERR + "invalid_argument", body
        assert "deeper than" in body[0] and len(body[0]) < 200
    error, body = call(bus, "StartSession", "ss", "deep", '{"filters": ' + "[" * 3000 + "]" * 3000
                       + "}", uid=NOBODY, gid=USER_GID)
    assert error == ERR + "invalid_argument", body
    assert_serves_root(daemon, bus)


# --- losing the bus -------------------------------------------------------------------------

def test_after_the_bus_goes_away_status_says_so_and_the_name_is_owned_again(daemon, bus):
    mark = len(daemon.notify.messages)
    bus.stop_daemon()
    try:
        _wait(lambda: daemon.ctl_json("status")["dbus"]["connected"] is False)
        down = daemon.ctl_json("status")["dbus"]
        assert down["down_since"] is not None
        daemon.notify.wait_for("STATUS=", after=mark)
        _wait(lambda: any("D-Bus down" in m for m in daemon.notify.messages[mark:]))
    finally:
        bus.start()
    _wait(lambda: daemon.ctl_json("status")["dbus"]["connected"] is True, timeout=60)
    up = daemon.ctl_json("status")["dbus"]
    assert up["reconnects"] >= 1 and up["down_since"] is None
    error, body = call(bus, "GetRedaction", uid=NOBODY)
    assert error is None and body == ["safe"]
    # polkitd was on the old bus: the polkit tests start their own
    assert_serves_root(daemon, bus)


def test_a_restarted_bus_gets_the_name_back(daemon, bus):
    before = daemon.ctl_json("status")["dbus"]["reconnects"]
    bus.restart()
    _wait(lambda: daemon.ctl_json("status")["dbus"]["reconnects"] > before, timeout=60)
    assert_serves_root(daemon, bus)


# --- what the daemon says on the bus --------------------------------------------------------

def test_peer_get_machine_id_and_ping_reply(daemon, bus):
    error, body = call(bus, "GetMachineId", uid=NOBODY, interface="org.freedesktop.DBus.Peer")
    assert error is None
    assert body == [Path("/etc/machine-id").read_text().strip()]
    assert call(bus, "Ping", uid=NOBODY, interface="org.freedesktop.DBus.Peer") == (None, [])


def test_session_signals_carry_no_names_or_owners(daemon, bus):
    listener = subprocess.Popen(as_user([SYSTEM_PYTHON, "-c", _LISTEN, bus.address, "6"]),
                                stdout=subprocess.PIPE, text=True, cwd="/", env=_env())
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "listening"
        assert daemon.ctl("session", "start", "payroll-secret", "--type", "ai.*").returncode == 0
        assert daemon.ctl("session", "stop", "payroll-secret").returncode == 0
        out, _ = listener.communicate(timeout=30)
    finally:
        listener.kill()
    seen = json.loads(out)
    sessions = [s for s in seen if s["member"] in ("SessionStarted", "SessionStopped")]
    assert [s["member"] for s in sessions] == ["SessionStarted", "SessionStopped"]
    assert all(s["signature"] == "" and s["body"] == [] for s in sessions)
    assert "payroll-secret" not in out


# --- one group rule for both transports -----------------------------------------------------

def test_both_transports_count_the_callers_live_group(daemon, bus):
    member = daemon.ctl("--bus", "session", "list", uid=NOBODY, gid=USER_GID, bus=bus.address)
    assert member.returncode == 0, member.stderr
    plain = daemon.ctl("--bus", "session", "list", uid=NOBODY, bus=bus.address)
    assert plain.returncode != 0 and "group '%s'" % USER_GROUP in plain.stderr
    assert daemon.ctl("session", "list", uid=NOBODY, gid=USER_GID).returncode == 0
    admin = daemon.ctl("--bus", "redaction", "set", "safe", uid=NOBODY, gid=ADMIN_GID,
                       bus=bus.address)
    assert admin.returncode == 0, admin.stderr


# --- polkit ---------------------------------------------------------------------------------

@pytest.fixture
def polkitd(bus: PrivateBus) -> Iterator[Any]:
    daemon = start_polkitd(bus, shared_tmpdir("oisp-polkit-"))
    yield daemon
    daemon.stop()


def _rule(action: str, result: str, uid: int = NOBODY) -> str:
    return ('polkit.addRule(function(action, subject) {\n'
            '  if (action.id == "%s" && subject.user == "%s") { return polkit.Result.%s; }\n'
            '});\n' % (action, _user_name(uid), result))


def _user_name(uid: int) -> str:
    import pwd

    return pwd.getpwuid(uid).pw_name


def _after_rules_reload() -> None:
    time.sleep(2.0)  # polkitd watches its rules directory and reloads on change


def test_polkit_rule_grants_configure_to_a_plain_user(daemon, bus, polkitd):
    time.sleep(11)  # the daemon's polkit client retries a missing polkit after 10 s
    refused = daemon.ctl("--bus", "redaction", "set", "minimal", uid=NOBODY, bus=bus.address)
    assert refused.returncode != 0 and "group '%s'" % ADMIN_GROUP in refused.stderr
    polkitd.write_rule("10-oisp-test.rules", _rule("dev.oisp.Sensor1.configure", "YES"))
    _after_rules_reload()
    try:
        over_bus = daemon.ctl("--bus", "redaction", "set", "minimal", uid=NOBODY, bus=bus.address)
        assert over_bus.returncode == 0, over_bus.stderr
        over_socket = daemon.ctl("redaction", "set", "safe", uid=NOBODY)
        assert over_socket.returncode == 0, over_socket.stderr
    finally:
        daemon.ctl("redaction", "set", "safe")
    assert "Traceback" not in daemon.log()


def test_polkit_rule_denies_sessions_to_a_group_member(daemon, bus, polkitd):
    polkitd.write_rule("10-oisp-test.rules", _rule("dev.oisp.Sensor1.manage-sessions", "NO"))
    _after_rules_reload()
    for extra in (["--bus"], []):
        refused = daemon.ctl(*extra, "session", "list", uid=NOBODY, gid=USER_GID,
                             bus=bus.address if extra else None)
        assert refused.returncode != 0
        assert "refused by this system's polkit rules" in refused.stderr
        assert "dev.oisp.Sensor1.manage-sessions" in refused.stderr
    assert daemon.ctl("session", "list").returncode == 0  # root never asks polkit
