"""Shared pytest fixtures: the test CA, the replay server and the hosts namespace of its clients.

The support modules are imported inside the fixtures so that this file stays importable (and the
unit tests that do not need them keep running) where a test-only package such as trustme is
missing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from tests.support.hostsns import HostsNamespace
    from tests.support.replay_process import ReplayServerProcess
    from tests.support.tls import TestPki


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> "TestPki":
    """CA + server certificate for the provider host names (``.ca_file`` is what clients trust)."""
    from tests.support.tls import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def replay_server(test_pki: "TestPki", tmp_path_factory: pytest.TempPathFactory) -> Iterator["ReplayServerProcess"]:
    """A replay server process on its own loopback address, port 443; stopped after the test."""
    from tests.support.replay_process import start_replay_server

    with start_replay_server(test_pki, tmp_path_factory.mktemp("replay")) as server:
        yield server


@pytest.fixture
def hosts_ns(replay_server: "ReplayServerProcess", tmp_path_factory: pytest.TempPathFactory) -> "HostsNamespace":
    """Runs commands with an /etc/hosts that sends every provider host name to ``replay_server``."""
    return replay_server.hosts_namespace(tmp_path_factory.mktemp("hosts"))
