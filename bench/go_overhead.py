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
import subprocess
import sys
import tempfile
from typing import Dict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from modes import MODES, Results, print_table, start_mode, stop_mode  # noqa: E402
from tests.support import go_build  # noqa: E402

REQUESTS = 10000
DOWNLOAD_BYTES = 256 << 20
READ_SIZE = 4096  # net/http's bufio.Reader asks crypto/tls for this much per Read


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
        results: Results = {}
        for _ in range(args.rounds):
            for mode in MODES:
                proc = start_mode(mode, tmp, floor_paths=[binary], sensor_paths=[binary])
                try:
                    small = run_client(binary, cert, key, "/small", REQUESTS, 200)
                    big = run_client(binary, cert, key, "/big?bytes=%d" % DOWNLOAD_BYTES, 1, 1)
                finally:
                    stop_mode(proc)
                assert big["body_bytes"] == DOWNLOAD_BYTES
                results.setdefault("request", {}).setdefault(mode, []).append(small["elapsed_ns"] / REQUESTS)
                per_read = big["elapsed_ns"] / (DOWNLOAD_BYTES / READ_SIZE)
                results.setdefault("4 KiB read", {}).setdefault(mode, []).append(per_read)
    print_table(results, "unit", str, "ns")
    print(f"\nrounds: {args.rounds}; raw: {json.dumps({u: {m: [round(x, 1) for x in v] for m, v in ms.items()} for u, ms in results.items()})}")


if __name__ == "__main__":
    main()
