"""A private dbus-daemon configured like the system bus, with the project's real bus policy.

Tests must not touch the machine's system bus (or need one: containers have none), but they must
prove that systemd/dev.oisp.Sensor1.conf really lets only root own the name. So the bus here is a
separate dbus-daemon process whose configuration copies the system bus's default policy (deny
owning names and method calls, allow talking to the bus driver) and <include>s the project's file,
exactly as /usr/share/dbus-1/system.conf includes system.d/*.conf.

The socket lives in a world-traversable temporary directory so that tests can also connect as an
unprivileged user (setpriv), which is how the policy is checked. `restart()` replaces the
dbus-daemon with a new one on the same address, as a restart of the system bus does.

`start_polkitd` runs the real polkitd on such a bus (with polkit's own bus policy included), in a
private mount namespace where the polkit action and rule directories are the test's: the project's
.policy file and the rules a test writes, nothing of the machine's.
"""
from __future__ import annotations

import os
import pwd
import selectors
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from tests.support.paths import REPO_ROOT
from tests.support.processes import stop_process

POLICY_PATH = REPO_ROOT / "systemd" / "dev.oisp.Sensor1.conf"
POLKIT_ACTIONS = REPO_ROOT / "systemd" / "dev.oisp.Sensor1.policy"
POLKIT_BUS_POLICY = Path("/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf")
POLKITD = Path("/usr/lib/polkit-1/polkitd")
POLKIT_NAME = "org.freedesktop.PolicyKit1"
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
  {includes}
</busconfig>
"""


class PrivateBus:
    """A running private dbus-daemon; `address` is what clients connect to."""

    def __init__(self, directory: str, policies: Sequence[Path]) -> None:
        self.directory = directory
        self.config = os.path.join(directory, "bus.conf")
        self.log_path = os.path.join(directory, "dbus-daemon.log")
        includes = "\n  ".join("<include>%s</include>" % p for p in policies)
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(_CONFIG.format(socket=os.path.join(directory, "socket"), includes=includes))
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.address = ""

    def start(self) -> None:
        """Start the dbus-daemon; RuntimeError with its log if it does not come up."""
        try:
            os.unlink(os.path.join(self.directory, "socket"))  # left by the one stopped before
        except FileNotFoundError:
            pass
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                [DBUS_DAEMON, "--config-file=%s" % self.config, "--nofork", "--nopidfile",
                 "--nosyslog", "--print-address=1"],
                stdout=subprocess.PIPE, stderr=log,
            )
        address = _read_address(process)
        if address is None:
            process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                err = f.read().strip()
            raise RuntimeError("dbus-daemon did not start: %s" % (err or "no output"))
        self.process = process
        self.address = address.split(",guid=")[0]  # the same after a restart

    def stop_daemon(self) -> None:
        """Stop the dbus-daemon (as the system bus going away); `start()` brings one back."""
        if self.process is not None:
            stop_process(self.process)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def restart(self) -> None:
        """A new dbus-daemon on the same address: every connection to the old one is cut."""
        self.stop_daemon()
        self.start()

    def stop(self) -> None:
        """Terminate the daemon and remove its directory."""
        self.stop_daemon()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_private_bus(policy: Path = POLICY_PATH, polkit: bool = False) -> PrivateBus:
    """Start a system-style dbus-daemon that includes `policy` (and polkit's bus policy)."""
    if shutil.which(DBUS_DAEMON) is None:
        raise RuntimeError("dbus-daemon is not installed; scripts/setup.sh installs the Debian "
                           "package dbus")
    directory = tempfile.mkdtemp(prefix="oisp-bus-")
    os.chmod(directory, 0o755)  # unprivileged test clients must reach the socket
    policies: List[Path] = [policy] + ([POLKIT_BUS_POLICY] if polkit else [])
    bus = PrivateBus(directory, policies)
    try:
        bus.start()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return bus


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
def private_bus(policy: Path = POLICY_PATH, polkit: bool = False) -> Iterator[PrivateBus]:
    """A private bus for the duration of the block."""
    bus = start_private_bus(policy, polkit)
    try:
        yield bus
    finally:
        bus.stop()


# polkitd reads actions and rules from fixed directories: in its own mount namespace they are
# the test's (bind mounts), and the machine's stay untouched.
_POLKITD_IN_NAMESPACE = (
    'mount --bind "$0" /usr/share/polkit-1/actions && '
    'mount --bind "$1" /etc/polkit-1/rules.d && '
    'mount --bind "$2" /usr/share/polkit-1/rules.d && exec "$3" --no-debug'
)


class Polkitd:
    """A real polkitd on a private bus; `rules` is its /etc/polkit-1/rules.d."""

    def __init__(self, bus: PrivateBus, directory: Path, process: "subprocess.Popen[bytes]"
                 ) -> None:
        self.bus = bus
        self.rules = directory / "rules"
        self.log_path = directory / "polkitd.log"
        self.process = process

    def write_rule(self, name: str, javascript: str) -> None:
        """A rules file; polkitd notices the change and reloads its rules."""
        path = self.rules / name
        path.write_text(javascript)
        os.chmod(path, 0o644)

    def stop(self) -> None:
        stop_process(self.process)


def start_polkitd(bus: PrivateBus, directory: Path) -> Polkitd:
    """polkitd on `bus` (started with polkit=True) with the project's actions and no rules yet."""
    if not POLKITD.exists():
        raise RuntimeError("%s is missing; scripts/setup.sh installs the Debian package polkitd"
                           % POLKITD)
    actions, rules, shared_rules = directory / "actions", directory / "rules", \
        directory / "shared-rules"
    for path in (actions, rules, shared_rules):
        path.mkdir()
    shutil.copy(POLKIT_ACTIONS, actions / POLKIT_ACTIONS.name)
    polkitd_user = pwd.getpwnam("polkitd")
    for path in (rules, shared_rules):  # polkitd reads its rules as user polkitd
        os.chown(path, polkitd_user.pw_uid, 0)
        os.chmod(path, 0o755)
    os.chmod(actions, 0o755)
    log = open(directory / "polkitd.log", "wb")
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _POLKITD_IN_NAMESPACE,
         str(actions), str(rules), str(shared_rules), str(POLKITD)],
        stdout=log, stderr=subprocess.STDOUT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "DBUS_SYSTEM_BUS_ADDRESS": bus.address},
    )
    log.close()
    daemon = Polkitd(bus, directory, process)
    if not _wait_for_name(bus.address, POLKIT_NAME):
        daemon.stop()
        raise RuntimeError("polkitd did not take %s: %s" % (POLKIT_NAME, daemon.log_path.read_text()))
    return daemon


def _wait_for_name(address: str, name: str) -> bool:
    """Whether `name` gets an owner on the bus within the start timeout (asked with dbus-send)."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["dbus-send", "--bus=%s" % address, "--print-reply", "--dest=org.freedesktop.DBus",
             "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner", "string:%s" % name],
            capture_output=True, text=True, timeout=10)
        if "boolean true" in done.stdout:
            return True
        time.sleep(0.1)
    return False
