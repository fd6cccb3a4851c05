"""The control socket server: hello first, pipelining, errors with ids, garbage, tail streams with
drops and ends, closing, and the socket file's life cycle."""
from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time

import pytest

from oisp_ctl import protocol
from oisp_daemon.control.operations import Operations
from oisp_daemon.control import unix_socket
from oisp_daemon.control.unix_socket import MAX_TAILS_PER_CONNECTION, start_unix_socket_server
from tests.support.control_server import RawConnection, ServerThread, event, wait_until
from tests.support.daemon_double import DaemonDouble, make_operations
from tests.support.peers import Holder, talk


@pytest.fixture
def hub(daemon):
    return daemon.hub


@pytest.fixture
def ops(daemon):
    return make_operations(daemon)


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "run" / "control.sock")


@pytest.fixture
def server(ops, sock_path):
    srv = ServerThread(ops, sock_path)
    yield srv
    srv.close()


@pytest.fixture
def connect():
    """Opens RawConnections to a path and closes them after the test."""
    opened = []

    def _connect(path):
        opened.append(RawConnection(path))
        return opened[-1]

    yield _connect
    for c in opened:
        c.close()


@pytest.fixture
def conn(server, connect):
    return connect(server.path)


def greeted(conn):
    reply = conn.hello()
    assert reply["ok"] is True, reply
    return conn


# -- the socket file --------------------------------------------------------------------------


def test_socket_is_created_with_its_directory_and_mode(server, sock_path):
    st = os.stat(sock_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o666


def test_a_stale_socket_is_replaced(ops, tmp_path, connect):
    path = str(tmp_path / "control.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: as after a crash
    srv = ServerThread(ops, path, mode=0o660)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert greeted(connect(path))
    finally:
        srv.close()


def test_a_live_socket_is_not_taken_over(server, ops, connect):
    with pytest.raises(RuntimeError, match="already serves"):
        ServerThread(ops, server.path)
    assert greeted(connect(server.path))  # the first server still answers


def test_a_regular_file_at_the_path_is_refused(ops, tmp_path):
    path = tmp_path / "control.sock"
    path.write_text("not a socket")
    with pytest.raises(RuntimeError, match="not a socket"):
        ServerThread(ops, str(path))
    assert path.read_text() == "not a socket"


def test_close_removes_the_socket_file(ops, sock_path):
    srv = ServerThread(ops, sock_path)
    srv.close()
    assert not os.path.exists(sock_path)


# -- requests ---------------------------------------------------------------------------------


def test_hello_reports_the_callers_identity_and_permissions(conn):
    reply = conn.hello("h")
    assert reply["id"] == "h"
    result = reply["result"]
    assert result["protocol"] == protocol.PROTOCOL_VERSION
    assert result["uid"] == os.getuid()
    assert protocol.PERM_CONFIGURE in result["permissions"]  # the tests run as root


def test_requests_before_hello_are_refused_with_their_id(conn):
    conn.request(7, protocol.OP_STATUS)
    reply = conn.receive()
    assert reply["id"] == 7 and reply["ok"] is False
    assert reply["error"]["code"] == protocol.E_BAD_REQUEST
    assert "hello" in reply["error"]["message"]
    greeted(conn)
    conn.request(8, protocol.OP_STATUS)
    assert conn.receive()["ok"] is True


def test_a_hello_of_another_protocol_version_is_refused(conn):
    conn.request(1, protocol.OP_HELLO, {"protocol": 99, "client": "future/9"})
    reply = conn.receive()
    assert reply["error"]["code"] == protocol.E_PROTOCOL_VERSION
    conn.request(2, protocol.OP_STATUS)
    assert conn.receive()["error"]["code"] == protocol.E_BAD_REQUEST  # still not greeted


def test_pipelined_requests_are_answered_in_order_with_their_ids(conn):
    lines = [protocol.request(0, protocol.OP_HELLO, protocol.hello_args("test/1"))]
    lines += [protocol.request("s%d" % n, protocol.OP_SESSION_START, {"name": "s%d" % n})
              for n in range(5)]
    lines += [protocol.request("stop", protocol.OP_SESSION_STOP, {"name": "s0"}),
              protocol.request("list", protocol.OP_SESSION_LIST)]
    conn.send(b"".join(protocol.encode(m) for m in lines))
    replies = conn.receive_n(len(lines))
    assert [r["id"] for r in replies] == [m["id"] for m in lines]
    assert all(r["ok"] for r in replies), replies
    assert sorted(s["name"] for s in replies[-1]["result"]) == ["s1", "s2", "s3", "s4"]


def test_errors_keep_the_request_id(conn):
    greeted(conn)
    conn.request("a", "no.such.op")
    conn.request("b", protocol.OP_SESSION_STOP, {"name": "missing"})
    conn.request("c", protocol.OP_REDACTION_SET, {"mode": "loud"})
    conn.send(b'{"id": "d", "op": "status", "extra": 1}\n')
    codes = {r["id"]: r["error"]["code"] for r in conn.receive_n(4)}
    assert codes == {"a": protocol.E_UNKNOWN_OP, "b": protocol.E_NOT_FOUND,
                     "c": protocol.E_INVALID_ARGUMENT, "d": protocol.E_BAD_REQUEST}


def test_garbage_lines_get_errors_and_the_connection_goes_on(conn):
    greeted(conn)
    conn.send(b"not json\n[1, 2]\n\n\xff\xfe\n" + b"x" * (protocol.MAX_LINE_BYTES + 10) + b"\n")
    errors = conn.receive_n(4)
    assert [e["id"] for e in errors] == [None] * 4
    assert all(e["error"]["code"] == protocol.E_BAD_REQUEST for e in errors)
    assert "longer than" in errors[3]["error"]["message"]
    conn.request(5, protocol.OP_STATUS)
    assert conn.receive()["ok"] is True


def test_an_unexpected_exception_becomes_a_generic_internal_error(sock_path, daemon, caplog,
                                                                   connect):
    class Broken(Operations):
        def call(self, caller, op, args):
            if op == protocol.OP_RELOAD:
                raise RuntimeError("secret detail of the failure")
            return super().call(caller, op, args)

    srv = ServerThread(make_operations(daemon, Broken), sock_path)
    try:
        conn = greeted(connect(sock_path))
        with caplog.at_level(logging.ERROR, logger="oisp_daemon.control.unix_socket"):
            conn.request(1, protocol.OP_RELOAD)
            reply = conn.receive()
        assert reply["id"] == 1 and reply["error"]["code"] == protocol.E_INTERNAL
        assert "secret" not in reply["error"]["message"]
        assert "journalctl" in reply["error"]["message"]
        assert "secret detail" in caplog.text
        conn.request(2, protocol.OP_STATUS)
        assert conn.receive()["ok"] is True
    finally:
        srv.close()


def test_a_blocking_operation_does_not_stall_other_connections(sock_path, daemon, connect):
    release = threading.Event()

    class Slow(Operations):
        def call(self, caller, op, args):
            if op == protocol.OP_RELOAD:
                release.wait(10)
            return super().call(caller, op, args)

    srv = ServerThread(make_operations(daemon, Slow), sock_path)
    try:
        slow = greeted(connect(sock_path))
        slow.request(1, protocol.OP_RELOAD)
        other = greeted(connect(sock_path))
        other.request(2, protocol.OP_STATUS)
        assert other.receive()["ok"] is True
        release.set()
        assert slow.receive()["result"]["reloaded"] is True
    finally:
        release.set()
        srv.close()


# -- tail streams -----------------------------------------------------------------------------


def test_tail_streams_published_events_in_order(conn, hub, ops):
    greeted(conn)
    conn.request("t", protocol.OP_TAIL, {"filters": {"types": ["ai.*"]}})
    wait_until(lambda: hub.count() == 1, what="the subscription")
    for n in range(3):
        hub.publish(event(n))
    hub.publish(event(9, event_type="process.exec"))  # filtered out
    hub.publish(event(3))
    items = conn.receive_n(4)
    assert [i["id"] for i in items] == ["t"] * 4
    assert [i["event"]["event_id"] for i in items] == ["e0", "e1", "e2", "e3"]


def test_tail_with_since_replays_then_follows(conn, hub):
    hub.publish(event(0))
    greeted(conn)
    conn.request(1, protocol.OP_TAIL, {"since": 0})
    assert conn.receive()["event"]["event_id"] == "e0"
    wait_until(lambda: hub.count() == 1, what="the subscription")
    hub.publish(event(1))
    assert conn.receive()["event"]["event_id"] == "e1"


def test_tail_without_follow_sends_the_replay_and_ends(conn, hub):
    for n in range(3):
        hub.publish(event(n))
    greeted(conn)
    conn.request(1, protocol.OP_TAIL, {"since": 0, "follow": False})
    items = conn.receive_n(4)
    assert [i["event"]["event_id"] for i in items[:3]] == ["e0", "e1", "e2"]
    assert items[3] == protocol.end_item(1, "replayed")
    wait_until(lambda: hub.count() == 0, what="the unsubscription")


def test_tail_arguments_are_checked(conn):
    greeted(conn)
    conn.request(1, protocol.OP_TAIL, {"filters": {"colour": ["red"]}})
    conn.request(2, protocol.OP_TAIL, {"follow": "yes"})
    replies = conn.receive_n(2)
    assert [(r["id"], r["error"]["code"]) for r in replies] == [
        (1, protocol.E_INVALID_ARGUMENT), (2, protocol.E_INVALID_ARGUMENT)]
    assert "colour" in replies[0]["error"]["message"]


def test_tails_per_connection_are_limited(conn, hub):
    greeted(conn)
    for n in range(MAX_TAILS_PER_CONNECTION + 1):
        conn.request(n, protocol.OP_TAIL)
    reply = conn.receive()
    assert reply["id"] == MAX_TAILS_PER_CONNECTION
    assert reply["error"]["code"] == protocol.E_CONFLICT
    assert hub.count() == MAX_TAILS_PER_CONNECTION


def test_a_slow_reader_gets_a_dropped_notice_and_never_blocks_publishing(conn, hub):
    greeted(conn)
    conn.request("t", protocol.OP_TAIL, {"max_buffer": 4})
    wait_until(lambda: hub.count() == 1, what="the subscription")
    total = 120
    for n in range(total):  # ~4 MB while the client reads nothing: socket buffers fill up
        hub.publish(event(n, size=32 * 1024))
    received, dropped, notices = [], 0, 0
    while len(received) + dropped < total:
        item = conn.receive()
        if "dropped" in item:
            dropped += item["dropped"]
            notices += 1
        else:
            received.append(item["event"]["event_id"])
    assert notices >= 1 and dropped > 0
    ids = [int(i[1:]) for i in received]
    assert ids == sorted(ids) and ids[0] == 0


def test_an_event_too_long_for_the_stream_is_dropped_in_place(conn, hub, monkeypatch):
    monkeypatch.setattr(protocol, "MAX_STREAM_LINE_BYTES", 4096)
    greeted(conn)
    conn.request("t", protocol.OP_TAIL)
    wait_until(lambda: hub.count() == 1, what="the subscription")
    hub.publish(event(0))
    hub.publish(event(1, size=8192))
    hub.publish(event(2))
    items = conn.receive_n(3)
    assert items == [protocol.event_item("t", event(0)), protocol.dropped_item("t", 1),
                     protocol.event_item("t", event(2))]


def test_a_client_that_leaves_is_unsubscribed(conn, hub):
    greeted(conn)
    conn.request("t", protocol.OP_TAIL)
    wait_until(lambda: hub.count() == 1, what="the subscription")
    conn.close()
    wait_until(lambda: hub.count() == 0, what="the unsubscription")


def test_server_close_ends_every_stream_and_connection(ops, hub, sock_path, connect):
    srv = ServerThread(ops, sock_path)
    try:
        conns = [greeted(connect(sock_path)) for _ in range(2)]
        for c in conns:
            c.request("t", protocol.OP_TAIL)
        wait_until(lambda: hub.count() == 2, what="the subscriptions")
        hub.publish(event(0))
        for c in conns:
            assert c.receive()["event"]["event_id"] == "e0"
    finally:
        srv.close()
    for c in conns:
        assert c.receive() == protocol.end_item("t", "shutdown")
        with pytest.raises(EOFError):
            c.receive()
    assert hub.count() == 0
    assert not os.path.exists(sock_path)


def test_server_close_does_not_wait_for_a_reader_that_reads_nothing(ops, hub, sock_path,
                                                                   connect, monkeypatch):
    monkeypatch.setattr(unix_socket, "CLOSE_TIMEOUT", 0.2)
    srv = ServerThread(ops, sock_path)
    try:
        stuck = greeted(connect(sock_path))
        stuck.request("t", protocol.OP_TAIL)
        wait_until(lambda: hub.count() == 1, what="the subscription")
        for n in range(100):  # far more than the socket buffers hold
            hub.publish(event(n, size=64 * 1024))
    finally:
        started = time.monotonic()
        srv.close()
    assert time.monotonic() - started < 3
    assert hub.count() == 0 and not os.path.exists(sock_path)


def test_a_subscriber_closed_by_the_daemon_ends_its_stream(conn, hub):
    greeted(conn)
    conn.request("t", protocol.OP_TAIL)
    wait_until(lambda: hub.count() == 1, what="the subscription")
    hub.close()
    assert conn.receive() == protocol.end_item("t", "closed")
    conn.request(2, protocol.OP_STATUS)  # the connection itself goes on
    assert conn.receive()["ok"] is True


def test_start_unix_socket_server_is_a_coroutine_returning_the_server(ops, sock_path):
    import asyncio

    async def scenario():
        srv = await start_unix_socket_server(ops, sock_path, 0o600)
        assert srv.path == sock_path and srv.connection_count == 0
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
        await srv.close()

    asyncio.run(scenario())
    assert not os.path.exists(sock_path)


def test_tail_buffer_asked_by_a_client_is_capped_by_the_daemon(tmp_path):
    from oisp_daemon.control.authz import Authorizer, Caller
    from oisp_daemon.control.operations import Operations

    daemon = DaemonDouble(str(tmp_path), max_buffer=100)
    ops = Operations(daemon, Authorizer())
    nobody = Caller(uid=65534, gid=65534, groups=frozenset(), user="nobody")
    sub = ops.tail(nobody, {"max_buffer": 10 ** 9})
    assert sub.max_buffer == daemon.tail_max_buffer()
    small = ops.tail(nobody, {"max_buffer": 3})
    assert small.max_buffer == 3
    with pytest.raises(protocol.ProtocolError, match="max_buffer"):
        ops.tail(nobody, {"max_buffer": -1})


# -- caps and the accept loop: no user can take every connection or descriptor ----------------


def test_connection_caps_count_per_uid_and_keep_root_outside_the_total():
    from oisp_daemon.control.unix_socket import ConnectionCaps

    caps = ConnectionCaps(total=3, per_uid=2)
    assert caps.admit(1000) is None and caps.admit(1000) is None
    assert "per user" in caps.admit(1000)
    assert caps.admit(1001) is None
    assert "control.max_connections" in caps.admit(1002)  # the total is full
    assert caps.admit(0) is None and caps.admit(0) is None  # root still gets in
    assert "per user" in caps.admit(0)
    caps.release(1000)
    assert caps.admit(1002) is None
    assert caps.count == 5
    for uid in (1000, 1001, 1002, 0, 0):
        caps.release(uid)
    assert caps.count == 0
    caps.release(1000)  # an unknown release changes nothing
    assert caps.count == 0 and caps.admit(1000) is None


def test_a_connection_over_the_per_uid_cap_gets_a_limit_line_then_eof(ops, sock_path, connect):
    srv = ServerThread(ops, sock_path, max_connections_per_uid=2)
    try:
        held = [greeted(connect(sock_path)) for _ in range(2)]
        refused = connect(sock_path)
        refused.send(protocol.encode(protocol.request(0, protocol.OP_HELLO,
                                                      protocol.hello_args("test/1"))))
        reply = refused.receive()
        assert reply["id"] is None and reply["error"]["code"] == protocol.E_LIMIT
        assert "max_connections_per_uid" in reply["error"]["message"]
        with pytest.raises(EOFError):
            refused.receive()
        held[0].close()
        wait_until(lambda: srv.server.caps.count == 1, what="the connection to end")
        again = greeted(connect(sock_path))
        again.request(1, protocol.OP_STATUS)
        counters = again.receive()["result"]["counters"]
        assert counters["control_refused"] == 1 and counters["control_connections"] == 2
    finally:
        srv.close()


def test_the_total_cap_refuses_other_uids_but_not_root(ops, public_dir, connect):
    path = str(public_dir / "control.sock")
    srv = ServerThread(ops, path, max_connections=3, max_connections_per_uid=2)
    holders = []
    try:
        holders.append(Holder(path, 2, uid=65534))
        holders.append(Holder(path, 2, uid=65533))
        assert [h.refused for h in holders] == [0, 1]  # the fourth is over the total
        conn = greeted(connect(path))  # root is outside the total
        conn.request(1, protocol.OP_STATUS)
        assert conn.receive()["result"]["counters"]["control_refused"] == 1
    finally:
        for holder in holders:
            holder.close()
        srv.close()


def test_the_total_cap_is_kept_well_under_the_fd_limit(ops, sock_path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (400, hard))
    try:
        srv = ServerThread(ops, sock_path, max_connections=10000)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert srv.server.caps.total == 100
    finally:
        srv.close()


def test_raise_fd_limit_goes_towards_the_hard_limit():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        expected = min(hard, unix_socket.FD_LIMIT_TARGET)
        assert unix_socket.raise_fd_limit() == expected
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (expected, hard)
        assert unix_socket.raise_fd_limit() == expected  # nothing to do the second time
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class _FdsExhausted:
    """This process at its open-files limit: every descriptor below it in use until release()."""

    def __init__(self) -> None:
        import resource

        self._saved = resource.getrlimit(resource.RLIMIT_NOFILE)
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, self._saved[1]))
        self._fillers = []
        try:
            while True:
                self._fillers.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass

    def release(self) -> None:
        import resource

        for fd in self._fillers:
            os.close(fd)
        self._fillers = []
        resource.setrlimit(resource.RLIMIT_NOFILE, self._saved)


def test_accept_backs_off_on_emfile_logs_once_and_serves_when_fds_free(ops, sock_path, caplog):
    srv = ServerThread(ops, sock_path)
    waiting = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
    try:
        with caplog.at_level(logging.INFO, logger="oisp_daemon.control.unix_socket"):
            exhausted = _FdsExhausted()
            try:
                for sock in waiting:  # connect needs no new descriptor; accept does
                    sock.connect(sock_path)
                time.sleep(2.0)
                errors = srv.server.accept_errors
            finally:
                exhausted.release()
            for sock in waiting:
                sock.settimeout(5)
                sock.sendall(protocol.encode(protocol.request(0, protocol.OP_HELLO,
                                                              protocol.hello_args("test/1"))))
                assert b'"ok":true' in sock.recv(65536)
        # a growing back-off: a handful of attempts in 2 s, not a spinning loop
        assert 2 <= errors <= 10, errors
        failures = [r for r in caplog.records if "cannot accept" in r.getMessage()]
        assert len(failures) == 1 and "file descriptors" in failures[0].getMessage()
        conn = greeted(RawConnection(sock_path))
        conn.request(1, protocol.OP_STATUS)
        assert conn.receive()["result"]["counters"]["control_accept_errors"] == errors
        conn.close()
    finally:
        for sock in waiting:
            sock.close()
        srv.close()


def test_accept_failures_are_logged_at_most_once_per_interval(ops, sock_path, caplog, monkeypatch):
    monkeypatch.setattr(unix_socket, "ACCEPT_RETRY_MAX", 0.05)
    srv = ServerThread(ops, sock_path)
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with caplog.at_level(logging.INFO, logger="oisp_daemon.control.unix_socket"):
            exhausted = _FdsExhausted()
            try:
                waiting.connect(sock_path)
                time.sleep(1.0)
            finally:
                exhausted.release()
        assert srv.server.accept_errors >= 10  # retried quickly, still one line
        assert len([r for r in caplog.records if "cannot accept" in r.getMessage()]) == 1
    finally:
        waiting.close()
        srv.close()


# -- argument types are checked before anything else runs ---------------------------------------


@pytest.mark.parametrize("op, args, text", [
    (protocol.OP_SESSION_START, {"name": "s", "sink": "x"}, '"sink" must be an object'),
    (protocol.OP_SESSION_START, {"sink": "x"}, 'needs the argument "name"'),
    (protocol.OP_SESSION_START, {"name": "s", "sink": {"path": 7}}, '"sink.path" must be'),
    (protocol.OP_SESSION_START, {"name": "s", "sink": {"path": "/x", "mode": 1}}, '"sink"'),
    (protocol.OP_SESSION_START, {"name": "s", "filters": ["ai.*"]}, '"filters" must be an object'),
    (protocol.OP_SESSION_START, {"name": "s", "owner_uid": True}, '"owner_uid" must be a uid'),
    (protocol.OP_SESSION_START, {"name": "s", "owner_uid": 2 ** 32 - 1}, '"owner_uid"'),
    (protocol.OP_SESSION_START, {"name": "s", "owner_uid": 1.5}, '"owner_uid"'),
    (protocol.OP_SESSION_START, {"name": ["s"]}, '"name" must be a non-empty string'),
    (protocol.OP_SESSION_START, {}, 'needs the argument "name"'),
    (protocol.OP_SESSION_START, {"name": "s", "redaction": 0}, '"redaction"'),
    (protocol.OP_SESSION_START, {"name": "s", "colour": "red"}, "no argument 'colour'"),
    (protocol.OP_SESSION_STOP, {"name": 5}, '"name"'),
    (protocol.OP_BINARY_PATHS_ADD, {"path": {"p": 1}}, '"path"'),
    (protocol.OP_BINARY_PATHS_REMOVE, {}, '"path"'),
    (protocol.OP_REDACTION_SET, {"mode": False}, '"mode"'),
    (protocol.OP_STATUS, {"verbose": True}, "no argument 'verbose'"),
    (protocol.OP_TAIL, {"since": True}, '"since" must be POSIX seconds'),
    (protocol.OP_TAIL, {"since": "5m"}, '"since"'),
    (protocol.OP_TAIL, {"max_buffer": True}, '"max_buffer" must be a positive integer'),
    (protocol.OP_TAIL, {"max_buffer": 2.0}, '"max_buffer"'),
    (protocol.OP_TAIL, {"filters": "ai.*"}, '"filters" must be an object'),
])
def test_arguments_of_the_wrong_type_are_invalid_before_authorization(public_dir, daemon, op,
                                                                      args, text, caplog):
    path = str(public_dir / "control.sock")
    srv = ServerThread(make_operations(daemon), path)
    lines = [protocol.request(0, protocol.OP_HELLO, protocol.hello_args("attacker/1")),
             protocol.request("bad", op, args), protocol.request("after", protocol.OP_STATUS)]
    try:
        with caplog.at_level(logging.ERROR):
            replies = {r["id"]: r for r in talk(path, [protocol.encode(m) for m in lines])}
    finally:
        srv.close()
    assert replies["bad"]["error"]["code"] == protocol.E_INVALID_ARGUMENT, replies["bad"]
    assert text in replies["bad"]["error"]["message"]
    assert replies["after"]["ok"] is True  # the connection goes on
    assert caplog.records == []  # no traceback, no internal error
    assert daemon.sessions.list() == [] and daemon.hub.count() == 0


def test_every_op_has_its_argument_checks(ops):
    from oisp_daemon.control.operations import _ARG_CHECKS

    assert set(_ARG_CHECKS) == set(ops._handlers) | {protocol.OP_TAIL}


def test_valid_arguments_still_pass_the_checks(conn, daemon):
    greeted(conn)
    conn.request(1, protocol.OP_SESSION_START,
                 {"name": "s", "filters": {"types": ["ai.*"]}, "redaction": "safe",
                  "sink": None, "owner_uid": 0})
    conn.request(2, protocol.OP_TAIL, {"since": 1.5, "max_buffer": 3, "filters": None,
                                       "follow": False})
    replies = conn.receive_n(2)
    assert replies[0]["ok"] is True, replies[0]
    assert replies[-1] == protocol.end_item(2, "replayed")
