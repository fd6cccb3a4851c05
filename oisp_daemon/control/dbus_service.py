"""The D-Bus transport of the control plane: name dev.oisp.Sensor1 on the system bus.

A thin layer over `Operations`, like the Unix socket server: every method becomes one
`ops.call(caller, op, args)` and every refusal one D-Bus error named
`dev.oisp.Sensor1.Error.<protocol error code>` carrying the protocol's message. Captured content
never travels on the bus: there is no tail here, and the signals announce only that the set of
sessions changed, without names or owners (ListSessions needs the group).

Authorization needs the caller's credentials, which dbus-next's ServiceInterface methods never
see. So method calls for the Manager interface are taken by a message handler (dbus-next runs
those before its own dispatch), which asks the bus daemon for the sender's live credentials
(GetConnectionCredentials: uid, groups, pid) and runs the operation in a worker thread. The
exported ServiceInterface declares no callable methods, so no call can reach the operations
without that check; it exists for introspection, the read-only properties and the signals.

No caller can knock the service off the bus:

- calls in flight are capped per sender and per uid (root exempt); past a cap the call is refused
  at once with dev.oisp.Sensor1.Error.limit_exceeded;
- string arguments are capped in length, JSON arguments also in nesting depth, before decoding;
- error messages never echo arguments (and operations' messages are cut to a bounded length);
- a full socket buffer towards the bus daemon (EAGAIN) waits for the socket to drain: dbus-next
  0.2.3 treats it as a fatal error and leaves a connection that still owns the name but reads
  nothing (dbus-fast 1.84, its fork in Debian, does the same), so `_Bus` replaces its writer;
- a lost connection is closed (so the bus drops the name and anything queued for it), and the
  service reconnects with back-off and owns the name again; `state()` says it is down meanwhile,
  for `status` and the sd_notify STATUS= line.

Peer.Ping and Peer.GetMachineId are answered here (dbus-next forwards GetMachineId to the bus
daemon, which the system bus policy refuses, and then never replies).

The bus policy (systemd/dev.oisp.Sensor1.conf) lets only root own the name and everyone send to
it; who may do what is decided here, per call, by the authz module.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from dbus_next import BusType, DBusError, Message, MessageFlag, MessageType, NameFlag
from dbus_next import PropertyAccess, RequestNameReply
from dbus_next import introspection as intr
from dbus_next.aio import MessageBus
from dbus_next.aio.message_bus import _MessageWriter
from dbus_next.service import ServiceInterface, dbus_property

from oisp_ctl import protocol
from oisp_daemon.control import authz

log = logging.getLogger(__name__)

BUS_NAME = "dev.oisp.Sensor1"
OBJECT_PATH = "/dev/oisp/Sensor1"
INTERFACE = "dev.oisp.Sensor1.Manager"
ERROR_PREFIX = "dev.oisp.Sensor1.Error."
SYSTEM_BUS = "system"
PEER_INTERFACE = "org.freedesktop.DBus.Peer"

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

# Limits. Calls in flight: per sender connection, and per uid over all its connections (root
# is not limited: it can stop the daemon anyway, and must always get through).
MAX_CALLS_PER_SENDER = 16
MAX_CALLS_PER_UID = 32
# Lookups of callers' credentials waiting for the bus daemon at once: it refuses a connection
# more than max_replies_per_connection (128 on the system bus) pending calls.
_MAX_LOOKUPS = 32
_CREDENTIALS_CACHE = 1024  # unique names; a name's credentials never change
# Argument sizes, in characters: JSON arguments, and every other string (a path, a name, a mode).
MAX_JSON_CHARS = 256 * 1024
MAX_STRING_CHARS = 4096
MAX_JSON_DEPTH = protocol.MAX_REQUEST_DEPTH - 1  # as protocol.loads for the socket's args
# Error messages passed on from the operations are cut to this many characters.
MAX_ERROR_CHARS = 512

# Reconnection back-off after the bus connection is lost.
_RECONNECT_FIRST_S = 0.2
_RECONNECT_MAX_S = 30.0

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")

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


# A JSON string (the unrolled form, linear time) or a bracket: what the depth check looks at.
_JSON_NESTING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _json_depth_over(text: str, limit: int) -> bool:
    """Whether arrays and objects in `text` nest deeper than `limit`, checked without decoding."""
    depth = 0
    for match in _JSON_NESTING.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth -= 1
    return False


def _json_object(text: str, what: str) -> Dict[str, Any]:
    """A JSON object argument; the empty string means {} so that busctl users may omit it."""
    if text == "":
        return {}
    if _json_depth_over(text, MAX_JSON_DEPTH):
        raise protocol.ProtocolError(protocol.E_INVALID_ARGUMENT, "%s nests arrays and objects "
                                     "deeper than %d levels" % (what, MAX_JSON_DEPTH))
    try:
        value = protocol.loads(text)  # strict, depth-bounded, no lone surrogates
    except ValueError as exc:
        # the message names a position or the problem, never the text
        raise _bad_request("%s is not valid JSON (%s); pass a JSON object such as '{}'"
                           % (what, str(exc)[:200])) from None
    if not isinstance(value, dict):
        raise _bad_request("%s must be a JSON object, got a JSON %s" % (what, type(value).__name__))
    return value


def _json_text(result: Any) -> str:
    # ASCII escapes keep any string (even one with lone surrogates) valid UTF-8 on the wire.
    return json.dumps(result, separators=(",", ":"), allow_nan=False)


def _bounded(text: str) -> str:
    """An error message cut to MAX_ERROR_CHARS: a long argument quoted in it is not sent back."""
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return text[:MAX_ERROR_CHARS] + "... (%d more characters)" % (len(text) - MAX_ERROR_CHARS)


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
        raise _bad_request("spec_json names a session other than the name argument; leave "
                           "\"name\" out of spec_json")
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

# Bare signals: that the set of sessions changed; ActiveSessions (PropertiesChanged) has the count.
_SIGNALS = ("SessionStarted", "SessionStopped")


def _check_sizes(name: str, method: _Method, body: Body) -> None:
    """Refuse over-long string arguments, naming the argument and its length, never its content."""
    for (arg, _), value in zip(method.in_args, body):
        limit = MAX_JSON_CHARS if arg.endswith("_json") else MAX_STRING_CHARS
        if isinstance(value, str) and len(value) > limit:
            raise protocol.ProtocolError(
                protocol.E_INVALID_ARGUMENT, "%s: argument %s has %d characters, more than the "
                "limit of %d" % (name, arg, len(value), limit))


def _request(name: str, method: _Method, msg: Message) -> Tuple[str, Args]:
    """(op, args) for a call of `name`; ProtocolError for a wrong signature, size, JSON or op."""
    if msg.signature != method.in_signature:
        raise _bad_request("%s takes (%s), signature %r, but was called with signature %r"
                           % (name, ", ".join("%s %s" % (sig, arg) for arg, sig in method.in_args),
                              method.in_signature, msg.signature))
    _check_sizes(name, method, msg.body)
    args = method.args(msg.body)
    if method.op is not None:
        return method.op, args
    op = msg.body[0]
    if op in _NOT_ON_BUS:
        raise _bad_request(_NOT_ON_BUS[op])
    if op not in BUS_OPS:
        raise protocol.ProtocolError(protocol.E_UNKNOWN_OP, "unknown operation; operations on "
                                     "D-Bus: %s" % ", ".join(sorted(BUS_OPS)))
    return op, args


def _machine_id() -> Optional[str]:
    for path in _MACHINE_ID_FILES:
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if re.fullmatch(r"[0-9a-f]{32}", text):
            return text
    return None


class _Writer(_MessageWriter):
    """dbus-next's writer, except that a full socket buffer (EAGAIN) waits instead of failing.

    dbus-next 0.2.3 (unmaintained; Debian's python3-dbus-next) sends queued messages in a loop
    and takes BlockingIOError for a broken connection: the bus object then stops reading while
    its socket stays open and keeps owning the name. Here the message being written stays
    queued and the writer waits for the socket to be writable again. The service sends no file
    descriptors, so only plain send() is needed.
    """

    def write_callback(self) -> None:
        try:
            while True:
                if self.buf is None:
                    if self.messages.qsize() == 0:
                        self.loop.remove_writer(self.fd)
                        return
                    buf, _fds, fut = self.messages.get_nowait()
                    self.buf, self.offset, self.fut = memoryview(buf), 0, fut
                try:
                    self.offset += self.sock.send(self.buf[self.offset:])
                except (BlockingIOError, InterruptedError):
                    self.loop.add_writer(self.fd, self.write_callback)
                    return
                if self.offset < len(self.buf):
                    return  # partly written: called again when the socket is writable
                self.buf = None
                if self.fut is not None and not self.fut.done():
                    self.fut.set_result(None)
        except Exception as exc:
            if self.fut is not None and not self.fut.done():
                self.fut.set_exception(exc)
            self.bus._finalize(exc)


class _Bus(MessageBus):
    """A dbus-next connection with the EAGAIN-tolerant writer and a way to close its socket."""

    def __init__(self, address: str) -> None:
        if address == SYSTEM_BUS:
            super().__init__(bus_type=BusType.SYSTEM)
        else:
            super().__init__(bus_address=address)
        self._writer = _Writer(self)

    def close_socket(self) -> None:
        """Close the socket for good: the bus daemon then drops our name and what it queued.

        The loop stops watching the descriptor first (finalizing the bus if that has not
        happened), so that a later socket given the same number is not mistaken for this one.
        """
        if not self._disconnected:
            self._finalize(None)
        for closable in (self._stream, self._sock):
            try:
                closable.close()
            except OSError:
                pass


def _ignore_result(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a failed send shows as a lost connection instead


class _ManagerInterface(ServiceInterface):
    """The exported Manager interface: properties; its methods and signals are declared in
    `introspect` (the methods are served by DbusService's handler, the signals sent by it)."""

    def __init__(self, ops: Any) -> None:
        super().__init__(INTERFACE)
        self._ops = ops

    @dbus_property(access=PropertyAccess.READ, name="Version")
    def version(self) -> "s":
        return str(self._ops.version)

    @dbus_property(access=PropertyAccess.READ, name="EventsTotal")
    def events_total(self) -> "t":
        return int(self._ops.counters().get("events", 0))  # none before capture runs

    @dbus_property(access=PropertyAccess.READ, name="ActiveSessions")
    def active_sessions(self) -> "u":
        return int(self._ops.counters()["sessions"])

    def introspect(self) -> intr.Interface:
        """The interface with the handler-dispatched methods and the bare signals."""
        iface = super().introspect()
        iface.methods = [method.introspection(name) for name, method in _METHODS.items()]
        iface.signals = [intr.Signal(name, []) for name in _SIGNALS]
        return iface


class DbusService:
    """The running D-Bus service; create it with `start_dbus`, stop it with `await close()`."""

    def __init__(self, ops: Any, address: str) -> None:
        self.ops = ops
        self.address = address
        self.bus: Optional[_Bus] = None
        self._loop = asyncio.get_running_loop()
        self._iface = _ManagerInterface(ops)
        self._executor = ThreadPoolExecutor(_WORKERS, thread_name_prefix="oisp-dbus")
        self._tasks: Set["asyncio.Task[None]"] = set()  # calls being served
        self._watcher: Optional["asyncio.Task[None]"] = None
        self._closed = False
        self._generation = 0  # one per connection: unique names restart with a new bus daemon
        self._per_sender: Dict[Tuple[int, str], int] = collections.Counter()
        self._per_uid: Dict[Tuple[int, int], int] = collections.Counter()
        self._credentials_cache: "collections.OrderedDict[Tuple[int, str], asyncio.Future[Any]]" \
            = collections.OrderedDict()
        self._lookups = asyncio.Semaphore(_MAX_LOOKUPS)
        self._machine_id = _machine_id()
        # for state(): status and the sd_notify STATUS= line
        self.connected = False
        self.down_since: Optional[float] = None
        self.disconnects = 0
        self.reconnects = 0
        self.refused_calls = 0

    # --- connection -------------------------------------------------------------------------

    async def _connect(self) -> None:
        """Connect, export, take method calls and own the name; DbusStartError names the fix."""
        bus: Optional[_Bus] = None
        try:
            bus = _Bus(self.address)  # connects the socket already
            await bus.connect()
        except Exception as exc:
            if bus is not None:
                bus.close_socket()
            raise DbusStartError("cannot connect to %s (%s: %s): is dbus running? Set "
                                 "dbus.address, or dbus.enabled: false to run without D-Bus"
                                 % (_describe(self.address), type(exc).__name__, exc)) from None
        self._generation += 1
        generation = self._generation
        self._credentials_cache.clear()
        bus.export(OBJECT_PATH, self._iface)
        bus.add_message_handler(lambda msg: self._on_message(bus, generation, msg))
        try:
            await self._request_name(bus)
        except BaseException:
            bus.disconnect()
            bus.close_socket()
            raise
        self.bus = bus
        self.connected = True
        self.down_since = None

    async def _start(self) -> None:
        await self._connect()
        self.ops.add_state_listener(self._on_state)
        self._watcher = self._loop.create_task(self._keep_connected())
        log.info("D-Bus: %s owned on %s", BUS_NAME, _describe(self.address))

    async def _request_name(self, bus: _Bus) -> None:
        try:
            reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
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
                                                                         await self._owner(bus)))

    async def _owner(self, bus: _Bus) -> str:
        """The current owner of BUS_NAME for the error message: its unique name and pid if known."""
        owner = await _bus_call(bus, "GetNameOwner", BUS_NAME)
        if owner is None:
            return "another connection"
        pid = await _bus_call(bus, "GetConnectionUnixProcessID", owner)
        return "%s (pid %s)" % (owner, pid) if pid is not None else owner

    async def _keep_connected(self) -> None:
        """Watch the connection; when it is lost, close it, then reconnect with back-off."""
        while not self._closed:
            bus = self.bus
            assert bus is not None
            waiter = asyncio.ensure_future(bus.wait_for_disconnect())
            waiter.add_done_callback(_ignore_result)
            try:
                await asyncio.shield(waiter)
                why = "the bus closed the connection"
            except asyncio.CancelledError:
                return
            except Exception as exc:
                why = "%s: %s" % (type(exc).__name__, exc)
            if self._closed:
                return
            self._lost(bus, why)
            if not await self._reconnect():
                return

    def _lost(self, bus: _Bus, why: str) -> None:
        self.connected = False
        self.down_since = time.time()
        self.disconnects += 1
        bus.close_socket()
        log.error("D-Bus: lost the connection to %s (%s); %s is off the bus until it reconnects",
                  _describe(self.address), why, BUS_NAME)

    async def _reconnect(self) -> bool:
        """Reconnect until it works (True) or the service closes (False)."""
        delay = _RECONNECT_FIRST_S
        attempts = 0
        while not self._closed:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                return False
            attempts += 1
            try:
                await self._connect()
            except asyncio.CancelledError:
                return False
            except Exception as exc:
                if attempts == 1 or delay >= _RECONNECT_MAX_S:
                    log.warning("D-Bus: reconnecting failed (%s); trying again, at most every "
                                "%.0f s", exc, _RECONNECT_MAX_S)
                delay = min(delay * 2, _RECONNECT_MAX_S)
                continue
            if self._closed:  # close() came while connecting
                return False
            self.reconnects += 1
            log.info("D-Bus: reconnected; %s owned again on %s", BUS_NAME,
                     _describe(self.address))
            return True
        return False

    def state(self) -> Dict[str, Any]:
        """The bus connection for status: up or down (since when), and its counters."""
        return {
            "bus": _describe(self.address),
            "name": BUS_NAME,
            "connected": self.connected,
            "down_since": self.down_since,
            "disconnects": self.disconnects,
            "reconnects": self.reconnects,
            "refused_calls": self.refused_calls,
        }

    # --- method calls -----------------------------------------------------------------------

    def _on_message(self, bus: _Bus, generation: int, msg: Message) -> bool:
        """Take Peer calls and method calls of the Manager interface (also without interface)."""
        if msg.message_type != MessageType.METHOD_CALL:
            return False
        if msg.interface == PEER_INTERFACE:
            return self._peer(bus, msg)
        if msg.path != OBJECT_PATH:
            return False
        if msg.interface not in (INTERFACE, None) or msg.member not in _METHODS:
            return False
        key = (generation, msg.sender or "")
        if self._per_sender[key] >= MAX_CALLS_PER_SENDER:
            self._refuse(bus, msg, "this connection has %d calls in flight, the limit; wait for "
                                   "their replies" % MAX_CALLS_PER_SENDER)
            return True
        self._per_sender[key] += 1
        task = self._loop.create_task(self._serve(bus, generation, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _peer(self, bus: _Bus, msg: Message) -> bool:
        if msg.member == "Ping" and msg.signature == "":
            self._send(bus, msg, Message.new_method_return(msg))
        elif msg.member == "GetMachineId" and msg.signature == "":
            if self._machine_id is None:
                reply = Message.new_error(msg, "org.freedesktop.DBus.Error.FileNotFound",
                                          "this system has no machine id (/etc/machine-id)")
            else:
                reply = Message.new_method_return(msg, "s", [self._machine_id])
            self._send(bus, msg, reply)
        else:
            self._send(bus, msg, Message.new_error(
                msg, "org.freedesktop.DBus.Error.UnknownMethod",
                "org.freedesktop.DBus.Peer has Ping() and GetMachineId() only"))
        return True

    def _refuse(self, bus: _Bus, msg: Message, text: str) -> None:
        self.refused_calls += 1
        self._send(bus, msg, Message.new_error(msg, error_name(protocol.E_LIMIT), text))

    async def _serve(self, bus: _Bus, generation: int, msg: Message) -> None:
        method = _METHODS[msg.member]
        uid_key: Optional[Tuple[int, int]] = None
        try:
            op, args = _request(msg.member, method, msg)
            uid, gids, pid = await self._credentials(bus, generation, msg.sender)
            if uid != 0:
                uid_key = (generation, uid)
                if self._per_uid[uid_key] >= MAX_CALLS_PER_UID:
                    uid_key = None
                    self.refused_calls += 1
                    raise protocol.ProtocolError(
                        protocol.E_LIMIT, "uid %d has %d calls in flight on D-Bus, the limit; "
                        "wait for their replies" % (uid, MAX_CALLS_PER_UID))
                self._per_uid[uid_key] += 1
            result = await self._loop.run_in_executor(
                self._executor, self._run, uid, gids, pid, msg.sender, op, args)
            reply = Message.new_method_return(msg, method.out_signature, method.reply(result, args))
        except protocol.ProtocolError as exc:
            reply = Message.new_error(msg, error_name(exc.code), _bounded(exc.message))
        except Exception as exc:
            log.exception("D-Bus: %s failed", msg.member)
            reply = _internal_error(msg, exc)
        finally:
            _release(self._per_sender, (generation, msg.sender or ""))
            if uid_key is not None:
                _release(self._per_uid, uid_key)
        self._send(bus, msg, reply)

    async def _credentials(self, bus: _Bus, generation: int, sender: Optional[str]
                           ) -> Tuple[int, Optional[List[int]], Optional[int]]:
        """(uid, gids or None, pid or None) of `sender`, from GetConnectionCredentials."""
        if sender is None:
            raise _unknown_caller(sender)
        key = (generation, sender)
        future = self._credentials_cache.get(key)
        if future is None:
            future = self._loop.create_future()
            self._credentials_cache[key] = future
            while len(self._credentials_cache) > _CREDENTIALS_CACHE:
                self._credentials_cache.popitem(last=False)
            try:
                async with self._lookups:
                    creds = await _bus_call(bus, "GetConnectionCredentials", sender)
            except BaseException:
                self._credentials_cache.pop(key, None)
                future.cancel()
                raise
            if not isinstance(creds, dict) or not isinstance(
                    getattr(creds.get("UnixUserID"), "value", None), int):
                self._credentials_cache.pop(key, None)  # the bus may answer next time
                future.set_result(None)
            else:
                gids = creds.get("UnixGroupIDs")
                pid = creds.get("ProcessID")
                future.set_result((creds["UnixUserID"].value,
                                   list(gids.value) if gids is not None else None,
                                   pid.value if pid is not None else None))
        else:
            self._credentials_cache.move_to_end(key)
        result = await asyncio.shield(future)
        if result is None:
            raise _unknown_caller(sender)
        return result

    def _run(self, uid: int, gids: Optional[List[int]], pid: Optional[int], sender: str,
             op: str, args: Args) -> Any:
        """Worker thread: identify the caller (NSS lookups may block) and run the operation."""
        caller = authz.caller_from_credentials(uid, gids, pid=pid, bus_name=sender)
        return self.ops.call(caller, op, args)

    def _send(self, bus: _Bus, msg: Message, reply: Message) -> None:
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED or bus is not self.bus or not bus.connected:
            return
        try:
            future = bus.send(reply)  # marshals now: a body that does not fit the signature raises
        except Exception as exc:
            log.exception("D-Bus: could not send the reply to %s", msg.member)
            future = bus.send(_internal_error(msg, exc))
        future.add_done_callback(_ignore_result)

    # --- signals ----------------------------------------------------------------------------

    def _on_state(self, kind: str, info: Dict[str, Any]) -> None:
        """Operations' state listener; runs on any thread, so hop onto the loop."""
        if self._closed:
            return
        try:
            self._loop.call_soon_threadsafe(self._emit, kind)
        except RuntimeError:
            pass  # the loop is closed: the daemon is shutting down

    def _emit(self, kind: str) -> None:
        bus = self.bus
        if self._closed or bus is None or not bus.connected or kind not in _SIGNALS:
            return
        try:
            bus.send(Message.new_signal(OBJECT_PATH, INTERFACE, kind)) \
                .add_done_callback(_ignore_result)
            self._iface.emit_properties_changed(
                {"ActiveSessions": int(self.ops.counters()["sessions"])})
        except Exception:
            log.exception("D-Bus: could not emit %s", kind)

    # --- shutdown ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Release the name, disconnect and stop serving; calls in flight get no reply."""
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        bus = self.bus
        if bus is not None and bus.connected:
            try:
                await asyncio.wait_for(bus.release_name(BUS_NAME), _NAME_TIMEOUT_S)
            except Exception as exc:
                log.debug("D-Bus: releasing %s failed (%s); disconnecting drops it", BUS_NAME, exc)
            bus.disconnect()
            try:
                await asyncio.wait_for(bus.wait_for_disconnect(), _NAME_TIMEOUT_S)
            except Exception as exc:
                log.debug("D-Bus: disconnect ended with %s", exc)
        if bus is not None:
            bus.close_socket()
        self.connected = False
        self._executor.shutdown(wait=False, cancel_futures=True)


def _release(counter: Dict[Any, int], key: Any) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


async def _bus_call(bus: MessageBus, member: str, arg: str) -> Any:
    """A one-string-argument call to the bus daemon; None if it answered with an error."""
    reply = await bus.call(Message(member=member, signature="s", body=[arg], **_DBUS))
    if reply is None or reply.message_type != MessageType.METHOD_RETURN:
        return None
    return reply.body[0]


def _unknown_caller(sender: Optional[str]) -> authz.PermissionDenied:
    return authz.PermissionDenied("permission denied: the bus could not tell which user is "
                                  "calling (sender %s); call through the system bus" % sender)


def _describe(address: str) -> str:
    return "the system bus" if address == SYSTEM_BUS else "the D-Bus at %s" % address


def _internal_error(msg: Message, exc: BaseException) -> Message:
    return Message.new_error(msg, error_name(protocol.E_INTERNAL),
                             "internal error in oisp-sensor while serving %s (%s); the daemon's "
                             "journal has the details" % (msg.member, type(exc).__name__))


async def start_dbus(ops: Any, address: str = SYSTEM_BUS) -> DbusService:
    """Connect, export /dev/oisp/Sensor1 and own dev.oisp.Sensor1; DbusStartError names the fix.

    `address` is "system" for the system bus, else a D-Bus address such as "unix:path=/tmp/bus".
    Once started, the service reconnects by itself after losing the bus.
    """
    service = DbusService(ops, address)
    try:
        await service._start()
    except BaseException:
        await service.close()
        raise
    return service
