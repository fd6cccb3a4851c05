"""The benchmarks' floor: the sensor's probe points with empty programs, i.e. the cost of the
uprobe traps and tracepoints alone, attached by the same scans the sensor uses.

Usage: floor_probes.py [CACHE_DIR] [PATH...]  (PATH: more binaries to probe, e.g. a static node)
"""
from __future__ import annotations

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oisp_daemon.capture import kheaders, libraries, tracefs  # noqa: E402
from oisp_daemon.capture.families import FAMILIES, family  # noqa: E402
from oisp_daemon.capture.probe_table import RETURN_URETPROBE  # noqa: E402

# The tracepoints of bpf/process.c, empty.
TRACEPOINTS = """
TRACEPOINT_PROBE(syscalls, sys_enter_connect) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_fork) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_exec) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_exit) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_mmap) { return 0; }
"""


def floor_program() -> str:
    """An empty program for every BPF function any family's probe points name."""
    names = sorted({fn for fam in FAMILIES for p in fam.points for fn in (p.entry_fn, p.return_fn) if fn})
    body = "".join(f"int {name}(struct pt_regs *ctx) {{ return 0; }}\n" for name in names)
    return "#include <uapi/linux/ptrace.h>\n" + body + TRACEPOINTS


def main() -> None:
    kheaders.apply(kheaders.choose_headers(sys.argv[1] if len(sys.argv) > 1 else "/var/cache/oisp-sensor"))
    tracefs.ensure_mounted()
    from bcc import BPF

    bpf = BPF(text=floor_program())
    for target in libraries.discover(sys.argv[2:]):
        for scan in target.scans:
            for loc in scan.locations:
                point = family(scan.family).point(loc.point)
                if point.entry_fn:
                    bpf.attach_uprobe(name=target.path, addr=loc.address, fn_name=point.entry_fn)
                if point.return_fn and point.return_at == RETURN_URETPROBE:
                    bpf.attach_uretprobe(name=target.path, addr=loc.address, fn_name=point.return_fn)
                elif point.return_fn:
                    for ret in loc.returns:
                        bpf.attach_uprobe(name=target.path, addr=ret, fn_name=point.return_fn)
    print("floor: attached", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
