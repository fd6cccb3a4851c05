"""oisp-ctl's connections to the daemon: the control socket (everything) and D-Bus (control ops).

Both raise protocol.ProtocolError for a refusal by the daemon (its message names cause and fix)
and ClientError when the daemon cannot be reached or talked to, with a message that says what to
check. Tail streams go over the socket only: captured content never travels on the bus.
"""
from __future__ import annotations

import asyncio
import errno
import json
import socket
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Dict, Iterator, Optional, Tuple, Union

from oisp_ctl import protocol
from oisp_ctl.protocol import ProtocolError

DBUS_NAME = "dev.oisp.Sensor1"
DBUS_PATH = "/dev/oisp/Sensor1"
DBUS_INTERFACE = "dev.oisp.Sensor1.Manager"
DBUS_ERROR_PREFIX = "dev.oisp.Sensor1.Error."
DBUS_ADDRESS_ENV = "OISP_DBUS_ADDRESS"

RECV_SIZE = 256 * 1024

# A tail item: ("event", event dict), ("dropped", count) or ("end", reason), always last.
TailItem = Tuple[str, Union[Dict[str, Any], int, str]]


def client_name() -> str:
    """"oisp-ctl/<version>" for the hello, from the installed distribution when there is one."""
    try:
        return "oisp-ctl/%s" % version("oisp-sensor")
    except PackageNotFoundError:  # run from a source tree
        return "oisp-ctl/dev"


class ClientError(Exception):
    """The daemon could not be reached or spoke nonsense; the message says what to check."""


def _connect_error(path: str, exc: OSError) -> ClientError:
    if isinstance(exc, FileNotFoundError):
        return ClientError("cannot connect to %s: no such file — is the daemon running? "
                           "(systemctl status oisp-sensor)" % path)
    if isinstance(exc, ConnectionRefusedError):
        return ClientError("cannot connect to %s: connection refused — the socket is left over "
                           "from a daemon that is not running (systemctl status oisp-sensor; "
                           "systemctl restart oisp-sensor)" % path)
    if isinstance(exc, PermissionError):
        return ClientError("cannot connect to %s: permission denied — the socket or its directory "
                           "does not let you in (ls -l %s; the daemon's control.socket_mode sets "
                           "it)" % (path, path))
    if exc.errno == errno.ENOTSOCK or isinstance(exc, NotADirectoryError):
        return ClientError("cannot connect to %s: not a socket — check --socket or "
                           "$OISP_SOCKET" % path)
    return ClientError("cannot connect to %s: %s" % (path, exc.strerror or exc))


class SocketClient:
    """A connection to the control socket: hello on connect, then requests and tail streams.

    Blocking and single-threaded, as a command-line tool wants. `timeout` bounds each wait for
    the daemon (None: wait forever, which is what `tail -f` needs).
    """

    def __init__(self, path: str, timeout: Optional[float] = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self.hello_result: Dict[str, Any] = {}
        self._sock: Optional[socket.socket] = None
        self._decoder = protocol.Decoder(protocol.MAX_STREAM_LINE_BYTES)
        self._pending: list = []
        self._next_id = 1

    def connect(self) -> Dict[str, Any]:
        """Connect and say hello; return the daemon's hello result."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise _connect_error(self.path, exc) from None
        self._sock = sock
        result = self.call(protocol.OP_HELLO, protocol.hello_args(client_name()))
        protocol.check_hello_result(result)
        self.hello_result = result
        return result

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "SocketClient":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def call(self, op: str, args: Optional[Dict[str, Any]] = None) -> Any:
        """Send one request and return its result; the daemon's refusal raises ProtocolError."""
        request_id = self._send(op, args)
        while True:
            msg = self._receive()
            if msg.get("id") == request_id or msg.get("id") is None:
                return protocol.reply_result(msg)

    def tail(self, args: Dict[str, Any]) -> Iterator[TailItem]:
        """Start a tail stream now; iterate its items until its end (a refusal: ProtocolError)."""
        return self._tail_items(self._send(protocol.OP_TAIL, args))

    def _tail_items(self, request_id: int) -> Iterator[TailItem]:
        while True:
            msg = self._receive()
            if msg.get("id") != request_id and msg.get("id") is not None:
                continue
            kind = protocol.message_kind(msg)
            if kind == "event":
                yield ("event", msg["event"])
            elif kind == "dropped":
                yield ("dropped", msg["dropped"])
            else:
                result = protocol.reply_result(msg)
                reason = result.get("end") if isinstance(result, dict) else None
                yield ("end", reason if isinstance(reason, str) else "end")
                return

    def _send(self, op: str, args: Optional[Dict[str, Any]]) -> int:
        if self._sock is None:
            raise ClientError("not connected to %s" % self.path)
        request_id = self._next_id
        self._next_id += 1
        try:
            self._sock.sendall(protocol.encode(protocol.request(request_id, op, args)))
        except OSError as exc:
            raise ClientError("lost the connection to %s while sending (%s) — did the daemon "
                              "stop? (systemctl status oisp-sensor)" % (self.path, exc)) from None
        return request_id

    def _receive(self) -> Dict[str, Any]:
        assert self._sock is not None
        while not self._pending:
            try:
                data = self._sock.recv(RECV_SIZE)
            except socket.timeout:
                raise ClientError("the daemon did not answer within %g s (is it stuck? "
                                  "journalctl -u oisp-sensor)" % self.timeout) from None
            except OSError as exc:
                raise ClientError("lost the connection to %s (%s) — did the daemon stop? "
                                  "(systemctl status oisp-sensor)" % (self.path, exc)) from None
            if not data:
                raise ClientError("the daemon closed the connection — did it stop or restart? "
                                  "(systemctl status oisp-sensor)")
            self._pending.extend(self._decoder.feed(data))
        item = self._pending.pop(0)
        if isinstance(item, ProtocolError):
            raise ClientError("the daemon sent a malformed line: %s" % item.message)
        return item


class BusClient:
    """Control operations over D-Bus: dev.oisp.Sensor1.Manager.Call(op, args_json) -> result_json.

    Uses the system bus, or the address in $OISP_DBUS_ADDRESS ("system" also means the system
    bus). dbus-next is imported only here, so oisp-ctl works without it unless --bus is used.
    """

    def __init__(self, address: Optional[str] = None, timeout: float = 30.0) -> None:
        self.address = address if address and address != "system" else None
        self.timeout = timeout

    def call(self, op: str, args: Optional[Dict[str, Any]] = None) -> Any:
        """Run one operation; the daemon's refusal raises ProtocolError."""
        return asyncio.run(self._call(op, {} if args is None else args))

    async def _call(self, op: str, args: Dict[str, Any]) -> Any:
        try:
            from dbus_next import BusType, Message, MessageType
            from dbus_next.aio import MessageBus
        except ImportError:
            raise ClientError("--bus needs the D-Bus library dbus-next (apt-get install "
                              "python3-dbus-next), or leave out --bus to use the socket") from None
        where = self.address or "the system bus"
        try:
            if self.address:
                bus = MessageBus(bus_address=self.address)
            else:
                bus = MessageBus(bus_type=BusType.SYSTEM)
            await asyncio.wait_for(bus.connect(), self.timeout)
        except asyncio.TimeoutError:
            raise ClientError("cannot connect to D-Bus (%s): no answer within %g s" % (where, self.timeout)) from None
        except Exception as exc:
            raise ClientError("cannot connect to D-Bus (%s): %s — is dbus running? (leave out "
                              "--bus to use the control socket)" % (where, exc)) from None
        try:
            message = Message(destination=DBUS_NAME, path=DBUS_PATH, interface=DBUS_INTERFACE,
                              member="Call", signature="ss", body=[op, json.dumps(args)])
            try:
                reply = await asyncio.wait_for(bus.call(message), self.timeout)
            except asyncio.TimeoutError:
                raise ClientError("the daemon did not answer on D-Bus within %g s (is it stuck? "
                                  "journalctl -u oisp-sensor)" % self.timeout) from None
        finally:
            bus.disconnect()
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise _bus_error(reply.error_name or "", text)
        try:
            return json.loads(reply.body[0])
        except (IndexError, TypeError, ValueError) as exc:
            raise ClientError("the daemon's D-Bus reply is not the JSON result expected (%s)"
                              % exc) from None


def _bus_error(name: str, message: str) -> Exception:
    """The exception for a D-Bus error reply: the daemon's own errors become ProtocolError."""
    if name.startswith(DBUS_ERROR_PREFIX):
        return ProtocolError(name[len(DBUS_ERROR_PREFIX):], message)
    if name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                "org.freedesktop.DBus.Error.NameHasNoOwner"):
        return ClientError("%s is not on the bus — is the daemon running with dbus.enabled? "
                           "(systemctl status oisp-sensor)" % DBUS_NAME)
    if name == "org.freedesktop.DBus.Error.AccessDenied":
        return ClientError("the D-Bus policy refused the call (%s); it is set in "
                           "/usr/share/dbus-1/system.d/%s.conf" % (message, DBUS_NAME))
    if name in ("org.freedesktop.DBus.Error.UnknownMethod",
                "org.freedesktop.DBus.Error.UnknownInterface",
                "org.freedesktop.DBus.Error.UnknownObject"):
        return ClientError("the daemon on D-Bus has no %s.Call (%s) — is it older than this "
                           "oisp-ctl? Leave out --bus to use the socket" % (DBUS_INTERFACE, message))
    return ClientError("D-Bus error %s: %s" % (name, message))
