"""A real `oisp-sensor run` for tests, in a directory of its own, with the test as systemd.

The test owns NOTIFY_SOCKET (a datagram socket) and so sees every sd_notify message; the control
socket, state, cache and runtime directories live in the test's directory, and D-Bus is a private
dbus-daemon or off. Other uids reach it with `setpriv`, as an unprivileged operator would.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import yaml

from tests.support.paths import REPO_ROOT
from tests.support.processes import stop_process

PYTHON = sys.executable
OISP_CTL = str(Path(sys.executable).parent / "oisp-ctl")  # the console script, as installed
# Existing Debian groups stand in for oisp / oisp-admin (control.user_group / admin_group are
# config keys), so the tests need not add groups to the machine.
USER_GROUP, USER_GID = "users", 100
ADMIN_GROUP, ADMIN_GID = "staff", 50
NOBODY = 65534
NOGROUP = 65534


def shared_tmpdir(prefix: str) -> Path:
    """A directory other uids can reach (pytest's own tmp dirs are 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def as_user(argv: Sequence[str], uid: int = NOBODY, gid: int = NOGROUP) -> List[str]:
    """Run argv as uid/gid with no supplementary groups; gid decides group membership here."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


class Notifications:
    """The test's NOTIFY_SOCKET: collects every sd_notify datagram the daemon sends."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: List[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except socket.timeout:
                continue
            except OSError:
                return

    def wait_for(self, line: str, after: int = 0, timeout: float = 120) -> int:
        """Index of the first message after `after` holding the line `line` (or its KEY= prefix)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, msg in enumerate(self.messages[after:], start=after):
                if any(part == line or (line.endswith("=") and part.startswith(line)) for part in msg.split("\n")):
                    return i
            time.sleep(0.05)
        raise AssertionError(f"no {line!r} from the daemon within {timeout}s; got {self.messages[after:]}")

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class DaemonProcess:
    def __init__(self, directory: Path, config: Dict[str, Any], dbus_address: Optional[str] = None) -> None:
        self.dir = directory
        self.socket = str(directory / "run" / "control.sock")
        base = {
            "paths": {
                "state_dir": str(directory / "state"),
                "cache_dir": str(directory / "cache"),
                "runtime_dir": str(directory / "run"),
            },
            "control": {"socket": self.socket, "user_group": USER_GROUP, "admin_group": ADMIN_GROUP},
            "dbus": {"enabled": dbus_address is not None, "address": dbus_address or "system"},
            "watchdog": {"stall_s": 5},
        }
        for key, value in config.items():
            base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
        self.config_file = directory / "config.yaml"
        self.config_file.write_text(yaml.safe_dump(base))
        (directory / "config.d").mkdir(exist_ok=True)
        self.notify = Notifications(directory)
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = directory / "daemon.log"

    def start(self) -> "DaemonProcess":
        start_index = len(self.notify.messages)
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "oisp_daemon.cli", "run", "--config", str(self.config_file)],
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, NOTIFY_SOCKET=self.notify.path),
        )
        try:
            self.notify.wait_for("READY=1", after=start_index)
        except AssertionError:
            raise AssertionError(f"daemon not ready:\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        code = stop_process(self.proc, timeout=60)
        self.proc = None
        return code

    def close(self) -> None:
        self.stop()
        self.notify.close()

    # -- oisp-ctl -----------------------------------------------------------------------------

    def ctl(
        self, *args: str, uid: int = 0, gid: int = NOGROUP, timeout: float = 60, bus: Optional[str] = None
    ) -> subprocess.CompletedProcess:
        """oisp-ctl as root, or as `uid` with primary group `gid` (which decides membership)."""
        argv = [OISP_CTL, "--socket", self.socket, *args]
        if uid != 0:
            argv = as_user(argv, uid, gid)
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        if bus is not None:
            env["OISP_DBUS_ADDRESS"] = bus
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/", env=env)

    def ctl_json(self, *args: str, **kw: Any) -> Any:
        result = self.ctl(*args, "--json", **kw)
        assert result.returncode == 0, f"oisp-ctl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        return json.loads(result.stdout)

    def tail_json(self, *args: str, uid: int = 0, gid: int = NOGROUP) -> List[Dict[str, Any]]:
        """Events the caller may see, replayed from the daemon's ring (tail without -f)."""
        result = self.ctl("tail", "--json", "--since", "3600", *args, uid=uid, gid=gid)
        assert result.returncode == 0, f"oisp-ctl tail failed ({result.returncode}):\n{result.stderr}"
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@contextmanager
def running_daemon(config: Optional[Dict[str, Any]] = None, dbus_address: Optional[str] = None,
                   forbidden: Sequence[str] = ("Traceback",)) -> Iterator[DaemonProcess]:
    """A started daemon in a directory of its own, stopped afterwards: it must exit 0 and its log
    must hold none of `forbidden` (a traceback anywhere, unless the test vouches for less)."""
    from tests.integration.conftest import cannot_run

    if os.geteuid() != 0:
        cannot_run("the daemon needs root")
    proc = DaemonProcess(shared_tmpdir("oisp-daemon-"), config or {}, dbus_address=dbus_address)
    proc.start()
    try:
        yield proc
    finally:
        code = proc.stop()
        log = proc.log()
        proc.close()
    assert code == 0, f"daemon exited with {code}:\n{log}"
    for text in forbidden:
        assert text not in log, log
