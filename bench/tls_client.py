"""Timed SSL_write loop against bench/tls_sink: prints ns per call for each size.

Runs on the system Python, whose ssl module calls SSL_write_ex in the system libssl: the same
path an AI SDK takes. The first write is not HTTP, so the sensor judges the connection not-AI
and from then on filters it in the kernel (DESIGN.md rule 4) - the case this measures.
"""
from __future__ import annotations

import json
import socket
import ssl
import sys
import time


def measure(port: int, size: int, calls: int) -> float:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="bench.invalid") as tls:
            payload = b"x" * size
            for _ in range(200):  # warm-up, and time for the sensor's verdict to land
                tls.write(payload)
            time.sleep(0.2)
            start = time.perf_counter_ns()
            for _ in range(calls):
                tls.write(payload)
            elapsed = time.perf_counter_ns() - start
    return elapsed / calls


def main() -> None:
    port = int(sys.argv[1])
    result = {}
    for size, calls in ((100, 200000), (16384, 20000)):
        result[str(size)] = measure(port, size, calls)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
