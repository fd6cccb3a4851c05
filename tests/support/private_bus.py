"""A private dbus-daemon configured like the system bus, with the project's real bus policy.

Tests must not touch the machine's system bus (or need one: containers have none), but they must
prove that systemd/dev.oisp.Sensor1.conf really lets only root own the name. So the bus here is a
separate dbus-daemon process whose configuration copies the system bus's default policy (deny
owning names and method calls, allow talking to the bus driver) and <include>s the project's file,
exactly as /usr/share/dbus-1/system.conf includes system.d/*.conf.

The socket lives in a world-traversable temporary directory so that tests can also connect as an
unprivileged user (setpriv), which is how the policy is checked.
"""
from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from tests.support.paths import REPO_ROOT
from tests.support.processes import stop_process

POLICY_PATH = REPO_ROOT / "systemd" / "dev.oisp.Sensor1.conf"
DBUS_DAEMON = "dbus-daemon"
_START_TIMEOUT_S = 10.0

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""


class PrivateBus:
    """A running private dbus-daemon; `address` is what clients connect to."""

    def __init__(self, process: "subprocess.Popen[bytes]", address: str, directory: str) -> None:
        self.process = process
        self.address = address
        self.directory = directory

    def stop(self) -> None:
        """Terminate the daemon and remove its directory."""
        stop_process(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_private_bus(policy: Path = POLICY_PATH) -> PrivateBus:
    """Start a system-style dbus-daemon that includes `policy`; raise RuntimeError if it cannot."""
    if shutil.which(DBUS_DAEMON) is None:
        raise RuntimeError("dbus-daemon is not installed; scripts/setup.sh installs the Debian "
                           "package dbus")
    directory = tempfile.mkdtemp(prefix="oisp-bus-")
    os.chmod(directory, 0o755)  # unprivileged test clients must reach the socket
    config = os.path.join(directory, "bus.conf")
    with open(config, "w", encoding="utf-8") as f:
        f.write(_CONFIG.format(socket=os.path.join(directory, "socket"), policy=policy))
    log_path = os.path.join(directory, "dbus-daemon.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [DBUS_DAEMON, "--config-file=%s" % config, "--nofork", "--nopidfile", "--nosyslog",
             "--print-address=1"],
            stdout=subprocess.PIPE, stderr=log,
        )
    address = _read_address(process)
    if address is None:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
        with open(log_path, encoding="utf-8", errors="replace") as f:
            err = f.read().strip()
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError("dbus-daemon did not start: %s" % (err or "no output"))
    return PrivateBus(process, address, directory)


def _read_address(process: "subprocess.Popen[bytes]") -> Optional[str]:
    """The first line dbus-daemon prints once it listens, or None if it exits or stays silent."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        if not sel.select(_START_TIMEOUT_S):
            return None
    line = process.stdout.readline().decode().strip()
    return line or None


@contextmanager
def private_bus(policy: Path = POLICY_PATH) -> Iterator[PrivateBus]:
    """A private bus for the duration of the block."""
    bus = start_private_bus(policy)
    try:
        yield bus
    finally:
        bus.stop()
