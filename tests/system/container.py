"""A Debian 12 container booted with systemd-nspawn, driven from the host with nsenter.

The host needs no systemd of its own: nspawn runs with --register=no --keep-unit (no machined,
no scope), and commands enter the container's namespaces through its PID 1 (nsenter -a), so
`systemctl` inside talks to the container's systemd. The container has a private network (only
its own loopback) and a system call filter that lets bcc load programs (bpf, perf_event_open).
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

ROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIMEOUT_S = 120
SHUTDOWN_TIMEOUT_S = 60


class ContainerError(RuntimeError):
    """The container did not boot, or a command inside it failed; the message has its output."""


class Container:
    """One booted copy of a cached root filesystem; the copy is removed by `remove()`."""

    def __init__(self, pristine: Path, name: str = "oisp-system-test") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="oisp-system.", dir="/var/tmp"))
        # cp -a keeps owners, modes and hard links; the cache itself is never booted
        subprocess.run(["cp", "-a", "%s/." % pristine, str(self.root)], check=True)
        self.name = name
        self.log_path = self.root.with_suffix(".nspawn.log")
        self._nspawn: Optional["subprocess.Popen[bytes]"] = None
        self.leader = 0
        self.shutdown_s = 0.0

    def boot(self) -> None:
        """Start systemd in the container and wait until it has finished booting."""
        with open(self.log_path, "wb") as log:
            self._nspawn = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "--directory", str(self.root), "--boot",
                 "--machine", self.name, "--register=no", "--keep-unit", "--private-network",
                 "--capability=all", "--system-call-filter=bpf perf_event_open",
                 "--console=passive"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while not self.leader:
            if self._nspawn.poll() is not None or time.monotonic() > deadline:
                raise ContainerError("systemd-nspawn did not start the container:\n" + self.nspawn_log())
            found = subprocess.run(["pgrep", "-P", str(self._nspawn.pid)], capture_output=True, text=True)
            self.leader = int(found.stdout.split()[0]) if found.stdout.strip() else 0
            time.sleep(0.2)
        while True:
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=BOOT_TIMEOUT_S)
            # "starting" is printed while --wait cannot reach the manager yet (its bus is not up)
            if state.stdout.strip() in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise ContainerError("the container did not finish booting: %s\n%s" % (state.stdout, self.nspawn_log()))
            time.sleep(0.5)

    def nspawn_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _enter(self, uid: Optional[int] = None, user: Optional[str] = None) -> List[str]:
        command = ["nsenter", "--target", str(self.leader), "--all", "--"]
        if user is not None:
            command += ["setpriv", "--reuid", user, "--regid", user, "--init-groups",
                        "env", "-i", "PATH=/usr/bin:/bin", "HOME=/home/%s" % user, "USER=%s" % user]
        else:
            command += ["env", "-i", "PATH=" + ROOT_PATH, "HOME=/root", "LANG=C.UTF-8"]
        return command

    def run(self, argv: Sequence[str], *, user: Optional[str] = None, check: bool = True,
            timeout: float = 120, input: Optional[str] = None) -> "subprocess.CompletedProcess[str]":
        """Run `argv` inside, as root or as `user` (with that user's groups)."""
        done = subprocess.run(self._enter(user=user) + list(argv), capture_output=True, text=True,
                              timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise ContainerError("%s (as %s) exited %d:\n%s%s" % (
                " ".join(argv), user or "root", done.returncode, done.stdout, done.stderr))
        return done

    def popen(self, argv: Sequence[str], *, user: Optional[str] = None, **kwargs) -> "subprocess.Popen[str]":
        """Start `argv` inside and return at once (for servers)."""
        return subprocess.Popen(self._enter(user=user) + list(argv), text=True, start_new_session=True, **kwargs)

    def path(self, inside: str) -> Path:
        """The host path of a file inside the container (to copy things in before they are used)."""
        return self.root / inside.lstrip("/")

    def shutdown(self) -> None:
        """Halt the container (nspawn turns SIGTERM into an orderly shutdown), then kill if stuck."""
        if self._nspawn is None or self._nspawn.poll() is not None:
            return
        started = time.monotonic()
        self._nspawn.terminate()
        try:
            self._nspawn.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self._nspawn.pid, 9)
            self._nspawn.wait(timeout=10)
        self.shutdown_s = time.monotonic() - started

    def remove(self) -> None:
        self.shutdown()
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=False)
        if self.log_path.exists():
            self.log_path.unlink()
