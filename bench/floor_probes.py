"""Load bench/floor.c on the sensor's probe points and wait (the benchmark's 'floor' mode)."""
from __future__ import annotations

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oisp_daemon.capture import kheaders, libraries, tracefs  # noqa: E402
from oisp_daemon.capture.libraries import OPENSSL_PROBES  # noqa: E402


def main() -> None:
    kheaders.apply(kheaders.choose_headers(sys.argv[1] if len(sys.argv) > 1 else "/var/cache/oisp-sensor"))
    tracefs.ensure_mounted()
    from bcc import BPF

    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")) as fh:
        bpf = BPF(text=fh.read())
    for target in libraries.discover():
        for symbol, entry_fn, return_fn in OPENSSL_PROBES:
            if symbol in target.symbols:
                bpf.attach_uprobe(name=target.path, sym=symbol, fn_name=entry_fn)
                if return_fn:
                    bpf.attach_uretprobe(name=target.path, sym=symbol, fn_name=return_fn)
    print("floor: attached", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
