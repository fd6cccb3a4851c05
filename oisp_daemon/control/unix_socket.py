"""The Unix socket transport of the control plane: NDJSON requests in, replies and tail streams out.

Thin on purpose: who may do what is decided by the Operations (through authz), what a line looks
like by oisp_ctl.protocol. This module moves lines and makes sure no peer can hurt the daemon:

- every operation runs in a worker thread, because operations may block (reload, attaching
  uprobes) and the event loop also serves every other client;
- a connection's memory is bounded: requests are read only as fast as they are answered (a queue
  of MAX_QUEUED_REQUESTS, then the socket is simply not read), and a tail stream holds about
  ENCODE_BUDGET bytes of encoded events at a time while its Subscriber buffers and drops;
- writes wait for the peer (drain) on that connection only, so a slow reader slows nobody else,
  and a slow tail reader loses events (with a `dropped` notice) rather than stalling capture;
- no exception escapes a connection: unexpected ones become an `internal` error reply and a log
  line with the details, which are kept out of the reply.

Requests on one connection run one after another in arrival order, so a pipelined
`session.start` and `session.stop` of the same session cannot overtake each other; tail streams
run beside them. A tail lasts until the client closes its end (end of file on the socket), the
daemon closes the subscriber, or the server closes (its last line is then an end item). The
transport-only tail argument "follow": false sends the replayed events, then an end item.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from oisp_ctl import protocol
from oisp_ctl.protocol import ProtocolError, RequestId
from oisp_daemon.control import authz
from oisp_daemon.export.tail import Subscriber

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
# Requests read but not yet answered, per connection; beyond it the socket is not read.
MAX_QUEUED_REQUESTS = 8
# Tail streams one connection may hold: each has a Subscriber buffer in the daemon.
MAX_TAILS_PER_CONNECTION = 4
# Encoded tail lines produced per worker-thread call before they are written out.
ENCODE_BUDGET = 1 << 20
# How long close() lets tail streams deliver their end item before cutting connections.
CLOSE_TIMEOUT = 2.0

# Why a tail stream ended (the "end" of its final reply).
END_SHUTDOWN = "shutdown"   # the daemon is stopping
END_CLOSED = "closed"       # the daemon closed the subscriber
END_REPLAYED = "replayed"   # "follow": false, the replay has been sent

_EOF = object()  # queue marker: the client closed its end

QueueItem = Union[Dict[str, Any], ProtocolError, object]


def _prepare_path(path: str) -> None:
    """Create the socket's directory and remove a stale socket left by a daemon that died.

    A socket someone still answers on is not stale: taking it over would cut off a running daemon,
    so that is an error, and so is a path that is not a socket (it is not ours to delete).
    """
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise RuntimeError("%s exists and is not a socket; remove it or set control.socket to "
                           "another path" % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        log.info("removed stale control socket %s", path)
        return
    except OSError as exc:
        raise RuntimeError("cannot tell whether %s is still in use (%s); remove it if no other "
                           "oisp-sensor runs" % (path, exc)) from exc
    finally:
        probe.close()
    raise RuntimeError("another process already serves the control socket %s (is a second "
                       "oisp-sensor running? systemctl status oisp-sensor)" % path)


def _error_reply(request_id: Optional[RequestId], exc: ProtocolError) -> Dict[str, Any]:
    """The error reply for `exc` answering `request_id` (ops raise without knowing the id)."""
    if exc.code not in protocol.ERROR_CODES:
        log.error("control: operation raised unknown error code %r: %s", exc.code, exc.message)
        return protocol.error_reply(request_id, protocol.E_INTERNAL, exc.message)
    return protocol.error_reply(request_id, exc.code, exc.message)


def _encode_events(request_id: RequestId, events: List[Dict[str, Any]],
                   start: int) -> Tuple[List[Optional[bytes]], int]:
    """Encode events[start:] as tail lines until ENCODE_BUDGET bytes; return them and the next index.

    A line the client could not accept (over MAX_STREAM_LINE_BYTES) or an event that is not valid
    JSON comes back as None, to be reported as dropped: one bad event must not end the stream.
    """
    lines: List[Optional[bytes]] = []
    size = 0
    index = start
    while index < len(events) and size < ENCODE_BUDGET:
        try:
            line: Optional[bytes] = protocol.encode(protocol.event_item(request_id, events[index]))
        except (TypeError, ValueError):
            log.exception("control: tail event is not valid JSON; dropped")
            line = None
        if line is not None and len(line) > protocol.MAX_STREAM_LINE_BYTES:
            log.warning("control: tail event of %d bytes exceeds the stream line limit; dropped",
                        len(line))
            line = None
        lines.append(line)
        size += len(line) if line is not None else 0
        index += 1
    return lines, index


class _Tail:
    """One running tail stream of a connection."""

    def __init__(self, request_id: RequestId, sub: Subscriber, follow: bool) -> None:
        self.request_id = request_id
        self.sub = sub
        self.follow = follow
        self.task: Optional["asyncio.Task[None]"] = None
        self.untailed = False


class _Connection:
    """One client: reads requests, runs them in order, writes replies and tail streams."""

    def __init__(self, server: "UnixSocketServer", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self._server = server
        self._ops = server.ops
        self._reader = reader
        self._writer = writer
        self._queue: "asyncio.Queue[QueueItem]" = asyncio.Queue(MAX_QUEUED_REQUESTS)
        # One writer at a time, each waiting for drain: replies and tail lines interleave whole.
        self._write_lock = asyncio.Lock()
        self._tails: List[_Tail] = []
        self._greeted = False
        self.caller: Optional[authz.Caller] = None
        self.task: Optional["asyncio.Task[None]"] = None
        self._serving: Optional["asyncio.Future[None]"] = None

    async def run(self) -> None:
        """Serve the connection until the client leaves or shutdown() cuts it; then clean up."""
        # shutdown() cancels only the serving part, never the clean-up after it
        self._serving = asyncio.ensure_future(self._serve_requests())
        try:
            await asyncio.wait([self._serving])
        finally:
            self._serving.cancel()
            if self._serving.done() and not self._serving.cancelled() \
                    and self._serving.exception() is not None:
                log.error("control: connection failed", exc_info=self._serving.exception())
            # the tails end without an end item: the client left or shutdown() already sent it
            tails, self._tails = self._tails, []
            for tail in tails:
                self._untail(tail)
                if tail.task is not None:
                    tail.task.cancel()
            self._writer.close()
            pumps = [t.task for t in tails if t.task is not None]
            if pumps:
                await asyncio.wait(pumps)
            await self._wait_closed()

    async def _serve_requests(self) -> None:
        loop = asyncio.get_running_loop()
        sock = self._writer.get_extra_info("socket")
        try:
            # user and group lookups may go to NSS (LDAP, ...): not on the event loop
            self.caller = await loop.run_in_executor(None, authz.caller_from_socket, sock)
        except Exception:
            log.exception("control: cannot identify the peer of a connection; closing it")
            return
        tasks = {asyncio.ensure_future(self._read()), asyncio.ensure_future(self._work())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, ConnectionError):
                log.error("control: connection of uid %d failed", self.caller.uid, exc_info=exc)

    async def _wait_closed(self) -> None:
        # close() flushes what is buffered first; a peer that reads nothing would keep it open
        try:
            await asyncio.wait_for(self._writer.wait_closed(), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            self._writer.transport.abort()
        except (ConnectionError, OSError):
            pass

    async def shutdown(self) -> None:
        """Server close: end every tail stream with an end item, then cut the connection."""
        for tail in list(self._tails):
            self._untail(tail)
        pumps = [t.task for t in self._tails if t.task is not None]
        if pumps:
            await asyncio.wait(pumps, timeout=CLOSE_TIMEOUT)
        if self._serving is not None:
            self._serving.cancel()
        if self.task is not None:
            await asyncio.wait([self.task])  # its clean-up is bounded by CLOSE_TIMEOUT

    # -- reading ------------------------------------------------------------------------------

    async def _read(self) -> None:
        decoder = protocol.Decoder(protocol.MAX_LINE_BYTES)
        while True:
            data = await self._reader.read(READ_CHUNK)
            items = decoder.feed(data) if data else decoder.close()
            for item in items:
                await self._queue.put(item)
            if not data:
                await self._queue.put(_EOF)
                return

    # -- requests -----------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            if item is _EOF:
                return
            if isinstance(item, ProtocolError):
                await self._send(item.to_reply())
                continue
            assert isinstance(item, dict)
            try:
                req = protocol.parse_request(item)
            except ProtocolError as exc:
                await self._send(exc.to_reply())
                continue
            await self._handle(req)

    async def _handle(self, req: protocol.Request) -> None:
        assert self.caller is not None
        loop = asyncio.get_running_loop()
        if not self._greeted and req.op != protocol.OP_HELLO:
            await self._send(protocol.error_reply(
                req.id, protocol.E_BAD_REQUEST,
                'the first request on a connection must be "hello" with args {"protocol": %d, '
                '"client": "<name>/<version>"}; got %r' % (protocol.PROTOCOL_VERSION, req.op)))
            return
        try:
            if req.op == protocol.OP_HELLO:
                result = await loop.run_in_executor(None, self._ops.hello, self.caller, req.args)
                self._greeted = True
            elif req.op == protocol.OP_TAIL:
                await self._start_tail(req)
                return
            else:
                result = await loop.run_in_executor(None, self._ops.call, self.caller, req.op,
                                                    req.args)
            line = protocol.encode(protocol.ok_reply(req.id, result))
        except ProtocolError as exc:
            line = protocol.encode(_error_reply(req.id, exc))
        except Exception:
            log.exception("control: %s from uid %d failed", req.op, self.caller.uid)
            line = protocol.encode(protocol.error_reply(
                req.id, protocol.E_INTERNAL,
                "internal error in the daemon while running %r; the details are in its log "
                "(journalctl -u oisp-sensor)" % req.op))
        await self._send_line(line)

    # -- tail streams -------------------------------------------------------------------------

    async def _start_tail(self, req: protocol.Request) -> None:
        assert self.caller is not None
        args = dict(req.args)
        follow = args.pop("follow", True)
        if not isinstance(follow, bool):
            raise ProtocolError(protocol.E_INVALID_ARGUMENT,
                                'tail argument "follow" must be true or false')
        if any(t.request_id == req.id for t in self._tails):
            raise ProtocolError(protocol.E_CONFLICT, "a tail stream with id %r is already running "
                                "on this connection; use a new id" % (req.id,))
        if len(self._tails) >= MAX_TAILS_PER_CONNECTION:
            raise ProtocolError(protocol.E_CONFLICT, "this connection already runs %d tail streams, "
                                "the limit; open another connection" % MAX_TAILS_PER_CONNECTION)
        loop = asyncio.get_running_loop()
        sub = await loop.run_in_executor(None, self._ops.tail, self.caller, args)
        tail = _Tail(req.id, sub, follow)
        self._tails.append(tail)
        if self._server.closing:
            self._untail(tail)
        tail.task = asyncio.ensure_future(self._pump(tail))

    async def _pump(self, tail: _Tail) -> None:
        """Send a subscriber's events, dropped notices and finally the end item."""
        sub = tail.sub
        try:
            while True:
                if tail.follow:
                    await sub.wait()
                # closed before the drain means nothing more can arrive after it
                closed = sub.closed
                events, dropped = sub.drain()
                await self._send_events(tail.request_id, events)
                if dropped:
                    await self._send(protocol.dropped_item(tail.request_id, dropped))
                if not tail.follow:
                    reason = END_REPLAYED
                    break
                if closed:
                    reason = END_SHUTDOWN if self._server.closing else END_CLOSED
                    break
            self._untail(tail)
            await self._send(protocol.end_item(tail.request_id, reason))
        except ConnectionError:
            pass  # the client is gone; run() cleans up
        finally:
            self._untail(tail)
            if tail in self._tails:
                self._tails.remove(tail)

    async def _send_events(self, request_id: RequestId, events: List[Dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        skipped = 0
        index = 0
        while index < len(events):
            # encoding a large event takes a while: keep it off the event loop
            lines, index = await loop.run_in_executor(None, _encode_events, request_id, events,
                                                      index)
            for line in lines:
                if line is None:
                    skipped += 1
                    continue
                if skipped:  # the notice goes where the gap is
                    await self._send(protocol.dropped_item(request_id, skipped))
                    skipped = 0
                await self._send_line(line)
        if skipped:
            await self._send(protocol.dropped_item(request_id, skipped))

    def _untail(self, tail: _Tail) -> None:
        if not tail.untailed:
            tail.untailed = True
            try:
                self._ops.untail(tail.sub)
            except Exception:
                log.exception("control: untail failed")

    # -- writing ------------------------------------------------------------------------------

    async def _send(self, message: Dict[str, Any]) -> None:
        await self._send_line(protocol.encode(message))

    async def _send_line(self, line: bytes) -> None:
        async with self._write_lock:
            if self._writer.is_closing():
                raise ConnectionResetError("the control connection is closed")
            self._writer.write(line)
            await self._writer.drain()


class UnixSocketServer:
    """A listening control socket; `close()` ends every stream and removes the socket file."""

    def __init__(self, ops: Any, path: str, mode: int) -> None:
        self.ops = ops
        self.path = path
        self.mode = mode
        self.closing = False
        self._server: Optional[asyncio.AbstractServer] = None
        self._inode: Optional[int] = None
        self._connections: Set[_Connection] = set()

    @property
    def connection_count(self) -> int:
        """Connected clients, for status."""
        return len(self._connections)

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _prepare_path, self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        os.chmod(self.path, self.mode)
        self._inode = os.stat(self.path).st_ino
        log.info("control socket listening on %s (mode %o)", self.path, self.mode)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        conn.task = asyncio.current_task()
        if self.closing:
            writer.close()
            return
        self._connections.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            pass  # cut by close()
        except Exception:
            log.exception("control: connection handler failed")
        finally:
            self._connections.discard(conn)

    async def close(self) -> None:
        """Stop accepting, end every tail stream with an end item, close connections, remove the socket."""
        if self.closing:
            return
        self.closing = True
        if self._server is not None:
            self._server.close()
        conns = list(self._connections)
        if conns:
            await asyncio.gather(*(c.shutdown() for c in conns), return_exceptions=True)
        if self._server is not None:
            # from Python 3.12.1 this also waits for connections, which are all gone by now
            try:
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("control: connections still open after close; leaving them")
        self._remove_socket_file()

    def _remove_socket_file(self) -> None:
        # only our own socket: a new daemon may already have bound the path
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass


async def start_unix_socket_server(ops: Any, path: str, mode: int = 0o666) -> UnixSocketServer:
    """Listen on `path` for control clients served by `ops` (an Operations); the socket gets `mode`.

    Everyone may connect with the default 0o666: authorization is per request, from SO_PEERCRED.
    Raises RuntimeError when another daemon serves the path or it is not a socket, OSError when
    it cannot be created.
    """
    server = UnixSocketServer(ops, path, mode)
    await server._start()
    return server
