"""Issue 6 against the real daemon, as a real unprivileged uid: nobody can lock the control plane
out (connection caps, EMFILE back-off with a small log) and malformed arguments get clear errors
while the connection and the daemon stay up."""
from __future__ import annotations

import os
import resource
import time

import pytest

from oisp_ctl import protocol
from tests.integration.daemon import NOBODY, DaemonProcess, running_daemon
from tests.support.peers import Holder, bus_call, talk

pytestmark = pytest.mark.bpf

OTHER_UID = 1  # "daemon": a second local account, not root, in no oisp group


def status_counters(daemon: DaemonProcess, uid: int = 0) -> dict:
    return daemon.ctl_json("status", uid=uid, gid=uid if uid else 65534)["counters"]


def hello() -> bytes:
    return protocol.encode(protocol.request(0, protocol.OP_HELLO, protocol.hello_args("attacker/1")))


# -- connections -----------------------------------------------------------------------------


def test_1100_idle_connections_of_one_user_lock_out_nobody_else(daemon):
    holder = Holder(daemon.socket, 1100)  # the attack, as uid 65534
    try:
        assert holder.refused == 1100 - 64  # the default control.max_connections_per_uid
        assert daemon.ctl("status").returncode == 0
        assert daemon.ctl("status", uid=OTHER_UID, gid=OTHER_UID).returncode == 0
        own = daemon.ctl("status", uid=NOBODY)  # the attacker's next one is refused, clearly
        assert own.returncode != 0 and "max_connections_per_uid" in own.stderr, own
        counters = status_counters(daemon)
        assert counters["control_refused"] >= 1100 - 64 + 1
        assert counters["control_connections"] >= 64
    finally:
        holder.close()
    assert daemon.log().count("refused") <= 2  # one report, not one line per connection
    assert daemon.proc is not None and daemon.proc.poll() is None


@pytest.mark.parametrize("daemon", [{"control": {"max_connections": 6,
                                                 "max_connections_per_uid": 4}}], indirect=True)
def test_many_users_together_fill_the_total_but_root_still_gets_in(daemon):
    holders = [Holder(daemon.socket, 4, uid) for uid in (NOBODY, 65533)]
    try:
        assert [h.refused for h in holders] == [0, 2]
        late = daemon.ctl("status", uid=OTHER_UID, gid=OTHER_UID)
        assert late.returncode != 0 and "control.max_connections" in late.stderr, late
        assert daemon.ctl("status").returncode == 0  # root is outside the total
    finally:
        for holder in holders:
            holder.close()
    assert daemon.ctl("status", uid=OTHER_UID, gid=OTHER_UID).returncode == 0


@pytest.fixture
def starved_daemon():
    """A daemon whose descriptors a test runs out. Other parts than the control plane may then
    fail on TLS traffic other processes of the machine make (the pipeline logs a traceback per
    record it cannot handle); this test vouches for the control plane, whose files must then
    appear in no traceback."""
    with running_daemon(forbidden=("oisp_daemon/control/", "oisp_ctl/")) as proc:
        yield proc


def test_out_of_descriptors_the_daemon_backs_off_logs_once_and_recovers(starved_daemon):
    daemon = starved_daemon
    assert daemon.proc is not None
    pid = daemon.proc.pid
    saved = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    log_before = len(daemon.log())
    # the daemon keeps only the holes below its highest descriptor: nobody's connections take them
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (highest + 1, saved[1]))
    try:
        holder = Holder(daemon.socket, 40)
        try:
            time.sleep(4)
            assert daemon.proc.poll() is None
            grown = [line for line in daemon.log()[log_before:].splitlines()
                     if "oisp_daemon.control" in line]
            assert len(grown) == 1 and "cannot accept" in grown[0], grown  # not 3,710 in 4 s
            assert "out of file descriptors" in grown[0]
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, saved)
        # with descriptors back the daemon answers everyone, the attacker (40 < 64) included
        counters = status_counters(daemon)
        assert counters["control_accept_errors"] >= 1
        assert counters["control_connections"] >= 40  # the backlog was accepted after all
        assert daemon.ctl("status", uid=NOBODY).returncode == 0
    finally:
        holder.close()


# -- arguments -------------------------------------------------------------------------------

def _request(request_id, op, args) -> bytes:
    return protocol.encode(protocol.request(request_id, op, args))


# (id, raw request line, expected code, text in the message); nobody is in no group, so any
# of these that reached authorization would be permission_denied instead
MALFORMED = [
    ("sink-only", _request("sink-only", "session.start", {"sink": "x"}), "invalid_argument", '"name"'),
    ("sink-str", _request("sink-str", "session.start", {"name": "n", "sink": "x"}), "invalid_argument", '"sink"'),
    ("sink-path", _request("sink-path", "session.start", {"name": "n", "sink": {"path": ["/etc/x"]}}),
     "invalid_argument", '"sink.path"'),
    ("filters", _request("filters", "session.start", {"name": "n", "filters": "ai.*"}), "invalid_argument", '"filters"'),
    ("owner", _request("owner", "session.start", {"name": "n", "owner_uid": True}), "invalid_argument", '"owner_uid"'),
    ("owner-neg", _request("owner-neg", "session.start", {"name": "n", "owner_uid": -1}), "invalid_argument", '"owner_uid"'),
    ("name", _request("name", "session.stop", {"name": {"$ne": 1}}), "invalid_argument", '"name"'),
    ("path", _request("path", "binary_paths.add", {"path": 0}), "invalid_argument", '"path"'),
    ("mode", _request("mode", "redaction.set", {"mode": ["full"]}), "invalid_argument", '"mode"'),
    ("since", _request("since", "tail", {"since": True}), "invalid_argument", '"since"'),
    ("max_buffer", _request("max_buffer", "tail", {"max_buffer": True}), "invalid_argument", '"max_buffer"'),
    ("tail-filters", _request("tail-filters", "tail", {"filters": [1]}), "invalid_argument", '"filters"'),
    ("deep", b'{"id":"deep","op":"status","args":{"a":' + b"[" * 40 + b"]" * 40 + b"}}\n",
     "bad_request", "deeper than"),
    (None, b'{"id":"deeper","op":"status","args":{"a":' + b"[" * 300000 + b"]" * 300000 + b"}}\n",
     "bad_request", "too deeply"),
    (None, b'{"id":"\\ud800","op":"status"}\n', "bad_request", "surrogate"),
    ("surrogate-arg", b'{"id":"surrogate-arg","op":"session.stop","args":{"name":"\\udc80"}}\n',
     "bad_request", "surrogate"),
]


def test_malformed_arguments_get_clear_errors_and_the_connection_survives(daemon):
    lines = [hello()] + [line for _, line, _, _ in MALFORMED]
    lines.append(protocol.encode(protocol.request("after", protocol.OP_STATUS)))
    replies = talk(daemon.socket, lines)  # as uid 65534
    assert replies[0]["ok"] is True
    assert len(replies) == len(lines), replies
    for (request_id, _, code, text), reply in zip(MALFORMED, replies[1:]):
        assert reply["id"] == request_id, reply
        assert reply["error"]["code"] == code, reply
        assert text in reply["error"]["message"], reply
    assert replies[-1]["id"] == "after" and replies[-1]["ok"] is True
    assert daemon.ctl("status").returncode == 0
    assert daemon.ctl_json("session", "list")  == []
    assert "Traceback" not in daemon.log() and ": ERROR " not in daemon.log()


def test_a_lone_surrogate_id_before_hello_is_answered_too(daemon):
    replies = talk(daemon.socket, [b'{"id":"\\udfff","op":"hello","args":{}}\n', hello()])
    assert replies[0]["id"] is None and "surrogate" in replies[0]["error"]["message"]
    assert replies[1]["ok"] is True


BUS_MALFORMED = [
    ("StartSession", "ss", ["n", '{"sink": "x"}'], "invalid_argument"),
    ("StartSession", "ss", ["n", '{"sink": {"path": 1}, "filters": []}'], "invalid_argument"),
    ("StartSession", "ss", ["n", '{"owner_uid": true}'], "invalid_argument"),
    # Over D-Bus the JSON is an argument: too deep is an invalid argument (on the socket, whose
    # line is the request itself, it is a bad request).
    ("Call", "ss", ["status", '{"a": %s}' % ("[" * 100000 + "]" * 100000)], "invalid_argument"),
    ("Call", "ss", ["status", '{"a": %s}' % ("[" * 30 + "]" * 30)], "invalid_argument"),
    ("Call", "ss", ["session.stop", '{"name": "\\ud800"}'], "bad_request"),
]


def test_malformed_arguments_over_dbus_get_clear_errors(bus_daemon):
    daemon, address = bus_daemon
    for member, signature, body, error in BUS_MALFORMED:
        reply = bus_call(address, member, signature, body)  # as uid 65534
        assert reply["error"] == "dev.oisp.Sensor1.Error." + error, (body[1][:60], reply)
    assert bus_call(address, "Status", "", [])["error"] is None  # the daemon still answers
    assert "Traceback" not in daemon.log() and ": ERROR " not in daemon.log()
