"""The kernel side's assumptions, checked where user space can: the syscall tracepoints' record
layout bpf/sockets.c reads, and the listeners the server side finds in /proc."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from oisp_daemon.capture import plain_http

ENTER_FORMAT = """name: sys_enter_recvfrom
ID: 1
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * ubuf;\toffset:24;\tsize:8;\tsigned:0;
\tfield:size_t size;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned int flags;\toffset:%d;\tsize:8;\tsigned:0;
"""


def write_format(root: Path, event: str, text: str) -> None:
    folder = root / "syscalls" / event
    folder.mkdir(parents=True)
    (folder / "format").write_text(text)


def test_every_probe_point_has_the_layout_sockets_c_reads():
    """On this kernel, from its tracefs: the programs would read the right slots."""
    for tracepoint, _fn in plain_http.PROBES + plain_http.SERVER_PROBES:
        fields = plain_http.tracepoint_fields(tracepoint)
        assert fields is not None, tracepoint
        assert plain_http.check_layout(tracepoint, fields) is None


def test_a_moved_argument_is_refused(tmp_path):
    write_format(tmp_path, "sys_enter_recvfrom", ENTER_FORMAT % 44)
    fields = plain_http.tracepoint_fields("syscalls:sys_enter_recvfrom", [str(tmp_path)])
    assert fields[-1] == ("flags", 44, 8)
    assert "8-byte slots" in plain_http.check_layout("syscalls:sys_enter_recvfrom", fields)
    (tmp_path / "syscalls" / "sys_enter_recvfrom" / "format").write_text(ENTER_FORMAT % 40)
    fields = plain_http.tracepoint_fields("syscalls:sys_enter_recvfrom", [str(tmp_path)])
    assert plain_http.check_layout("syscalls:sys_enter_recvfrom", fields) is None


def test_a_missing_tracepoint_is_named(tmp_path):
    fields = plain_http.tracepoint_fields("syscalls:sys_enter_recvfrom", [str(tmp_path)])
    assert plain_http.check_layout("syscalls:sys_enter_recvfrom", fields) == \
        "syscalls:sys_enter_recvfrom: no format in tracefs"


def test_an_exit_must_carry_ret_at_16(tmp_path):
    assert plain_http.check_layout("syscalls:sys_exit_read", [("ret", 16, 8)]) is None
    assert plain_http.check_layout("syscalls:sys_exit_read", [("ret", 24, 8)])


@pytest.fixture
def listener():
    """A real listening socket of this process on a tracked loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def test_a_running_listener_on_the_set_is_found_in_proc(listener):
    port = listener.getsockname()[1]
    config = plain_http.from_config({"plain_http": ["127.0.0.1:%d" % port], "plain_http_defaults": False})
    assert (os.getpid(), listener.fileno()) in plain_http.existing_listeners(config)
    other = plain_http.from_config({"plain_http": ["10.0.0.0/8:%d" % port], "plain_http_defaults": False})
    assert (os.getpid(), listener.fileno()) not in plain_http.existing_listeners(other)


def test_a_wildcard_listener_counts_for_its_port():
    sock = socket.socket(socket.AF_INET6)
    try:
        sock.bind(("::", 0))
        sock.listen()
        port = sock.getsockname()[1]
        config = plain_http.from_config({"plain_http": ["127.0.0.1:%d" % port], "plain_http_defaults": False})
        assert (os.getpid(), sock.fileno()) in plain_http.existing_listeners(config)
    finally:
        sock.close()


@pytest.mark.parametrize("text,v6,expected", [
    ("0100007F", False, "127.0.0.1"),
    ("00000000000000000000000001000000", True, "::1"),
    ("0000000000000000FFFF00000100007F", True, "127.0.0.1"),  # v4-mapped: the IPv4 address
    ("zz", False, None),
    ("0100007F00", False, None),
])
def test_proc_net_addresses_are_decoded_word_by_word(text, v6, expected):
    found = plain_http._proc_address(text, v6)
    assert (str(found) if found is not None else None) == expected


# -- connections open before the sensor ------------------------------------------------------------

@pytest.fixture
def connected(listener):
    """A real loopback connection of this process to `listener`: (client socket, accepted socket)."""
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    yield client, accepted
    client.close()
    accepted.close()


def only(port: int, server_side: bool = False, where: str = "127.0.0.1") -> plain_http.PlainHttpConfig:
    return plain_http.from_config({"plain_http": ["%s:%d" % (where, port)], "plain_http_defaults": False,
                                   "plain_http_server": server_side})


def test_an_open_connection_to_the_set_is_found_as_its_client_end(listener, connected):
    client, accepted = connected
    found = plain_http.existing_connections(only(listener.getsockname()[1]))
    assert (os.getpid(), client.fileno(), False) in found
    assert not [f for f in found if f[1] == accepted.fileno()], "the accepting end only with the server side on"


def test_with_the_server_side_on_the_accepting_end_is_found_too(listener, connected):
    client, accepted = connected
    found = plain_http.existing_connections(only(listener.getsockname()[1], server_side=True))
    assert (os.getpid(), client.fileno(), False) in found and (os.getpid(), accepted.fileno(), True) in found
    assert not [f for f in found if f[1] == listener.fileno()], "a listener is no connection"


def test_connections_outside_the_set_are_not_found(listener, connected):
    assert plain_http.existing_connections(only(listener.getsockname()[1], True, "10.0.0.0/8")) == []
    assert plain_http.existing_connections(only(listener.getsockname()[1] ^ 1, True)) == []


def test_unreadable_proc_net_lines_are_skipped(tmp_path):
    (tmp_path / "net").mkdir()
    good = "   0: 0100007F:2CAA 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000 0 4242 1"
    (tmp_path / "net" / "tcp").write_text("header\n" + good + "\n  1: garbage\n  2: ZZ:1 0100007F:xx 01 a b c d e f\n")
    (tmp_path / "net" / "tcp6").write_bytes(b"header\n\xff\xfe\n")
    sockets = list(plain_http._proc_net_tcp(str(tmp_path)))
    assert [(s.state, s.local[1], s.remote[1], s.inode) for s in sockets] == [("01", 0x2CAA, 0xD431, 4242)]
