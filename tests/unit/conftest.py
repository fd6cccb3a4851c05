"""Fixtures shared by the control-plane unit tests (socket server, oisp-ctl, D-Bus client)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def daemon(tmp_path):
    """The real Operations' daemon side without capture (tests/support/daemon_double.py)."""
    from tests.support.daemon_double import DaemonDouble

    double = DaemonDouble(str(tmp_path / "state"))
    yield double
    double.close()


@pytest.fixture
def public_dir():
    """A world-traversable directory, so that an unprivileged client can reach the socket."""
    path = tempfile.mkdtemp(prefix="oisp-ctl-test-")
    os.chmod(path, 0o755)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)
