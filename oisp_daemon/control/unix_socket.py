"""The Unix socket transport of the control plane: NDJSON requests in, replies and tail streams out.

Thin on purpose: who may do what is decided by the Operations (through authz), what a line looks
like by oisp_ctl.protocol. This module moves lines and makes sure no peer can hurt the daemon:

- every operation runs in a worker thread, because operations may block (reload, attaching
  uprobes) and the event loop also serves every other client;
- a connection's memory is bounded: requests are read only as fast as they are answered (a queue
  of MAX_QUEUED_REQUESTS, then the socket is simply not read), and a tail stream sends the
  event bytes its Subscriber shares with every other tail (encoded once by the hub) in pieces of
  WRITE_CHUNK, so a peer that reads nothing pins no copy of a large event in the transport;
- writes wait for the peer (drain) on that connection only, so a slow reader slows nobody else,
  and a slow tail reader loses events (with a `dropped` notice) rather than stalling capture;
- no exception escapes a connection: unexpected ones become an `internal` error reply and a log
  line with the details, which are kept out of the reply;
- no user can take every connection or file descriptor: connections are capped per uid and in
  total (root has its own per-uid share outside the total, so an admin always gets in), a refused
  peer gets one limit_exceeded line and is closed, and the accept loop is our own: when accept
  fails (EMFILE, ENFILE) it stops listening for a back-off that grows to ACCEPT_RETRY_MAX,
  counts the failures and logs them at most once per ACCEPT_LOG_INTERVAL (asyncio's own loop
  retried up to 100 times per wake-up and logged each with a traceback).

Requests on one connection run one after another in arrival order, so a pipelined
`session.start` and `session.stop` of the same session cannot overtake each other; tail streams
run beside them. A tail lasts until the client closes its end (end of file on the socket), the
daemon closes the subscriber, or the server closes (its last line is then an end item). The
transport-only tail argument "follow": false sends the replayed events, then an end item.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import stat
import struct
import time
from typing import Any, Dict, List, NamedTuple, Optional, Set, Tuple, Union

from oisp_ctl import protocol
from oisp_ctl.protocol import ProtocolError, RequestId
from oisp_daemon.control import authz
from oisp_daemon.export.tail import Subscriber, TailItem

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
# Requests read but not yet answered, per connection; beyond it the socket is not read.
MAX_QUEUED_REQUESTS = 8
# Tail streams one connection may hold: each has a Subscriber buffer in the daemon.
MAX_TAILS_PER_CONNECTION = 4
# Bytes of a tail event handed to the transport at a time: its buffer copies what the socket
# does not take at once, so this bounds the copy a non-reading peer can pin.
WRITE_CHUNK = 64 * 1024
# How long close() lets tail streams deliver their end item before cutting connections.
CLOSE_TIMEOUT = 2.0
# Pending connections the kernel queues while the daemon is not accepting (back-off, busy loop).
LISTEN_BACKLOG = 128
# Connections accepted per wake-up of the listening socket, so a flood cannot hog the loop.
ACCEPT_BATCH = 32
# After a failed accept the socket is not watched for this long, doubling up to the maximum.
ACCEPT_RETRY_MIN = 0.05
ACCEPT_RETRY_MAX = 1.0
# Accept failures are logged at most once per interval, with the count since the last line.
ACCEPT_LOG_INTERVAL = 60.0
# The total cap is kept to this fraction of the soft RLIMIT_NOFILE: sessions, probes, the ring
# buffer and exporters need descriptors too.
FD_SHARE = 4
# A refused peer's socket stays open (its write side shut) until the peer sends its first
# request or this many seconds pass, so that the peer reads the refusal rather than a broken pipe;
# at most REFUSED_LINGER_MAX such sockets at a time, beyond which they are closed at once.
REFUSED_LINGER = 2.0
REFUSED_LINGER_MAX = 32
# raise_fd_limit() aims the soft limit here (bounded by the hard limit), as the unit's LimitNOFILE.
FD_LIMIT_TARGET = 65536

# Default caps (control.max_connections, control.max_connections_per_uid).
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_CONNECTIONS_PER_UID = 64

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

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


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit (at most FD_LIMIT_TARGET) at start-up.

    Every connection, session file and probe costs a descriptor, and the common soft default of
    1,024 is what one user exhausted. The unit's LimitNOFILE does the same under systemd; this
    makes it hold when the daemon is started by hand. Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_LIMIT_TARGET if hard == resource.RLIM_INFINITY else min(hard, FD_LIMIT_TARGET)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d (%s); the control socket's "
                    "connection caps are lowered to fit", soft, target, exc)
        return soft
    log.info("open-files limit raised from %d to %d", soft, target)
    return target


class ConnectionCaps:
    """Connections held per uid and in total; says whether one more may come in.

    Root is held to `per_uid` only, outside `total`: however many users fill the total, an admin
    can still connect to see and fix it. So the socket never holds more than total + per_uid.
    """

    def __init__(self, total: int, per_uid: int) -> None:
        if total < 1 or per_uid < 1:
            raise ValueError("connection caps must be positive, got total=%r per_uid=%r"
                             % (total, per_uid))
        self.total = total
        self.per_uid = per_uid
        self._by_uid: Dict[int, int] = {}
        self._others = 0  # connections of every uid but root

    @property
    def count(self) -> int:
        """Connections held now."""
        return sum(self._by_uid.values())

    def admit(self, uid: int) -> Optional[str]:
        """Count a new connection of `uid` in and return None, or return why it is refused."""
        held = self._by_uid.get(uid, 0)
        if held >= self.per_uid:
            return ("uid %d already holds %d connections to the daemon, the limit per user "
                    "(control.max_connections_per_uid); close some (idle clients, oisp-ctl "
                    "tail -f) and try again" % (uid, held))
        if uid != 0 and self._others >= self.total:
            return ("the daemon already serves %d connections, its limit (control.max_connections);"
                    " try again later, or ask an administrator to see who holds them" % self.total)
        self._by_uid[uid] = held + 1
        if uid != 0:
            self._others += 1
        return None

    def release(self, uid: int) -> None:
        """A connection of `uid` admitted earlier has ended."""
        held = self._by_uid.get(uid, 0) - 1
        if held < 0:
            return
        if held:
            self._by_uid[uid] = held
        else:
            del self._by_uid[uid]
        if uid != 0:
            self._others -= 1


class _Throttle:
    """Lets a repeated log line through at most once per interval, with how often it happened."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._pending = 0
        self._last: Optional[float] = None

    def hit(self) -> int:
        """Count one occurrence; return how many the line may report now (0: stay silent)."""
        self._pending += 1
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            return 0
        self._last = now
        count, self._pending = self._pending, 0
        return count


def _peer_uid(conn: socket.socket) -> int:
    # SO_PEERCRED only: no user lookup (NSS may block) before the caps have been applied
    return _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                            _PEERCRED.size))[1]


def _drain_and_close(conn: socket.socket) -> None:
    # What the peer sent (its hello) is read first: closing a Unix socket with unread data resets
    # the connection, which could cost the peer the refusal line.
    try:
        conn.recv(READ_CHUNK)
    except OSError:
        pass
    conn.close()


def _accept_hint(exc: OSError) -> str:
    if exc.errno == errno.EMFILE:
        return ("the daemon is out of file descriptors: raise LimitNOFILE, or lower "
                "control.max_connections or the number of sessions")
    if exc.errno == errno.ENFILE:
        return "the system is out of file descriptors (sysctl fs.file-max)"
    return "see the error"


def _error_reply(request_id: Optional[RequestId], exc: ProtocolError) -> Dict[str, Any]:
    """The error reply for `exc` answering `request_id` (ops raise without knowing the id)."""
    if exc.code not in protocol.ERROR_CODES:
        log.error("control: operation raised unknown error code %r: %s", exc.code, exc.message)
        return protocol.error_reply(request_id, protocol.E_INTERNAL, exc.message)
    return protocol.error_reply(request_id, exc.code, exc.message)


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
        decoder = protocol.Decoder(protocol.MAX_LINE_BYTES, protocol.MAX_REQUEST_DEPTH)
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
                items, dropped = sub.drain()
                await self._send_events(tail.request_id, sub, items)
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

    async def _send_events(self, request_id: RequestId, sub: Subscriber,
                           items: List[TailItem]) -> None:
        """Send drained items as tail lines, each framed around the bytes every tail shares.

        An item that could not be encoded, or whose line the client could not accept (over
        MAX_STREAM_LINE_BYTES), is reported as dropped where it was: one bad event must not end
        the stream. Each item is given back to the subscriber's budget once it is written.
        """
        head, end = protocol.event_item_frame(request_id)
        skipped = 0
        try:
            for item in items:
                body = item.body
                if body is None or len(head) + len(body) + len(end) > protocol.MAX_STREAM_LINE_BYTES:
                    if body is not None:
                        log.warning("control: tail event of %d bytes exceeds the stream line "
                                    "limit; dropped", len(body))
                    skipped += 1
                    sub.done(item)
                    continue
                if skipped:  # the notice goes where the gap is
                    await self._send(protocol.dropped_item(request_id, skipped))
                    skipped = 0
                await self._send_framed(head, body, end)
                sub.done(item)
        finally:
            for item in items:
                sub.done(item)  # what was not sent (the peer left): a no-op for the rest
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

    async def _send_framed(self, head: bytes, body: bytes, end: bytes) -> None:
        """One line made of head + body + end, written without joining them: `body` is shared."""
        view = memoryview(body)
        async with self._write_lock:
            if self._writer.is_closing():
                raise ConnectionResetError("the control connection is closed")
            self._writer.write(head)
            for offset in range(0, len(view), WRITE_CHUNK):
                self._writer.write(view[offset:offset + WRITE_CHUNK])
                await self._writer.drain()
            self._writer.write(end)
            await self._writer.drain()

    async def _send_line(self, line: bytes) -> None:
        async with self._write_lock:
            if self._writer.is_closing():
                raise ConnectionResetError("the control connection is closed")
            self._writer.write(line)
            await self._writer.drain()


class UnixSocketServer:
    """A listening control socket; `close()` ends every stream and removes the socket file."""

    def __init__(self, ops: Any, path: str, mode: int,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_connections_per_uid: int = DEFAULT_MAX_CONNECTIONS_PER_UID) -> None:
        self.ops = ops
        self.path = path
        self.mode = mode
        self.closing = False
        self.caps = ConnectionCaps(max_connections, max_connections_per_uid)
        self.refused = 0        # connections refused over a cap
        self.accept_errors = 0  # failed accept() calls
        self._sock: Optional[socket.socket] = None
        self._inode: Optional[int] = None
        self._connections: Set[_Connection] = set()
        self._tasks: Set["asyncio.Task[None]"] = set()
        self._retry_delay = 0.0
        self._retry: Optional[asyncio.TimerHandle] = None
        self._accept_log = _Throttle(ACCEPT_LOG_INTERVAL)
        self._refusal_log = _Throttle(ACCEPT_LOG_INTERVAL)
        self._lingering: Dict[int, Tuple[socket.socket, asyncio.TimerHandle]] = {}

    @property
    def connection_count(self) -> int:
        """Connected clients, for status."""
        return len(self._connections)

    def counters(self) -> Dict[str, int]:
        """The socket's counters for status: connections held, refused over a cap, failed accepts."""
        return {"control_connections": self.caps.count, "control_refused": self.refused,
                "control_accept_errors": self.accept_errors}

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _prepare_path, self.path)
        fd_soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fd_soft != resource.RLIM_INFINITY and self.caps.total > max(1, fd_soft // FD_SHARE):
            log.warning("control: control.max_connections lowered from %d to %d, a quarter of the "
                        "open-files limit (%d)", self.caps.total, max(1, fd_soft // FD_SHARE),
                        fd_soft)
            self.caps.total = max(1, fd_soft // FD_SHARE)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            os.chmod(self.path, self.mode)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        loop.add_reader(sock.fileno(), self._accept_ready)
        self.ops.add_counter_source(self.counters)
        log.info("control socket listening on %s (mode %o, at most %d connections per uid, %d in "
                 "all)", self.path, self.mode, self.caps.per_uid, self.caps.total)

    # -- accepting ----------------------------------------------------------------------------

    def _accept_ready(self) -> None:
        assert self._sock is not None
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._accept_failed(exc)
                return
            self._retry_delay = 0.0
            self._admit(conn)

    def _accept_failed(self, exc: OSError) -> None:
        """Stop watching the socket for a growing back-off; count, and log now and then."""
        assert self._sock is not None
        self.accept_errors += 1
        self._retry_delay = min(ACCEPT_RETRY_MAX, max(ACCEPT_RETRY_MIN, self._retry_delay * 2))
        failures = self._accept_log.hit()
        if failures:
            log.error("control: cannot accept connections on %s: %s (%d failures since the last "
                      "report; retrying within %g s, reported at most every %g s) — %s",
                      self.path, exc, failures, ACCEPT_RETRY_MAX, ACCEPT_LOG_INTERVAL,
                      _accept_hint(exc))
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._sock.fileno())
        self._retry = loop.call_later(self._retry_delay, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._retry = None
        if not self.closing and self._sock is not None:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._accept_ready)

    def _admit(self, conn: socket.socket) -> None:
        """Serve an accepted socket if its uid is within the caps, else refuse it."""
        if self.closing:
            conn.close()
            return
        try:
            uid = _peer_uid(conn)
        except OSError:
            conn.close()
            return
        refusal = self.caps.admit(uid)
        if refusal is not None:
            self.refused += 1
            refused = self._refusal_log.hit()
            if refused:
                log.warning("control: refused %d connections over the caps since the last report "
                            "(at most one report every %g s); latest: %s", refused,
                            ACCEPT_LOG_INTERVAL, refusal)
            self._refuse(conn, refusal)
            return
        task = asyncio.ensure_future(self._serve(conn))

        def done(_: "asyncio.Future[None]") -> None:
            self._tasks.discard(task)
            self.caps.release(uid)
            conn.close()  # a no-op once the transport closed it; not so if close() cut the task

        self._tasks.add(task)
        task.add_done_callback(done)

    def _refuse(self, conn: socket.socket, message: str) -> None:
        """Send a peer over a cap one limit_exceeded line, then close; never blocks.

        A fresh socket's send buffer takes the line. Closing at once would make a peer that has
        not sent its hello yet fail with a broken pipe instead of reading why: so the socket
        lingers, write side shut, until the peer sends something or REFUSED_LINGER passes.
        """
        try:
            conn.setblocking(False)
            conn.send(protocol.encode(protocol.error_reply(None, protocol.E_LIMIT, message)))
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        if self.closing or len(self._lingering) >= REFUSED_LINGER_MAX:
            _drain_and_close(conn)
            return
        loop = asyncio.get_running_loop()
        fd = conn.fileno()
        self._lingering[fd] = (conn, loop.call_later(REFUSED_LINGER, self._end_linger, fd))
        loop.add_reader(fd, self._end_linger, fd)

    def _end_linger(self, fd: int) -> None:
        entry = self._lingering.pop(fd, None)
        if entry is not None:
            conn, timer = entry
            timer.cancel()
            asyncio.get_running_loop().remove_reader(fd)
            _drain_and_close(conn)

    async def _serve(self, sock: socket.socket) -> None:
        if self.closing:
            return
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock)
        except OSError:
            return  # the peer is gone already; the socket is closed when the task is done
        conn = _Connection(self, reader, writer)
        conn.task = asyncio.current_task()
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
        if self._retry is not None:
            self._retry.cancel()
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
        for fd in list(self._lingering):
            self._end_linger(fd)
        conns = list(self._connections)
        if conns:
            await asyncio.gather(*(c.shutdown() for c in conns), return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT)
            if pending:
                log.warning("control: connections still open after close; leaving them")
        self._remove_socket_file()

    def _remove_socket_file(self) -> None:
        # only our own socket: a new daemon may already have bound the path
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass


async def start_unix_socket_server(ops: Any, path: str, mode: int = 0o666,
                                   max_connections: int = DEFAULT_MAX_CONNECTIONS,
                                   max_connections_per_uid: int = DEFAULT_MAX_CONNECTIONS_PER_UID,
                                   ) -> UnixSocketServer:
    """Listen on `path` for control clients served by `ops` (an Operations); the socket gets `mode`.

    Everyone may connect with the default 0o666: authorization is per request, from SO_PEERCRED.
    `max_connections` caps the connections of all uids but root (and is kept to a quarter of the
    open-files limit), `max_connections_per_uid` those of each uid. Raises RuntimeError when
    another daemon serves the path or it is not a socket, OSError when it cannot be created.
    """
    server = UnixSocketServer(ops, path, mode, max_connections, max_connections_per_uid)
    await server._start()
    return server
