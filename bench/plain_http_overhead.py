"""Per-call overhead of plain-HTTP capture on sockets outside the tracked set, in one run.

The loop: write 100 bytes into one end of a socketpair, read them from the other end (a socket
outside the tracked set, like any connection not to a local model server: the kernel decides it
the same way). Three modes, switched between batches of BATCH pairs in this one process, so that
the other tenants of the shared VM hit every mode alike:

- none: no programs attached;
- floor: empty BPF programs on exactly the tracepoints bpf/sockets.c uses (plain_http.PROBES):
  the cost of the tracepoints alone;
- sensor: the sensor's BPF object (bpf/emit.h, process.c, sockets.c and the TLS families' files),
  loaded and attached as `oisp-sensor run` does, with the default set (the local model servers'
  loopback ports). For sockets outside the set the sensor's user space gets no records, so these
  programs are its whole cost.

Reported per mode, over rounds, of the batch mean (ns per write+read pair): the minimum and the
10th percentile (the other tenants of the 2 shared cores only ever add time, so the low end is
the cost; the median is printed to show how loaded the machine was), and the median of the
per-round ratio sensor / floor (each round's batches run back to back).

    sudo .venv/bin/python bench/plain_http_overhead.py [--rounds 200] [--batch 2000] [--realtime]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from oisp_daemon.capture import kheaders, plain_http, tracefs  # noqa: E402

PAYLOAD = b"x" * 100


def floor_program() -> str:
    names = sorted({fn for _tp, fn in plain_http.PROBES})
    return "\n".join("int %s(void *ctx) { return 0; }" % name for name in names)


class Mode:
    """A BPF object whose plain_http.PROBES programs can be attached and detached."""

    def __init__(self, bpf: Any) -> None:
        self.bpf = bpf

    def attach(self) -> None:
        for tracepoint, fn_name in plain_http.PROBES:
            self.bpf.attach_tracepoint(tp=tracepoint, fn_name=fn_name)

    def detach(self) -> None:
        for tracepoint in sorted({tp for tp, _ in plain_http.PROBES}):
            self.bpf.detach_tracepoint(tracepoint)


def load_modes(cache_dir: str) -> Dict[str, Optional[Mode]]:
    kheaders.apply(kheaders.choose_headers(cache_dir))
    tracefs.ensure_mounted()
    from bcc import BPF

    from oisp_daemon.capture.loader import CaptureOptions, TlsCapture

    floor = Mode(BPF(text=floor_program()))
    capture = TlsCapture(CaptureOptions(cache_dir=cache_dir))
    capture.load()  # attaches the socket tracepoints; the TLS uprobes are not attached
    sensor = Mode(capture._bpf)
    sensor.detach()
    return {"none": None, "floor": floor, "sensor": sensor}


def batch(w: int, r: int, pairs: int, realtime: bool = False) -> float:
    """ns per write+read pair; `realtime`: the batch runs SCHED_FIFO (a few ms each), so that the
    other tenants of a loaded machine do not preempt it, and attach/detach run normally."""
    if realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    try:
        t = time.perf_counter_ns()
        for _ in range(pairs):
            os.write(w, PAYLOAD)
            os.read(r, 4096)
        return (time.perf_counter_ns() - t) / pairs
    finally:
        if realtime:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--cache-dir", default="/var/cache/oisp-sensor")
    parser.add_argument("--realtime", action="store_true", help="run each batch SCHED_FIFO on CPU 0")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (BPF)")
    modes = load_modes(args.cache_dir)
    if args.realtime:
        os.sched_setaffinity(0, {0})
    a, b = socket.socketpair()
    w, r = a.fileno(), b.fileno()
    batch(w, r, args.batch)  # warm up
    results: Dict[str, List[float]] = {mode: [] for mode in modes}
    ratios: List[float] = []
    for round_no in range(args.rounds):
        order = list(modes) if round_no % 2 == 0 else list(reversed(list(modes)))
        this: Dict[str, float] = {}
        for name in order:
            mode = modes[name]
            if mode is not None:
                mode.attach()
            try:
                batch(w, r, args.batch // 4, args.realtime)  # settle after the switch (static keys, caches)
                this[name] = batch(w, r, args.batch, args.realtime)
            finally:
                if mode is not None:
                    mode.detach()
        for name, value in this.items():
            results[name].append(round(value, 1))
        ratios.append(this["sensor"] / this["floor"])
    medians = {name: statistics.median(values) for name, values in results.items()}
    p10 = {name: statistics.quantiles(values, n=10)[0] for name, values in results.items()}
    print(json.dumps({
        "rounds": args.rounds, "batch": args.batch,
        "median_ns_per_write_read": medians,
        "p10_ns_per_write_read": {name: round(v, 1) for name, v in p10.items()},
        "min_ns_per_write_read": {name: min(values) for name, values in results.items()},
        "sensor_over_floor_p10": round(p10["sensor"] / p10["floor"], 3),
        "sensor_over_floor_min": round(min(results["sensor"]) / min(results["floor"]), 3),
        "sensor_over_floor_median_of_rounds": round(statistics.median(ratios), 3),
        "sensor_over_floor_of_medians": round(medians["sensor"] / medians["floor"], 3),
        "sensor_added_ns": round(medians["sensor"] - medians["floor"], 1),
        "floor_added_ns": round(medians["floor"] - medians["none"], 1),
    }))


if __name__ == "__main__":
    main()
