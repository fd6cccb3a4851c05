"""The control socket a given daemon process listens on, found from /proc rather than config.

systemd's ExecReload must wait until the reload is done (a bare SIGHUP returns at once, so
`systemctl reload` would report success before the daemon has read anything). The unit knows
only $MAINPID; the socket path is in the configuration the daemon read at start (control.socket
takes effect at restart), which the file on disk may no longer say. So the path is read from the
kernel: the listening Unix sockets among the process's descriptors. Needs root, or the same uid.
"""
from __future__ import annotations

import os
from typing import List

SOCKET_LINK_PREFIX = "socket:["
SO_ACCEPTCON = 0x10000  # the "Flags" column of /proc/net/unix for a listening socket


def _socket_inodes(pid: int) -> set:
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:  # closed since the listing
            continue
        if target.startswith(SOCKET_LINK_PREFIX):
            inodes.add(int(target[len(SOCKET_LINK_PREFIX):-1]))
    return inodes


def listening_paths(pid: int) -> List[str]:
    """Filesystem paths of the Unix sockets pid listens on (abstract and unnamed ones left out).

    Raises OSError when /proc/PID cannot be read (no such process, or not allowed).
    """
    inodes = _socket_inodes(pid)
    paths = []
    with open("/proc/%d/net/unix" % pid) as table:  # the process's own network namespace
        next(table, None)  # header: Num RefCount Protocol Flags Type St Inode Path
        for line in table:
            fields = line.split(None, 7)
            if len(fields) < 8 or fields[7].startswith("@"):
                continue
            if int(fields[3], 16) & SO_ACCEPTCON and int(fields[6]) in inodes:
                paths.append(fields[7].rstrip("\n"))
    return paths
