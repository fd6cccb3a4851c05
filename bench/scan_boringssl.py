"""Time the boringssl family's search (signatures/boringssl.json) on real binaries: cold (a new
family, so nothing cached; the file itself is in the page cache after the first run) and cached.
Wall time depends on the machine's load; CPU time (this process) much less.

    .venv/bin/python bench/scan_boringssl.py [--runs N] [PATH...]

Without paths: Bun and Claude Code from .venv/npm.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oisp_daemon.capture.elf_image import ElfImage  # noqa: E402
from oisp_daemon.capture.families.boringssl import BoringSslFamily  # noqa: E402
from tests.support.bun import bun, claude  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args()
    for path in args.paths or [bun(), claude()]:
        cold, cpu = [], []
        for _ in range(args.runs):
            family = BoringSslFamily()
            family.signatures  # loaded once per daemon, not part of a scan
            with ElfImage(path) as image:
                start, start_cpu = time.perf_counter(), time.process_time()
                scan = family.scan(image)
                cold.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
                start = time.perf_counter()
                family.scan(image)
                cached = time.perf_counter() - start
        points = ", ".join("%s@%#x" % (loc.point, loc.address) for loc in scan.locations) if scan else "-"
        print("%s (%d MB): cold median %.2f s (min %.2f, max %.2f; CPU median %.2f s; %d runs), "
              "cached %.1f us; %s" % (path, os.path.getsize(path) >> 20, statistics.median(cold), min(cold),
                                     max(cold), statistics.median(cpu), args.runs, cached * 1e6, points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
