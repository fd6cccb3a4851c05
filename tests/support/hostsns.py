"""Run a client with its own /etc/hosts, without touching the machine's files.

The command runs in a private mount namespace (``unshare --mount``, needs root) in which a
generated hosts file is bind-mounted over /etc/hosts, so ``https://api.openai.com/...`` reaches
the replay server on its loopback address while the URL, SNI and Host header stay real.

``unshare`` (without ``--fork``) and ``sh -c 'exec ...'`` both exec in place, so the pid of the
returned Popen is the pid of the client itself: tests filter the sensor's events by it.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, List, Mapping, Sequence

NSSWITCH = Path("/etc/nsswitch.conf")
NSCD_SOCKETS = (Path("/run/nscd/socket"), Path("/var/run/nscd/socket"))

_BIND_AND_EXEC = 'mount --bind "$0" /etc/hosts && exec "$@"'

LOCAL_LINES = (
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
)


def check_resolver(nsswitch: Path = NSSWITCH) -> None:
    """Raise unless glibc will answer host lookups from /etc/hosts before anything else.

    nscd would answer from its cache of the real file, and an nsswitch ``hosts:`` line not
    starting with ``files`` would ask DNS (or systemd-resolved) first.
    """
    for sock in NSCD_SOCKETS:
        if sock.exists():
            raise RuntimeError("nscd is running (%s): it would bypass the private /etc/hosts" % sock)
    sources: List[str] = []
    if nsswitch.exists():
        for line in nsswitch.read_text().splitlines():
            if line.split("#", 1)[0].strip().startswith("hosts:"):
                sources = line.split("#", 1)[0].split(":", 1)[1].split()
    if sources and sources[0] != "files":
        raise RuntimeError("%s looks up hosts in %s before files" % (nsswitch, sources[0]))


def hosts_file_text(mapping: Mapping[str, str]) -> str:
    """hosts(5) text: localhost lines plus one ``address name`` line per mapping entry."""
    lines = list(LOCAL_LINES)
    lines += ["%s\t%s" % (address, name) for name, address in sorted(mapping.items())]
    return "\n".join(lines) + "\n"


class FinishedProcess(subprocess.CompletedProcess):
    """A CompletedProcess that keeps the pid, which the sensor's events name."""

    def __init__(self, args: Any, returncode: int, stdout: Any, stderr: Any, pid: int) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.pid = pid


class HostsNamespace:
    """A hosts file and the means to run commands that see it as /etc/hosts."""

    def __init__(self, hosts_file: Path) -> None:
        self.hosts_file = Path(hosts_file)

    @classmethod
    def create(cls, directory: Path, mapping: Mapping[str, str], name: str = "hosts") -> "HostsNamespace":
        """Write ``mapping`` (host name -> address) to ``directory/name`` after checking the resolver."""
        check_resolver()
        path = Path(directory) / name
        path.write_text(hosts_file_text(mapping))
        return cls(path)

    def argv(self, command: Sequence[str]) -> List[str]:
        """The command line that runs ``command`` with the private /etc/hosts."""
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _BIND_AND_EXEC,
                str(self.hosts_file)] + [str(part) for part in command]

    def popen(self, command: Sequence[str], **kwargs: Any) -> "subprocess.Popen[bytes]":
        """Start ``command``; the Popen's pid is the client's pid once it runs."""
        if os.geteuid() != 0:
            raise PermissionError("a private mount namespace needs root")
        return subprocess.Popen(self.argv(command), **kwargs)

    def run(self, command: Sequence[str], timeout: float = 120.0, **kwargs: Any) -> FinishedProcess:
        """Run ``command`` to completion, capturing output unless told otherwise."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        with self.popen(command, **kwargs) as process:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise
            return FinishedProcess(process.args, process.returncode, stdout, stderr, process.pid)
