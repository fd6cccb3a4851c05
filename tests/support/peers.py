"""Unprivileged peers of the control socket, as a local attacker would run them.

Each runs as a real uid under `setpriv` on the system interpreter with nothing but the standard
library, so what it can do is exactly what any local user can do.
"""
from __future__ import annotations

import json
import subprocess
from typing import Any, Dict, List

from tests.support.processes import stop_process

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"

# Opens COUNT connections and sends nothing; prints how many were refused (a limit_exceeded
# line), then holds the rest until its stdin is closed.
_HOLDER = r"""
import selectors, socket, sys, time
path, count = sys.argv[1], int(sys.argv[2])
held, refused = [], 0
sel = selectors.DefaultSelector()
for _ in range(count):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.setblocking(False)
    held.append(s)
    sel.register(s, selectors.EVENT_READ)
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    for key, _ in sel.select(0.2):
        sel.unregister(key.fileobj)
        refused += b"limit_exceeded" in key.fileobj.recv(4096)
print(refused, flush=True)
sys.stdin.read()
"""

# Sends stdin's bytes on one connection, shuts its write side and prints every line the daemon
# sent until it closed: one reply per request shows the connection survived them all.
_TALKER = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.stdin.buffer.read())
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.buffer.write(data)
"""


def as_uid(argv: List[str], uid: int = NOBODY) -> List[str]:
    """argv as uid (and gid) `uid` with no supplementary groups."""
    return ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", *argv]


class Holder:
    """A process of `uid` holding up to `count` idle connections to the socket at `path`."""

    def __init__(self, path: str, count: int, uid: int = NOBODY) -> None:
        self.proc = subprocess.Popen(as_uid([SYSTEM_PYTHON, "-c", _HOLDER, path, str(count)], uid),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.strip():
            self.close()
            raise AssertionError("the connection holder of uid %d failed" % uid)
        self.refused = int(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        stop_process(self.proc)


def talk(path: str, lines: List[bytes], uid: int = NOBODY, timeout: float = 60) -> List[Dict[str, Any]]:
    """Send raw request lines on one connection as `uid`; the replies, in order."""
    done = subprocess.run(as_uid([SYSTEM_PYTHON, "-c", _TALKER, path], uid), input=b"".join(lines),
                          capture_output=True, timeout=timeout, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]



# One D-Bus method call to the daemon's Manager, its body as JSON on stdin (it may be far longer
# than an argument may be); prints the reply's error name and body as JSON.
_BUS_CALLER = r"""
import asyncio, json, sys
from dbus_next import Message, MessageType
from dbus_next.aio import MessageBus

async def main(address, member, signature):
    body = sys.stdin.read()
    bus = await MessageBus(bus_address=address).connect()
    reply = await bus.call(Message(destination="dev.oisp.Sensor1", path="/dev/oisp/Sensor1",
                                   interface="dev.oisp.Sensor1.Manager", member=member,
                                   signature=signature, body=json.loads(body)))
    error = reply.error_name if reply.message_type == MessageType.ERROR else None
    print(json.dumps({"error": error, "body": reply.body}))

asyncio.run(main(*sys.argv[1:]))
"""


def bus_call(address: str, member: str, signature: str, body: List[Any],
             uid: int = NOBODY) -> Dict[str, Any]:
    """Call dev.oisp.Sensor1.Manager.`member` as `uid`: {"error": name or None, "body": [...]}."""
    done = subprocess.run(as_uid([SYSTEM_PYTHON, "-c", _BUS_CALLER, address, member, signature],
                                 uid),
                          input=json.dumps(body), capture_output=True, text=True, timeout=60,
                          check=True)
    return json.loads(done.stdout)
