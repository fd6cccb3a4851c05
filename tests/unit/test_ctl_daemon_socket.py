"""daemon_socket.listening_paths: only the listening, named Unix sockets a process holds."""
from __future__ import annotations

import os
import socket

import pytest

from oisp_ctl.daemon_socket import listening_paths


@pytest.fixture
def sockets(tmp_path):
    """A listening socket, a bound one that does not listen, an abstract listener, a socketpair."""
    held = []

    def unix(path=None, listen=False):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.append(sock)
        if path is not None:
            sock.bind(path)
        if listen:
            sock.listen(1)
        return sock

    unix(str(tmp_path / "control.sock"), listen=True)
    unix(str(tmp_path / "bound-only.sock"))
    unix("\0oisp-test-abstract-%d" % os.getpid(), listen=True)
    held.extend(socket.socketpair())
    yield tmp_path
    for sock in held:
        sock.close()


def test_only_the_named_listening_socket_is_found(sockets):
    assert listening_paths(os.getpid()) == [str(sockets / "control.sock")]


def test_a_closed_listener_is_gone(sockets, tmp_path):
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    extra.bind(str(tmp_path / "second.sock"))
    extra.listen(1)
    assert sorted(listening_paths(os.getpid())) == sorted([str(sockets / "control.sock"), str(tmp_path / "second.sock")])
    extra.close()
    assert listening_paths(os.getpid()) == [str(sockets / "control.sock")]


def test_a_process_that_is_gone_raises_oserror():
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    with pytest.raises(OSError):
        listening_paths(child)
