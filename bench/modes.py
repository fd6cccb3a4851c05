"""The three modes the overhead benchmarks compare in one run, and their report.

none (no probes), floor (bench/floor_probes.py: empty programs on the sensor's probe points, the
traps alone), sensor (`oisp-sensor record`). Callers interleave the modes over rounds and report
medians, so drift on a shared VM hits all three alike; the cost is read as sensor / floor.
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable
MODES = ("none", "floor", "sensor")

# unit (a write size, "request", ...) -> mode -> one value per round, in ns
Results = Dict[str, Dict[str, List[float]]]


def _wait_line(proc: subprocess.Popen, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline() if proc.stderr else ""
        if needle in line:
            return
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before '{needle}'")
    raise RuntimeError(f"timed out waiting for '{needle}' from {proc.args}")


def start_mode(mode: str, tmp: str, floor_paths: Sequence[str] = (), sensor_paths: Sequence[str] = (),
               timeout: float = 180) -> Optional[subprocess.Popen]:
    """Start a mode and return once its probes are attached (None for none).

    floor_paths: binaries the floor probes besides the system libraries (the sensor may find
    them by discovery instead); sensor_paths: the sensor's binary_paths.
    """
    if mode == "none":
        return None
    if mode == "floor":
        proc = subprocess.Popen([PY, os.path.join(HERE, "floor_probes.py"), "/var/cache/oisp-sensor", *floor_paths],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        proc.stderr = proc.stdout
        _wait_line(proc, "floor: attached", timeout)
        return proc
    argv = [PY, "-m", "oisp_daemon.cli", "record", "--output", os.path.join(tmp, "events.jsonl")]
    if sensor_paths:
        config = os.path.join(tmp, "sensor.yaml")
        with open(config, "w", encoding="utf-8") as fh:
            fh.write("binary_paths: [%s]\n" % ", ".join(sensor_paths))
        argv += ["--config", config]
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    _wait_line(proc, "events ->", timeout)
    return proc


def stop_mode(proc: Optional[subprocess.Popen]) -> None:
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def print_table(results: Results, first_column: str, label: Callable[[str], str], per: str) -> None:
    """The Markdown table bench/RESULTS.md records: medians per mode, sensor / floor, and the
    time the sensor adds over the floor."""
    print(f"| {first_column} | none {per} | floor {per} | sensor {per} | sensor / floor | sensor added over floor |")
    print("|---|---|---|---|---|---|")
    for unit, modes in results.items():
        med = {m: statistics.median(v) for m, v in modes.items()}
        print(f"| {label(unit)} | {med['none']:.0f} | {med['floor']:.0f} | {med['sensor']:.0f} | "
              f"{med['sensor'] / med['floor']:.3f} | {med['sensor'] - med['floor']:.0f} ns |")
