"""Ending the helper processes tests start (servers, buses, daemons)."""
from __future__ import annotations

import subprocess


def stop_process(process: "subprocess.Popen", timeout: float = 5) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
