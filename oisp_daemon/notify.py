"""sd_notify for the foreground recorder and the daemon.

Under systemd (Type=notify) NOTIFY_SOCKET is set; tests play systemd by setting it to a socket
of their own. Without it there is nobody to tell, and nothing is sent.
"""
from __future__ import annotations

import os


def notify(*lines: str) -> None:
    """Send one sd_notify datagram made of the given KEY=VALUE lines."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    import sdnotify  # distro package python3-sdnotify

    sdnotify.SystemdNotifier().notify("\n".join(lines))
