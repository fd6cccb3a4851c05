"""The D-Bus transport of the control plane: name dev.oisp.Sensor1 on the system bus.

A thin layer over `Operations`, like the Unix socket server: every method becomes one
`ops.call(caller, op, args)` and every refusal one D-Bus error named
`dev.oisp.Sensor1.Error.<protocol error code>` carrying the protocol's message. Captured content
never travels on the bus: there is no tail here, and the signals announce only session changes.

Authorization needs the caller's uid, which dbus-next's ServiceInterface methods never see. So
method calls for the Manager interface are taken by a message handler (dbus-next runs those before
its own dispatch), which asks the bus daemon for the sender's uid (GetConnectionUnixUser) and runs
the operation in a worker thread. The exported ServiceInterface declares no callable methods, so
no call can reach the operations without that check; it exists for introspection, the read-only
properties and the signals.

The bus policy (systemd/dev.oisp.Sensor1.conf) lets only root own the name and everyone send to
it; who may do what is decided here, per call, by the authz module.
"""
from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from dbus_next import BusType, DBusError, Message, MessageFlag, MessageType, NameFlag
from dbus_next import PropertyAccess, RequestNameReply
from dbus_next import introspection as intr
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, dbus_property, signal

from oisp_ctl import protocol
from oisp_daemon.control import authz

log = logging.getLogger(__name__)

BUS_NAME = "dev.oisp.Sensor1"
OBJECT_PATH = "/dev/oisp/Sensor1"
INTERFACE = "dev.oisp.Sensor1.Manager"
ERROR_PREFIX = "dev.oisp.Sensor1.Error."
SYSTEM_BUS = "system"

# Operations that are not offered on the bus: hello negotiates the socket protocol (on D-Bus the
# interface name carries the version), tail streams captured content, which the bus never carries.
_NOT_ON_BUS = {
    protocol.OP_HELLO: "hello belongs to the Unix socket protocol; on D-Bus the interface name "
                       "(%s) carries the version and the Version property the daemon's" % INTERFACE,
    protocol.OP_TAIL: "tail is not available on D-Bus because captured content is never sent on "
                      "the bus; use `oisp-ctl tail`, which reads the Unix socket",
}
BUS_OPS = frozenset(protocol.OPS - set(_NOT_ON_BUS))

# Worker threads for Operations.call, which may block for seconds (reload, attaching uprobes).
_WORKERS = 4
_NAME_TIMEOUT_S = 5.0

_DBUS = dict(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
             interface="org.freedesktop.DBus")
_ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"


class DbusStartError(RuntimeError):
    """The service could not start; the message names the cause and the fix."""


def error_name(code: str) -> str:
    """The D-Bus error name for a protocol error code, e.g. dev.oisp.Sensor1.Error.bad_request."""
    return ERROR_PREFIX + code


def _bad_request(text: str) -> protocol.ProtocolError:
    return protocol.ProtocolError(protocol.E_BAD_REQUEST, text)


def _json_object(text: str, what: str) -> Dict[str, Any]:
    """A JSON object argument; the empty string means {} so that busctl users may omit it."""
    if text == "":
        return {}
    try:
        value = protocol.loads(text)  # strict, depth-bounded, no lone surrogates
    except ValueError as exc:
        raise _bad_request("%s is not valid JSON (%s); pass a JSON object such as '{}'"
                           % (what, exc)) from None
    if not isinstance(value, dict):
        raise _bad_request("%s must be a JSON object, got a JSON %s" % (what, type(value).__name__))
    return value


def _json_text(result: Any) -> str:
    # ASCII escapes keep any string (even one with lone surrogates) valid UTF-8 on the wire.
    return json.dumps(result, separators=(",", ":"), allow_nan=False)


# --- the methods: D-Bus arguments -> (op, args), and the op's result -> D-Bus reply body ---------

Body = List[Any]
Args = Dict[str, Any]


class _Method(NamedTuple):
    op: Optional[str]                     # None: the op comes from the arguments (Call)
    in_args: Tuple[Tuple[str, str], ...]  # (name, D-Bus signature)
    out_args: Tuple[Tuple[str, str], ...]
    args: Callable[[Body], Args]          # the request's args from the message body
    reply: Callable[[Any, Args], Body]    # the reply body from the op's result and args

    @property
    def in_signature(self) -> str:
        return "".join(sig for _, sig in self.in_args)

    @property
    def out_signature(self) -> str:
        return "".join(sig for _, sig in self.out_args)

    def introspection(self, name: str) -> intr.Method:
        return intr.Method(
            name,
            in_args=[intr.Arg(sig, intr.ArgDirection.IN, arg) for arg, sig in self.in_args],
            out_args=[intr.Arg(sig, intr.ArgDirection.OUT, arg) for arg, sig in self.out_args],
        )


def _no_args(body: Body) -> Args:
    return {}


def _call_args(body: Body) -> Args:
    return _json_object(body[1], "args_json")


def _session_spec(body: Body) -> Args:
    name, spec = body[0], _json_object(body[1], "spec_json")
    if spec.get("name", name) != name:
        raise _bad_request("spec_json names session %r but the name argument is %r; leave \"name\" "
                           "out of spec_json" % (spec["name"], name))
    spec["name"] = name
    return spec


def _json_reply(result: Any, args: Args) -> Body:
    return [_json_text(result)]


def _done_reply(result: Any, args: Args) -> Body:
    return [True]  # a refusal would have raised


def _paths_reply(result: Any, args: Args) -> Body:
    return [list(result)]


def _mode_reply(result: Any, args: Args) -> Body:
    return [result["mode"]]


def _set_mode_reply(result: Any, args: Args) -> Body:
    # The mode now in effect: the result's when it reports one, else the accepted request's.
    if isinstance(result, dict) and isinstance(result.get("mode"), str):
        return [result["mode"]]
    return [args["mode"]]


def _reload_reply(result: Any, args: Args) -> Body:
    return [bool(result["reloaded"])]


def _one(key: str) -> Callable[[Body], Args]:
    return lambda body: {key: body[0]}


_S = "s"
_METHODS: Dict[str, _Method] = {
    "Call": _Method(None, (("op", _S), ("args_json", _S)), (("result_json", _S),),
                    _call_args, _json_reply),
    "Status": _Method(protocol.OP_STATUS, (), (("status_json", _S),), _no_args, _json_reply),
    "StartSession": _Method(protocol.OP_SESSION_START, (("name", _S), ("spec_json", _S)),
                            (("session_json", _S),), _session_spec, _json_reply),
    "StopSession": _Method(protocol.OP_SESSION_STOP, (("name", _S),), (("stopped", "b"),),
                           _one("name"), _done_reply),
    "ListSessions": _Method(protocol.OP_SESSION_LIST, (), (("sessions_json", _S),), _no_args,
                            _json_reply),
    "AddBinaryPath": _Method(protocol.OP_BINARY_PATHS_ADD, (("path", _S),), (("paths", "as"),),
                             _one("path"), _paths_reply),
    "RemoveBinaryPath": _Method(protocol.OP_BINARY_PATHS_REMOVE, (("path", _S),),
                                (("paths", "as"),), _one("path"), _paths_reply),
    "ListBinaryPaths": _Method(protocol.OP_BINARY_PATHS_LIST, (), (("paths", "as"),), _no_args,
                               _paths_reply),
    "GetRedaction": _Method(protocol.OP_REDACTION_GET, (), (("mode", _S),), _no_args, _mode_reply),
    "SetRedaction": _Method(protocol.OP_REDACTION_SET, (("mode", _S),), (("mode", _S),),
                            _one("mode"), _set_mode_reply),
    "Reload": _Method(protocol.OP_RELOAD, (), (("reloaded", "b"),), _no_args, _reload_reply),
}

_SIGNALS = ("SessionStarted", "SessionStopped")


def _request(name: str, method: _Method, msg: Message) -> Tuple[str, Args]:
    """(op, args) for a call of `name`; ProtocolError for a wrong signature, bad JSON or op."""
    if msg.signature != method.in_signature:
        raise _bad_request("%s takes (%s), signature %r, but was called with signature %r"
                           % (name, ", ".join("%s %s" % (sig, arg) for arg, sig in method.in_args),
                              method.in_signature, msg.signature))
    args = method.args(msg.body)
    if method.op is not None:
        return method.op, args
    op = msg.body[0]
    if op in _NOT_ON_BUS:
        raise _bad_request(_NOT_ON_BUS[op])
    if op not in BUS_OPS:
        raise protocol.ProtocolError(protocol.E_UNKNOWN_OP, "unknown operation %r; operations on "
                                     "D-Bus: %s" % (op, ", ".join(sorted(BUS_OPS))))
    return op, args


class _ManagerInterface(ServiceInterface):
    """The exported Manager interface: properties and signals; its methods are introspection only."""

    def __init__(self, ops: Any) -> None:
        super().__init__(INTERFACE)
        self._ops = ops

    @dbus_property(access=PropertyAccess.READ, name="Version")
    def version(self) -> "s":
        return str(self._ops.version)

    @dbus_property(access=PropertyAccess.READ, name="EventsTotal")
    def events_total(self) -> "t":
        return int(self._ops.counters()["events"])

    @dbus_property(access=PropertyAccess.READ, name="ActiveSessions")
    def active_sessions(self) -> "u":
        return int(self._ops.counters()["sessions"])

    @signal(name="SessionStarted")
    def session_started(self, name: str, owner_uid: int) -> "su":
        return [name, owner_uid]

    @signal(name="SessionStopped")
    def session_stopped(self, name: str, owner_uid: int) -> "su":
        return [name, owner_uid]

    def introspect(self) -> intr.Interface:
        """The interface with the handler-dispatched methods and named signal arguments."""
        iface = super().introspect()
        iface.methods = [method.introspection(name) for name, method in _METHODS.items()]
        session_args = [intr.Arg("s", intr.ArgDirection.OUT, "name"),
                        intr.Arg("u", intr.ArgDirection.OUT, "owner_uid")]
        iface.signals = [intr.Signal(name, list(session_args)) for name in _SIGNALS]
        return iface


class DbusService:
    """The running D-Bus service; create it with `start_dbus`, stop it with `await close()`."""

    def __init__(self, ops: Any, bus: MessageBus, address: str) -> None:
        self.ops = ops
        self.bus = bus
        self.address = address
        self._loop = asyncio.get_running_loop()
        self._iface = _ManagerInterface(ops)
        self._executor = ThreadPoolExecutor(_WORKERS, thread_name_prefix="oisp-dbus")
        self._tasks: Set["asyncio.Task[None]"] = set()  # calls being served
        self._watcher: Optional["asyncio.Task[None]"] = None
        self._closed = False

    async def _start(self) -> None:
        self.bus.export(OBJECT_PATH, self._iface)
        self.bus.add_message_handler(self._on_message)
        self.ops.add_state_listener(self._on_state)
        await self._request_name()
        # Not in _tasks: close() must not cancel it, which would cancel the bus's own
        # disconnect future that close() then waits for.
        self._watcher = self._loop.create_task(self._watch_connection())
        log.info("D-Bus: %s owned on %s", BUS_NAME, _describe(self.address))

    async def _request_name(self) -> None:
        try:
            reply = await self.bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        except DBusError as exc:
            if exc.type == _ACCESS_DENIED:
                raise DbusStartError(
                    "the D-Bus policy does not allow this process to own %s (%s): install "
                    "systemd/dev.oisp.Sensor1.conf as /usr/share/dbus-1/system.d/%s.conf (the "
                    "package does) and run oisp-sensor as root" % (BUS_NAME, exc.text, BUS_NAME)
                ) from None
            raise DbusStartError("could not request the D-Bus name %s: %s %s"
                                 % (BUS_NAME, exc.type, exc.text)) from None
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise DbusStartError(
                "the D-Bus name %s is already owned by %s: is another oisp-sensor running? Stop "
                "it, or set dbus.enabled: false in the configuration" % (BUS_NAME,
                                                                         await self._owner()))

    async def _owner(self) -> str:
        """The current owner of BUS_NAME for the error message: its unique name and pid if known."""
        owner = await self._bus_call("GetNameOwner", BUS_NAME)
        if owner is None:
            return "another connection"
        pid = await self._bus_call("GetConnectionUnixProcessID", owner)
        return "%s (pid %s)" % (owner, pid) if pid is not None else owner

    async def _bus_call(self, member: str, arg: str) -> Any:
        """A one-string-argument call to the bus daemon; None if it answered with an error."""
        reply = await self.bus.call(Message(member=member, signature="s", body=[arg], **_DBUS))
        if reply is None or reply.message_type != MessageType.METHOD_RETURN:
            return None
        return reply.body[0]

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_connection(self) -> None:
        try:
            await self.bus.wait_for_disconnect()
        except Exception as exc:
            if not self._closed:
                log.error("D-Bus: lost the bus connection (%s); %s is gone until oisp-sensor "
                          "restarts", exc, BUS_NAME)
            return
        if not self._closed:
            log.error("D-Bus: the bus closed the connection; %s is gone until oisp-sensor "
                      "restarts", BUS_NAME)

    # --- method calls -----------------------------------------------------------------------

    def _on_message(self, msg: Message) -> bool:
        """Take method calls of the Manager interface (also ones without an interface field)."""
        if msg.message_type != MessageType.METHOD_CALL or msg.path != OBJECT_PATH:
            return False
        if msg.interface not in (INTERFACE, None) or msg.member not in _METHODS:
            return False
        self._spawn(self._serve(msg))
        return True

    async def _serve(self, msg: Message) -> None:
        method = _METHODS[msg.member]
        try:
            op, args = _request(msg.member, method, msg)
            uid = await self._sender_uid(msg.sender)
            result = await self._loop.run_in_executor(self._executor, self._run, uid, op, args)
            reply = Message.new_method_return(msg, method.out_signature, method.reply(result, args))
        except protocol.ProtocolError as exc:
            reply = Message.new_error(msg, error_name(exc.code), exc.message)
        except Exception as exc:
            log.exception("D-Bus: %s failed", msg.member)
            reply = _internal_error(msg, exc)
        self._send(msg, reply)

    async def _sender_uid(self, sender: Optional[str]) -> int:
        uid = None if sender is None else await self._bus_call("GetConnectionUnixUser", sender)
        if not isinstance(uid, int):
            raise authz.PermissionDenied("permission denied: the bus could not tell which user is "
                                         "calling (sender %s); call through the system bus"
                                         % sender)
        return uid

    def _run(self, uid: int, op: str, args: Args) -> Any:
        """Worker thread: identify the caller (NSS lookups may block) and run the operation."""
        return self.ops.call(authz.caller_from_uid(uid), op, args)

    def _send(self, msg: Message, reply: Message) -> None:
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED or not self.bus.connected:
            return
        try:
            self.bus.send(reply)  # marshals now: a body that does not fit the signature raises
        except Exception as exc:
            log.exception("D-Bus: could not send the reply to %s", msg.member)
            self.bus.send(_internal_error(msg, exc))

    # --- signals ----------------------------------------------------------------------------

    def _on_state(self, kind: str, info: Dict[str, Any]) -> None:
        """Operations' state listener; runs on any thread, so hop onto the loop."""
        if self._closed:
            return
        try:
            self._loop.call_soon_threadsafe(self._emit, kind, info)
        except RuntimeError:
            pass  # the loop is closed: the daemon is shutting down

    def _emit(self, kind: str, info: Dict[str, Any]) -> None:
        if self._closed or not self.bus.connected or kind not in _SIGNALS:
            return
        try:
            emit = self._iface.session_started if kind == "SessionStarted" \
                else self._iface.session_stopped
            emit(str(info["name"]), int(info["owner_uid"]))
            self._iface.emit_properties_changed(
                {"ActiveSessions": int(self.ops.counters()["sessions"])})
        except Exception:
            log.exception("D-Bus: could not emit %s for %r", kind, info)

    # --- shutdown ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Release the name, disconnect and stop serving; calls in flight get no reply."""
        if self._closed:
            return
        self._closed = True
        self.bus.remove_message_handler(self._on_message)
        for task in list(self._tasks):
            task.cancel()
        if self.bus.connected:
            try:
                await asyncio.wait_for(self.bus.release_name(BUS_NAME), _NAME_TIMEOUT_S)
            except Exception as exc:
                log.debug("D-Bus: releasing %s failed (%s); disconnecting drops it", BUS_NAME, exc)
            self.bus.disconnect()
            try:
                await self.bus.wait_for_disconnect()
            except Exception as exc:
                log.debug("D-Bus: disconnect ended with %s", exc)
        if self._watcher is not None:
            await self._watcher
        self._executor.shutdown(wait=False, cancel_futures=True)


def _describe(address: str) -> str:
    return "the system bus" if address == SYSTEM_BUS else "the D-Bus at %s" % address


def _internal_error(msg: Message, exc: BaseException) -> Message:
    return Message.new_error(msg, error_name(protocol.E_INTERNAL),
                             "internal error in oisp-sensor while serving %s (%s); the daemon's "
                             "journal has the details" % (msg.member, type(exc).__name__))


async def start_dbus(ops: Any, address: str = SYSTEM_BUS) -> DbusService:
    """Connect, export /dev/oisp/Sensor1 and own dev.oisp.Sensor1; DbusStartError names the fix.

    `address` is "system" for the system bus, else a D-Bus address such as "unix:path=/tmp/bus".
    """
    where = _describe(address)
    try:
        bus = MessageBus(bus_type=BusType.SYSTEM) if address == SYSTEM_BUS \
            else MessageBus(bus_address=address)
        await bus.connect()
    except Exception as exc:
        raise DbusStartError("cannot connect to %s (%s: %s): is dbus running? Set dbus.address, or "
                             "dbus.enabled: false to run without D-Bus"
                             % (where, type(exc).__name__, exc)) from None
    service = DbusService(ops, bus, address)
    try:
        await service._start()
    except BaseException:
        await service.close()
        raise
    return service
