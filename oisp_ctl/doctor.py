"""`oisp-ctl doctor`: is this machine ready for the sensor, and if not, what exactly to do.

Each check looks at one prerequisite the daemon needs (kernel, BTF, tracefs, kernel headers, bcc,
libssl), or that the operator needs (a reachable daemon, group membership), and says OK, WARN
(works, with a limit worth knowing) or FAIL (the sensor cannot work), with the command that fixes
it. With a daemon running, the last check lists the processes it saw talking TLS through a
library it cannot read (status' unseen_tls). Everything runs unprivileged and read-only.
oisp_ctl must not import bcc (a root-only, distro-only dependency), so bcc is tried in a
separate interpreter.
"""
from __future__ import annotations

import glob
import grp
import os
import platform
import pwd
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from oisp_ctl import protocol
from oisp_ctl.client import ClientError, SocketClient
from oisp_ctl.format import unseen_line
from oisp_ctl.protocol import ProtocolError

OK = "OK"
WARN = "WARN"
FAIL = "FAIL"

# The capture reads a BPF ring buffer (BPF_MAP_TYPE_RINGBUF), which Linux has since 5.8.
MIN_KERNEL = (5, 8)
BTF_PATH = "/sys/kernel/btf/vmlinux"
# The daemon runs on the distro interpreter: that is where python3-bpfcc must be importable.
DAEMON_PYTHON = "/usr/bin/python3"
USER_GROUP = "oisp"
ADMIN_GROUP = "oisp-admin"
COMMAND_TIMEOUT = 30.0
# systemd's search path for system units, and the unit the packages install
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system", "/lib/systemd/system")
UNIT_NAME = "oisp-sensor.service"
SHOWN_UNSEEN = 5  # processes named in the unseen check (oisp-ctl status lists them all)

# (returncode, stdout) of a command, or None when it cannot be run at all
Runner = Callable[[Sequence[str]], Optional[Tuple[int, str]]]


@dataclass
class Check:
    """One line of the report: `fix` says what to do when status is not OK."""

    name: str
    status: str
    detail: str
    fix: str = ""


def run_command(argv: Sequence[str]) -> Optional[Tuple[int, str]]:
    """Run a command with a timeout; None if it does not exist or hangs."""
    try:
        done = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode, done.stdout


def _version(release: str) -> Optional[Tuple[int, int]]:
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_kernel(release: str) -> Check:
    version = _version(release)
    if version is None:
        return Check("kernel", WARN, "cannot read a version from %r" % release,
                     "make sure the kernel is Linux %d.%d or newer" % MIN_KERNEL)
    if version < MIN_KERNEL:
        return Check("kernel", FAIL, "Linux %s is older than %d.%d, which the BPF ring buffer "
                     "needs" % ((release,) + MIN_KERNEL),
                     "boot a kernel %d.%d or newer" % MIN_KERNEL)
    return Check("kernel", OK, "Linux %s" % release)


def check_btf(path: str = BTF_PATH) -> Check:
    if os.path.exists(path):
        return Check("btf", OK, "kernel type information at %s" % path)
    return Check("btf", WARN, "%s is missing: the kernel has no BTF, so bcc depends entirely on "
                 "kernel headers (see the headers check)" % path,
                 "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels are)")


def _mounts(mounts_file: str) -> List[Tuple[str, str]]:
    """(fstype, mount point) pairs."""
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as fh:
            rows = [line.split() for line in fh]
    except OSError:
        return []
    return [(row[2], row[1]) for row in rows if len(row) >= 3]


def check_tracefs(mounts_file: str = "/proc/mounts",
                  filesystems_file: str = "/proc/filesystems") -> Check:
    points = [point for fstype, point in _mounts(mounts_file) if fstype == "tracefs"]
    if points:
        return Check("tracefs", OK, "mounted at %s" % ", ".join(points))
    try:
        with open(filesystems_file, encoding="utf-8") as fh:
            supported = any(line.split()[-1:] == ["tracefs"] for line in fh)
    except OSError:
        supported = True  # cannot tell; assume the usual
    if not supported:
        return Check("tracefs", FAIL, "this kernel has no tracefs, which uprobes and tracepoints "
                     "need", "use a kernel built with CONFIG_FTRACE=y and CONFIG_UPROBE_EVENTS=y")
    return Check("tracefs", WARN, "tracefs is not mounted; the daemon mounts it when it starts",
                 "or mount it now: sudo mount -t tracefs tracefs /sys/kernel/tracing")


def _usable_headers(tree: str) -> bool:
    include = os.path.join(tree, "include")
    return os.path.isfile(os.path.join(include, "generated", "autoconf.h")) or (
        os.path.isdir(os.path.join(include, "linux"))
        and os.path.isdir(os.path.join(include, "generated")))


def _debian_header_pairs(usr_src: str) -> List[str]:
    """Installed Debian header packages the daemon can assemble a tree from (newest first)."""
    found = []
    for arch_dir in glob.glob(os.path.join(usr_src, "linux-headers-*-amd64")) + glob.glob(
            os.path.join(usr_src, "linux-headers-*-arm64")):
        common = re.sub(r"-(amd64|arm64)$", "-common", arch_dir)
        if os.path.isdir(common):
            found.append(os.path.basename(arch_dir))
    return sorted(found, key=lambda n: [int(x) for x in re.findall(r"\d+", n)], reverse=True)


def check_headers(release: str, modules_dir: str = "/lib/modules",
                  usr_src: str = "/usr/src") -> Check:
    build = os.path.join(modules_dir, release, "build")
    if _usable_headers(build):
        return Check("headers", OK, "headers of the running kernel at %s" % build)
    others = _debian_header_pairs(usr_src)
    if others:
        return Check("headers", OK, "no headers for %s, but the daemon assembles a tree from %s "
                     "(safe: its BPF programs read no kernel structs)" % (release, others[0]))
    return Check("headers", FAIL, "%s is missing and no linux-headers-* are installed in %s; bcc "
                 "cannot compile the probes" % (build, usr_src),
                 "Debian/Ubuntu: sudo apt-get install linux-headers-%s (or linux-headers-amd64 "
                 "when there is none for this kernel); Fedora/RHEL: sudo dnf install "
                 "kernel-devel-%s" % (release, release))


def check_bcc(run: Runner = run_command, python: Optional[str] = None) -> Check:
    interpreter = python or (DAEMON_PYTHON if os.path.exists(DAEMON_PYTHON)
                             else shutil.which("python3") or "python3")
    done = run([interpreter, "-c", "import bcc, sys; sys.stdout.write(getattr(bcc, '__version__', ''))"])
    fix = ("Debian/Ubuntu: sudo apt-get install python3-bpfcc; Fedora/RHEL: sudo dnf install "
           "python3-bcc (the PyPI package named bcc is unrelated)")
    if done is None:
        return Check("bcc", FAIL, "cannot run %s" % interpreter, "install python3, then " + fix)
    code, output = done
    if code != 0:
        last = output.strip().splitlines()[-1:] or ["import failed"]
        return Check("bcc", FAIL, "%s cannot import bcc: %s" % (interpreter, last[0]), fix)
    return Check("bcc", OK, "bcc %s importable by %s" % (output.strip() or "(version unknown)",
                                                         interpreter))


def _ldconfig() -> str:
    return shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), "ldconfig")


def check_libssl(run: Runner = run_command) -> Check:
    done = run([_ldconfig(), "-p"])
    if done is None or done[0] != 0:
        return Check("libssl", WARN, "cannot read the linker cache (ldconfig -p)",
                     "check by hand that libssl.so.3 or libssl.so.1.1 is installed")
    names = sorted({m.group(1) for m in re.finditer(r"^\s*(libssl\.so\.[\w.]+)", done[1], re.M)})
    if not names:
        return Check("libssl", WARN, "no libssl in the linker cache: programs using the system "
                     "OpenSSL cannot be seen (statically linked TLS needs binary-paths)",
                     "sudo apt-get install libssl3 (Fedora/RHEL: sudo dnf install openssl-libs)")
    return Check("libssl", OK, ", ".join(names))


def installed_unit(unit_dirs: Sequence[str] = UNIT_DIRS) -> Optional[str]:
    """Path of the installed oisp-sensor.service, or None (a checkout run from its venv has none)."""
    return next((path for path in (os.path.join(d, UNIT_NAME) for d in unit_dirs)
                 if os.path.exists(path)), None)


def sensor_command() -> str:
    """The oisp-sensor beside this interpreter: console scripts share its bin dir (venv or /usr)."""
    path = os.path.join(os.path.dirname(sys.executable), "oisp-sensor")
    return path if os.path.exists(path) else "oisp-sensor"


def check_daemon(socket_path: str, timeout: float = 5.0,
                 unit_dirs: Sequence[str] = UNIT_DIRS) -> Check:
    client = SocketClient(socket_path, timeout=timeout)
    unit = installed_unit(unit_dirs)
    logs = "journalctl -u oisp-sensor" if unit else "the output of oisp-sensor run"
    try:
        hello = client.connect()
    except ClientError as exc:
        if unit:
            start = "sudo systemctl start oisp-sensor; then %s if it does not stay up" % logs
        else:
            start = ("no %s is installed, so start the daemon in the foreground: sudo %s run "
                     "(add --config FILE for a configuration other than the default)"
                     % (UNIT_NAME, sensor_command()))
        return Check("daemon", FAIL, str(exc), start)
    except ProtocolError as exc:
        return Check("daemon", FAIL, exc.message, "install oisp-ctl from the same release as the "
                     "daemon" if exc.code == "protocol_version" else "see " + logs)
    finally:
        client.close()
    perms = hello.get("permissions") if isinstance(hello.get("permissions"), list) else []
    return Check("daemon", OK, "%s answers on %s; you may: %s"
                 % (hello.get("daemon", "the daemon"), socket_path, ", ".join(perms) or "nothing"))


def _group_state(group: str, user: str, primary_gid: int,
                 process_gids: Sequence[int]) -> str:
    """"missing" (no such group), "active", "pending" (in the database, not this login) or "no"."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return "missing"
    if entry.gr_gid in process_gids:
        return "active"
    if user in entry.gr_mem or entry.gr_gid == primary_gid:
        return "pending"
    return "no"


def check_groups(uid: Optional[int] = None, process_gids: Optional[Sequence[int]] = None) -> Check:
    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return Check("groups", OK, "root: every operation is allowed")
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return Check("groups", WARN, "uid %d has no user entry, so it is in no group: you can "
                     "tail only your own processes' events" % uid,
                     "run oisp-ctl as a user with an entry in /etc/passwd")
    gids = list(os.getgroups()) + [os.getgid()] if process_gids is None else list(process_gids)
    user = entry.pw_name
    admin = _group_state(ADMIN_GROUP, user, entry.pw_gid, gids)
    member = _group_state(USER_GROUP, user, entry.pw_gid, gids)
    if admin == "active":
        return Check("groups", OK, "%s is in %s: every operation is allowed" % (user, ADMIN_GROUP))
    if "pending" in (admin, member):
        group = ADMIN_GROUP if admin == "pending" else USER_GROUP
        return Check("groups", WARN, "%s was added to %s after this login started, so it does not "
                     "count yet" % (user, group), "log out and in again (or run: newgrp %s)" % group)
    if member == "active":
        return Check("groups", OK, "%s is in %s: may tail everything and manage own sessions; "
                     "changing redaction and binary paths needs %s" % (user, USER_GROUP, ADMIN_GROUP))
    if member == "missing":
        return Check("groups", WARN, "group %s does not exist: only root can manage sessions"
                     % USER_GROUP, "reinstall the oisp-sensor package (it creates the groups), "
                     "or: sudo groupadd --system %s" % USER_GROUP)
    return Check("groups", WARN, "%s is in neither %s nor %s: you can tail only your own "
                 "processes' events" % (user, USER_GROUP, ADMIN_GROUP),
                 "sudo usermod -aG %s %s, then log in again" % (USER_GROUP, user))


def daemon_status(socket_path: str, timeout: float = 5.0) -> Optional[Dict[str, Any]]:
    """The running daemon's status, or None when it cannot be had (no daemon, no permission:
    the daemon and groups checks say why)."""
    client = SocketClient(socket_path, timeout=timeout)
    try:
        client.connect()
        status = client.call(protocol.OP_STATUS)
    except (ClientError, ProtocolError):
        return None
    finally:
        client.close()
    return status if isinstance(status, dict) else None


def check_unseen(status: Dict[str, Any]) -> Check:
    """Processes the running daemon saw connect to a TLS port through a library it cannot see."""
    unseen = status.get("unseen_tls")
    if not isinstance(unseen, list):
        return Check("unseen", WARN, "the daemon does not report unseen TLS processes",
                     "install oisp-ctl from the same release as the daemon")
    if not unseen:
        return Check("unseen", OK, "every process seen talking TLS uses a library the sensor probes")
    entries = [u for u in unseen if isinstance(u, dict)]
    names = sorted({str(u.get("library") or "an unknown library") for u in entries})
    named_first = sorted(entries, key=lambda u: u.get("library") is None)  # the most telling ones
    more = " and %d more" % (len(entries) - SHOWN_UNSEEN) if len(entries) > SHOWN_UNSEEN else ""
    return Check("unseen", WARN, "%d processes talk TLS the sensor cannot see: %s%s (through %s)"
                 % (len(unseen), "; ".join(unseen_line(u) for u in named_first[:SHOWN_UNSEEN]), more,
                    ", ".join(names)),
                 "nothing captures these libraries yet; a copy of libssl or a binary with SSL_* "
                 "symbols can be added with: oisp-ctl binary-paths add PATH")


def run_checks(socket_path: str, run: Runner = run_command) -> List[Check]:
    """Every check against this machine, in the order a person would fix things."""
    release = platform.release()
    checks = [check_kernel(release), check_btf(), check_tracefs(), check_headers(release),
              check_bcc(run), check_libssl(run), check_daemon(socket_path), check_groups()]
    status = daemon_status(socket_path) if checks[6].status == OK else None
    if status is not None:
        checks.append(check_unseen(status))
    return checks


def render(checks: List[Check]) -> str:
    """The report: one line per check and, under anything not OK, what to do."""
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        lines.append("%-4s  %-*s  %s" % (check.status, width, check.name, check.detail))
        if check.fix and check.status != OK:
            lines.append("      %-*s  fix: %s" % (width, "", check.fix))
    return "\n".join(lines)


def as_json(checks: List[Check]) -> List[Dict[str, str]]:
    return [asdict(c) for c in checks]


def exit_code(checks: List[Check]) -> int:
    """1 if any check failed: the sensor cannot work here as things are."""
    return 1 if any(c.status == FAIL for c in checks) else 0
