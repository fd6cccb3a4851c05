"""The D-Bus transport on a private bus that enforces the project's real bus policy.

The service runs on an asyncio loop in a thread, as in the daemon, over the real Operations and
Authorizer; only the daemon behind Operations is a stand-in (no capture). Unprivileged callers
are real processes under `setpriv --reuid 65534`, so both the bus policy and the per-method
authorization by uid are exercised as on a real system.
"""
from __future__ import annotations

import asyncio
import configparser
import json
import os
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator, List, NamedTuple, Optional

import pytest
from dbus_next import Message, MessageType, Variant
from dbus_next.aio import MessageBus

from oisp_daemon import __version__
from oisp_daemon.control.authz import Authorizer
from oisp_daemon.control.dbus_service import (
    BUS_NAME, INTERFACE, OBJECT_PATH, DbusService, DbusStartError, start_dbus,
)
from oisp_daemon.control.operations import Operations
from tests.support.daemon_double import DaemonDouble
from tests.support.paths import REPO_ROOT
from tests.support.private_bus import PrivateBus, start_private_bus

if os.geteuid() != 0:
    pytest.skip("owning dev.oisp.Sensor1 and switching to other uids needs root",
                allow_module_level=True)

NOBODY = 65534
TIMEOUT_S = 10.0
SYSTEM_PYTHON = "/usr/bin/python3"  # has python3-dbus-next; unprivileged users can run it
ERR = "dev.oisp.Sensor1.Error."


class Reply(NamedTuple):
    error: Optional[str]  # D-Bus error name, None for a method return
    body: List[Any]


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bus() -> Iterator[PrivateBus]:
    private = start_private_bus()
    yield private
    private.stop()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The control-plane loop in its own thread, as oisp_daemon.service runs it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-dbus-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(TIMEOUT_S)
    loop.close()


def run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, TIMEOUT_S), loop).result()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonDouble]:
    stand_in = DaemonDouble(str(tmp_path / "state"), max_buffer=100)
    yield stand_in
    stand_in.sessions.close()


@pytest.fixture
def service(bus: PrivateBus, loop: asyncio.AbstractEventLoop,
            daemon: DaemonDouble) -> Iterator[DbusService]:
    started = run(loop, start_dbus(Operations(daemon, Authorizer()), bus.address))
    yield started
    run(loop, started.close())


@pytest.fixture
def client(bus: PrivateBus, loop: asyncio.AbstractEventLoop) -> Iterator[MessageBus]:
    """A root client connection."""
    async def connect() -> MessageBus:
        return await MessageBus(bus_address=bus.address).connect()

    connection = run(loop, connect())
    yield connection
    connection.disconnect()


# --- callers ------------------------------------------------------------------------------------

def _method_call(member: str, signature: str = "", body: Optional[List[Any]] = None,
                 interface: Optional[str] = INTERFACE) -> Message:
    return Message(destination=BUS_NAME, path=OBJECT_PATH, interface=interface, member=member,
                   signature=signature, body=body or [])


def call_as_root(loop: asyncio.AbstractEventLoop, client: MessageBus, member: str,
                 signature: str = "", *body: Any, interface: Optional[str] = INTERFACE) -> Reply:
    reply = run(loop, client.call(_method_call(member, signature, list(body), interface)))
    if reply.message_type == MessageType.ERROR:
        return Reply(reply.error_name, reply.body)
    return Reply(None, reply.body)


# Run by the system Python under setpriv: one method call, the reply printed as JSON.
_CLIENT_SCRIPT = """
import asyncio, json, sys
from dbus_next import Message, MessageType
from dbus_next.aio import MessageBus

async def main(address, dest, path, interface, member, signature, body):
    bus = await MessageBus(bus_address=address).connect()
    reply = await bus.call(Message(destination=dest, path=path, interface=interface or None,
                                   member=member, signature=signature, body=json.loads(body)))
    error = reply.error_name if reply.message_type == MessageType.ERROR else None
    print(json.dumps({"error": error, "body": reply.body}, default=lambda variant: variant.value))

asyncio.run(main(*sys.argv[1:]))
"""


def _as_nobody(args: List[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", *args],
        capture_output=True, text=True, timeout=30, cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )


def call_as_nobody(bus: PrivateBus, member: str, signature: str = "", *body: Any,
                   interface: Optional[str] = INTERFACE, dest: str = BUS_NAME,
                   path: str = OBJECT_PATH) -> Reply:
    done = _as_nobody([SYSTEM_PYTHON, "-c", _CLIENT_SCRIPT, bus.address, dest, path,
                       interface or "", member, signature, json.dumps(list(body))])
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return Reply(out["error"], out["body"])


# --- name ownership and the bus policy ----------------------------------------------------------

def test_root_owns_the_name(service: DbusService, loop: asyncio.AbstractEventLoop,
                            client: MessageBus) -> None:
    reply = run(loop, client.call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="GetNameOwner", signature="s", body=[BUS_NAME])))
    assert reply.body == [service.bus.unique_name]


_START_AS_NOBODY = """
import asyncio, sys
from oisp_daemon.control.dbus_service import DbusStartError, start_dbus

class Ops:
    version = "test"
    def add_state_listener(self, fn):
        pass

try:
    asyncio.run(start_dbus(Ops(), sys.argv[1]))
except DbusStartError as exc:
    print(exc)
    sys.exit(3)
"""


def test_unprivileged_process_cannot_own_the_name(bus: PrivateBus) -> None:
    done = _as_nobody(["env", "PYTHONPATH=%s" % REPO_ROOT, SYSTEM_PYTHON, "-c", _START_AS_NOBODY,
                       bus.address])
    assert done.returncode == 3, done.stdout + done.stderr
    assert "policy does not allow" in done.stdout
    assert "not allowed to own the service \"%s\"" % BUS_NAME in done.stdout
    assert "run oisp-sensor as root" in done.stdout


def test_second_instance_fails_naming_the_owner(service: DbusService, bus: PrivateBus,
                                                loop: asyncio.AbstractEventLoop) -> None:
    with pytest.raises(DbusStartError, match="already owned by %s \\(pid %d\\)"
                       % (service.bus.unique_name, os.getpid())):
        run(loop, start_dbus(service.ops, bus.address))


def test_unreachable_bus_fails_clearly(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    with pytest.raises(DbusStartError,
                       match="cannot connect to the D-Bus at unix:path=.*dbus.enabled"):
        run(loop, start_dbus(object(), "unix:path=%s" % (tmp_path / "no-bus")))


def test_close_releases_the_name(bus: PrivateBus, loop: asyncio.AbstractEventLoop,
                                 daemon: DaemonDouble, client: MessageBus) -> None:
    ops = Operations(daemon, Authorizer())
    first = run(loop, start_dbus(ops, bus.address))
    run(loop, first.close())
    second = run(loop, start_dbus(ops, bus.address))
    try:
        assert call_as_root(loop, client, "GetRedaction") == Reply(None, ["safe"])
    finally:
        run(loop, second.close())
    assert not first.bus.connected


def test_policy_denies_other_interfaces_to_unprivileged_callers(service: DbusService,
                                                                bus: PrivateBus) -> None:
    reply = call_as_nobody(bus, "Anything", interface="dev.oisp.Sensor1.Other")
    assert reply.error == "org.freedesktop.DBus.Error.AccessDenied"


def test_policy_allows_peer_ping_to_unprivileged_callers(service: DbusService,
                                                         bus: PrivateBus) -> None:
    assert call_as_nobody(bus, "Ping", interface="org.freedesktop.DBus.Peer") == Reply(None, [])


# --- authorization per method, by uid -----------------------------------------------------------

def test_unprivileged_set_redaction_is_denied_naming_the_admin_group(
        service: DbusService, bus: PrivateBus, daemon: DaemonDouble) -> None:
    reply = call_as_nobody(bus, "SetRedaction", "s", "full")
    assert reply.error == ERR + "permission_denied"
    assert "'oisp-admin'" in reply.body[0]
    assert "uid %d" % NOBODY in reply.body[0]
    assert daemon.mode == "safe"


def test_unprivileged_generic_call_is_authorized_the_same_way(
        service: DbusService, bus: PrivateBus, daemon: DaemonDouble) -> None:
    reply = call_as_nobody(bus, "Call", "ss", "binary_paths.add", '{"path": "/opt/app/libssl.so"}')
    assert reply.error == ERR + "permission_denied"
    assert daemon.paths == []


def test_unprivileged_start_session_needs_the_user_group(service: DbusService,
                                                         bus: PrivateBus) -> None:
    reply = call_as_nobody(bus, "StartSession", "ss", "mine", "{}")
    assert reply.error == ERR + "permission_denied"
    assert "'oisp'" in reply.body[0]


def test_root_sets_redaction(service: DbusService, loop: asyncio.AbstractEventLoop,
                             client: MessageBus, daemon: DaemonDouble) -> None:
    assert call_as_root(loop, client, "SetRedaction", "s", "minimal") == Reply(None, ["minimal"])
    assert daemon.mode == "minimal"
    assert call_as_root(loop, client, "GetRedaction") == Reply(None, ["minimal"])


def test_status_works_for_anyone(service: DbusService, bus: PrivateBus,
                                 loop: asyncio.AbstractEventLoop, client: MessageBus) -> None:
    for reply in (call_as_nobody(bus, "Status"), call_as_root(loop, client, "Status")):
        assert reply.error is None
        status = json.loads(reply.body[0])
        assert status["version"] == __version__
        assert status["redaction"] == "safe"


def test_unprivileged_reads_binary_paths(service: DbusService, bus: PrivateBus,
                                         daemon: DaemonDouble) -> None:
    daemon.paths.append("/opt/app/libssl.so.3")
    assert call_as_nobody(bus, "ListBinaryPaths") == Reply(None, [["/opt/app/libssl.so.3"]])


# --- the methods --------------------------------------------------------------------------------

def test_binary_paths_typed_and_generic(service: DbusService, loop: asyncio.AbstractEventLoop,
                                        client: MessageBus) -> None:
    lib = "/opt/app/libssl.so.3"
    assert call_as_root(loop, client, "AddBinaryPath", "s", lib) == Reply(None, [[lib]])
    generic = call_as_root(loop, client, "Call", "ss", "binary_paths.list", "")
    assert generic.error is None and json.loads(generic.body[0]) == [lib]
    assert call_as_root(loop, client, "RemoveBinaryPath", "s", lib) == Reply(None, [[]])
    assert call_as_root(loop, client, "ListBinaryPaths") == Reply(None, [[]])


def test_sessions_start_list_stop(service: DbusService, loop: asyncio.AbstractEventLoop,
                                  client: MessageBus, daemon: DaemonDouble) -> None:
    started = call_as_root(loop, client, "StartSession", "ss", "audit",
                           '{"filters": {"types": ["ai.*"]}, "redaction": "minimal"}')
    assert started.error is None
    session = json.loads(started.body[0])
    assert (session["name"], session["owner_uid"], session["redaction"]) == ("audit", 0, "minimal")
    listed = json.loads(call_as_root(loop, client, "ListSessions").body[0])
    assert [s["name"] for s in listed] == ["audit"]
    assert call_as_root(loop, client, "StopSession", "s", "audit") == Reply(None, [True])
    assert daemon.sessions.list() == []
    missing = call_as_root(loop, client, "StopSession", "s", "audit")
    assert missing.error == ERR + "not_found"


def test_start_session_refuses_a_second_name_in_the_spec(
        service: DbusService, loop: asyncio.AbstractEventLoop, client: MessageBus) -> None:
    reply = call_as_root(loop, client, "StartSession", "ss", "alpha", '{"name": "beta"}')
    assert reply.error == ERR + "bad_request"
    assert "leave \"name\" out of spec_json" in reply.body[0]
    assert "alpha" not in reply.body[0] and "beta" not in reply.body[0]  # arguments not echoed


def test_reload(service: DbusService, loop: asyncio.AbstractEventLoop, client: MessageBus) -> None:
    assert call_as_root(loop, client, "Reload") == Reply(None, [True])


def test_invalid_argument_from_operations_is_passed_on(
        service: DbusService, loop: asyncio.AbstractEventLoop, client: MessageBus) -> None:
    reply = call_as_root(loop, client, "SetRedaction", "s", "loud")
    assert reply.error == ERR + "invalid_argument"
    assert "'loud'" in reply.body[0]


@pytest.mark.parametrize("op, args_json, code, words", [
    ("status", "{not json", "bad_request", "not valid JSON"),
    ("status", "[1, 2]", "bad_request", "must be a JSON object"),
    ("status", '{"x": NaN}', "bad_request", "not valid JSON"),
    ("tail", "{}", "bad_request", "oisp-ctl tail"),
    ("hello", "{}", "bad_request", "Unix socket"),
    ("explode", "{}", "unknown_op", "redaction.set"),
])
def test_call_refuses_bad_requests(service: DbusService, loop: asyncio.AbstractEventLoop,
                                   client: MessageBus, op: str, args_json: str, code: str,
                                   words: str) -> None:
    reply = call_as_root(loop, client, "Call", "ss", op, args_json)
    assert reply.error == ERR + code
    assert words in reply.body[0]


def test_wrong_signature_is_bad_request_and_the_service_keeps_serving(
        service: DbusService, loop: asyncio.AbstractEventLoop, client: MessageBus) -> None:
    reply = call_as_root(loop, client, "SetRedaction", "u", 7)
    assert reply.error == ERR + "bad_request"
    assert "SetRedaction takes (s mode)" in reply.body[0]
    assert call_as_root(loop, client, "GetRedaction") == Reply(None, ["safe"])


def test_an_operations_bug_is_an_internal_error(service: DbusService, daemon: DaemonDouble,
                                                loop: asyncio.AbstractEventLoop,
                                                client: MessageBus) -> None:
    daemon.reload_fails = True
    reply = call_as_root(loop, client, "Reload")
    assert reply.error == ERR + "internal"
    assert "RuntimeError" in reply.body[0]
    assert call_as_root(loop, client, "GetRedaction") == Reply(None, ["safe"])


def test_a_result_that_does_not_fit_the_signature_is_an_internal_error(
        service: DbusService, daemon: DaemonDouble, loop: asyncio.AbstractEventLoop,
        client: MessageBus) -> None:
    daemon.paths.append(None)  # type: ignore[arg-type]  # not a string: cannot travel as "as"
    reply = call_as_root(loop, client, "ListBinaryPaths")
    assert reply.error == ERR + "internal"
    daemon.paths.clear()
    assert call_as_root(loop, client, "ListBinaryPaths") == Reply(None, [[]])


def test_a_call_without_interface_field(service: DbusService, bus: PrivateBus,
                                        loop: asyncio.AbstractEventLoop, client: MessageBus,
                                        daemon: DaemonDouble) -> None:
    """Served through the same authorized path; the policy admits such calls from root only."""
    assert call_as_root(loop, client, "SetRedaction", "s", "full", interface=None) \
        == Reply(None, ["full"])
    denied = call_as_nobody(bus, "SetRedaction", "s", "minimal", interface=None)
    assert denied.error == "org.freedesktop.DBus.Error.AccessDenied"
    assert daemon.mode == "full"


def test_unknown_member_is_unknown_method(service: DbusService, loop: asyncio.AbstractEventLoop,
                                          client: MessageBus) -> None:
    reply = call_as_root(loop, client, "Explode")
    assert reply.error == "org.freedesktop.DBus.Error.UnknownMethod"


# --- signals, properties, introspection ---------------------------------------------------------

def test_session_signals_reach_a_subscriber(service: DbusService, bus: PrivateBus,
                                            loop: asyncio.AbstractEventLoop,
                                            client: MessageBus) -> None:
    async def watch() -> "asyncio.Queue[Message]":
        queue: "asyncio.Queue[Message]" = asyncio.Queue()
        listener = await MessageBus(bus_address=bus.address).connect()
        await listener.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=["type='signal',sender='%s',path='%s'" % (BUS_NAME, OBJECT_PATH)]))

        def on_message(msg: Message) -> bool:
            if msg.message_type == MessageType.SIGNAL:
                queue.put_nowait(msg)
            return False

        listener.add_message_handler(on_message)
        watchers.append(listener)
        return queue

    async def next_signal(queue: "asyncio.Queue[Message]", member: str) -> Message:
        while True:
            msg = await queue.get()
            if msg.member == member:
                return msg

    watchers: List[MessageBus] = []
    queue = run(loop, watch())
    try:
        assert call_as_root(loop, client, "StartSession", "ss", "sig", "{}").error is None
        started = run(loop, next_signal(queue, "SessionStarted"))
        # no session name, no owner: every local user receives the signals
        assert (started.interface, started.signature, started.body) == (INTERFACE, "", [])
        changed = run(loop, next_signal(queue, "PropertiesChanged"))
        assert changed.body[0] == INTERFACE
        assert changed.body[1]["ActiveSessions"].value == 1
        assert call_as_root(loop, client, "StopSession", "s", "sig").error is None
        stopped = run(loop, next_signal(queue, "SessionStopped"))
        assert (stopped.signature, stopped.body) == ("", [])
    finally:
        for watcher in watchers:
            watcher.disconnect()


def test_properties_are_readable_by_anyone(service: DbusService, bus: PrivateBus,
                                           daemon: DaemonDouble) -> None:
    daemon.events = 42
    reply = call_as_nobody(bus, "GetAll", "s", INTERFACE,
                           interface="org.freedesktop.DBus.Properties")
    assert reply == Reply(None, [{"Version": __version__, "EventsTotal": 42, "ActiveSessions": 0}])


def test_properties_values(service: DbusService, loop: asyncio.AbstractEventLoop,
                          client: MessageBus, daemon: DaemonDouble) -> None:
    daemon.events = 42
    reply = call_as_root(loop, client, "GetAll", "s", INTERFACE,
                         interface="org.freedesktop.DBus.Properties")
    assert reply.error is None
    values = {name: (variant.signature, variant.value) for name, variant in reply.body[0].items()}
    assert values == {"Version": ("s", __version__), "EventsTotal": ("t", 42),
                      "ActiveSessions": ("u", 0)}


def test_properties_are_read_only(service: DbusService, loop: asyncio.AbstractEventLoop,
                                  client: MessageBus) -> None:
    reply = call_as_root(loop, client, "Set", "ssv", INTERFACE, "Version", Variant("s", "9"),
                         interface="org.freedesktop.DBus.Properties")
    assert reply.error == "org.freedesktop.DBus.Error.PropertyReadOnly"


def test_introspection_describes_methods_signals_and_properties(
        service: DbusService, loop: asyncio.AbstractEventLoop, client: MessageBus) -> None:
    reply = call_as_root(loop, client, "Introspect",
                         interface="org.freedesktop.DBus.Introspectable")
    root = ET.fromstring(reply.body[0])
    iface = root.find("interface[@name='%s']" % INTERFACE)
    assert iface is not None

    def args(element: ET.Element) -> List[tuple]:
        return [(a.get("name"), a.get("type"), a.get("direction")) for a in element.findall("arg")]

    methods = {m.get("name"): args(m) for m in iface.findall("method")}
    assert methods["Call"] == [("op", "s", "in"), ("args_json", "s", "in"),
                               ("result_json", "s", "out")]
    assert methods["StopSession"] == [("name", "s", "in"), ("stopped", "b", "out")]
    assert set(methods) == {"Call", "Status", "StartSession", "StopSession", "ListSessions",
                            "AddBinaryPath", "RemoveBinaryPath", "ListBinaryPaths",
                            "GetRedaction", "SetRedaction", "Reload"}
    signals = {s.get("name"): [(n, t) for n, t, _ in args(s)] for s in iface.findall("signal")}
    assert signals == {"SessionStarted": [], "SessionStopped": []}
    props = {p.get("name"): (p.get("type"), p.get("access")) for p in iface.findall("property")}
    assert props == {"Version": ("s", "read"), "EventsTotal": ("t", "read"),
                     "ActiveSessions": ("u", "read")}


# --- the systemd and D-Bus files agree with the code --------------------------------------------

def _ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment]  # keys are case-sensitive
    parser.read(path)
    return parser


def test_activation_file_starts_the_systemd_unit() -> None:
    activation = _ini(REPO_ROOT / "systemd" / "dev.oisp.Sensor1.service")["D-BUS Service"]
    assert activation["Name"] == BUS_NAME
    assert activation["User"] == "root"
    assert activation["SystemdService"] == "oisp-sensor.service"
    unit = _ini(REPO_ROOT / "systemd" / "oisp-sensor.service")["Service"]
    assert unit["BusName"] == BUS_NAME
    assert unit["Type"] == "notify"


# --- staying on the bus -------------------------------------------------------------------------

def test_peer_get_machine_id_replies(service: DbusService, bus: PrivateBus) -> None:
    reply = call_as_nobody(bus, "GetMachineId", interface="org.freedesktop.DBus.Peer")
    assert reply == Reply(None, [Path("/etc/machine-id").read_text().strip()])


def test_calls_past_the_per_sender_cap_are_refused_at_once(service: DbusService,
                                                           loop: asyncio.AbstractEventLoop,
                                                           client: MessageBus) -> None:
    async def burst() -> List[Message]:
        calls = [client.call(_method_call("Status")) for _ in range(60)]
        return list(await asyncio.gather(*calls))

    replies = run(loop, burst())
    refused = [r for r in replies if r.error_name == ERR + "limit_exceeded"]
    assert refused and "calls in flight" in refused[0].body[0]
    assert len(replies) - len(refused) >= 16
    assert service.state()["refused_calls"] == len(refused)


def test_a_restarted_bus_is_reconnected_and_the_name_owned_again(
        bus: PrivateBus, loop: asyncio.AbstractEventLoop, daemon: DaemonDouble) -> None:
    service = run(loop, start_dbus(Operations(daemon, Authorizer()), bus.address))
    try:
        first = service.bus
        bus.restart()
        deadline = time.monotonic() + TIMEOUT_S
        while service.state()["reconnects"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        state = service.state()
        assert state["connected"] and state["disconnects"] == 1 and state["reconnects"] == 1
        assert service.bus is not first
        assert call_as_nobody(bus, "GetRedaction") == Reply(None, ["safe"])
    finally:
        run(loop, service.close())
