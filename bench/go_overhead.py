"""Per-call overhead of the Go crypto/tls probes on non-AI traffic, side by side in one run.

A Go net/http client (tests/clients/go_client, built stripped with Debian's golang-go) talks
HTTP/1.1 over one keep-alive TLS connection to an HTTPS server that is no AI provider, run by
the same binary in the same process (-serve-cert), so that the Go code, not another server, sets
the pace and both ends' crypto/tls calls are probed in the floor and sensor modes alike:
- request: many small GETs (per request, both ends: about two (*Conn).Write and three
  (*Conn).Read calls, i.e. five entry traps and three RET traps);
- 4 KiB read: one GET of a large body, read by net/http in 4 KiB (*Conn).Read calls (the
  server's 64 KiB writes are in that time too).
Modes, interleaved over rounds (medians reported, so drift on a shared VM hits all alike):
none (no probes), floor (bench/floor_probes.py: empty programs on the same probe points, the
Go binary's entry and RET probes included), sensor (`oisp-sensor record` told about the binary).

    sudo .venv/bin/python bench/go_overhead.py [--rounds 3]
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
sys.path.insert(0, ROOT)
PY = sys.executable

from tests.support import go_build  # noqa: E402

REQUESTS = 10000
DOWNLOAD_BYTES = 256 << 20
READ_SIZE = 4096  # net/http's bufio.Reader asks crypto/tls for this much per Read


def _wait_line(proc: subprocess.Popen, needle: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline() if proc.stderr else ""
        if needle in line:
            return
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before '{needle}'")
    raise RuntimeError(f"timed out waiting for '{needle}' from {proc.args}")


def start_mode(mode: str, tmp: str, binary: str) -> Optional[subprocess.Popen]:
    if mode == "none":
        return None
    if mode == "floor":
        proc = subprocess.Popen([PY, os.path.join(HERE, "floor_probes.py"), "/var/cache/oisp-sensor", binary],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        proc.stderr = proc.stdout
        _wait_line(proc, "floor: attached")
        return proc
    config = os.path.join(tmp, "sensor.yaml")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(f"binary_paths: [{binary}]\n")
    proc = subprocess.Popen([PY, "-m", "oisp_daemon.cli", "record", "--config", config,
                             "--output", os.path.join(tmp, "events.jsonl")],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    _wait_line(proc, "events ->")
    return proc


def stop_mode(proc: Optional[subprocess.Popen]) -> None:
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def run_client(binary: str, cert: str, key: str, path: str, count: int, warmup: int) -> Dict:
    argv = [binary, "-serve-cert", cert, "-serve-key", key, "-url", "https://local" + path, "-n", str(count),
            "-warmup", str(warmup)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         env={"SSL_CERT_FILE": cert, "PATH": "/usr/bin:/bin"}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        binary = str(go_build.build("stripped", tmp))
        cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        results: Dict[str, Dict[str, List[float]]] = {}
        for _ in range(args.rounds):
            for mode in ("none", "floor", "sensor"):
                proc = start_mode(mode, tmp, binary)
                try:
                    small = run_client(binary, cert, key, "/small", REQUESTS, 200)
                    big = run_client(binary, cert, key, "/big?bytes=%d" % DOWNLOAD_BYTES, 1, 1)
                finally:
                    stop_mode(proc)
                assert big["body_bytes"] == DOWNLOAD_BYTES
                results.setdefault("request", {}).setdefault(mode, []).append(small["elapsed_ns"] / REQUESTS)
                per_read = big["elapsed_ns"] / (DOWNLOAD_BYTES / READ_SIZE)
                results.setdefault("4 KiB read", {}).setdefault(mode, []).append(per_read)
    print("| unit | none ns | floor ns | sensor ns | sensor / floor | sensor added over floor |")
    print("|---|---|---|---|---|---|")
    for unit, modes in results.items():
        med = {m: statistics.median(v) for m, v in modes.items()}
        print(f"| {unit} | {med['none']:.0f} | {med['floor']:.0f} | {med['sensor']:.0f} | "
              f"{med['sensor'] / med['floor']:.3f} | {med['sensor'] - med['floor']:.0f} ns |")
    print(f"\nrounds: {args.rounds}; raw: {json.dumps({u: {m: [round(x, 1) for x in v] for m, v in ms.items()} for u, ms in results.items()})}")


if __name__ == "__main__":
    main()
