"""`oisp-sensor record`: capture in the foreground and write events to a JSONL file.

The smallest whole product: the daemon's sensor (sensor.py) with one JSONL sink and no control
plane. Stops cleanly on SIGINT/SIGTERM after draining what the kernel already captured.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from .capture.loader import CaptureError
from .capture.unseen import describe
from .export.jsonl import JsonlSink
from .notify import notify
from .redact.engine import Redactor
from .sensor import Sensor, summary

log = logging.getLogger(__name__)


@dataclass
class RecordOptions:
    output: Optional[str]
    config: Dict[str, Any]
    comm: Optional[str] = None
    pid: int = 0
    uid: Optional[int] = None


def default_output() -> str:
    return os.path.abspath(time.strftime("oisp-events-%Y%m%d-%H%M%S.jsonl"))


def run(opts: RecordOptions) -> int:
    if os.geteuid() != 0:
        print(
            "oisp-sensor record: needs root to load eBPF programs; run it with sudo "
            "(or as a service: systemctl start oisp-sensor)",
            file=sys.stderr,
        )
        return 1
    cfg = opts.config
    sensor = Sensor(cfg, pid=opts.pid, uid=opts.uid, comm=opts.comm)
    try:
        redactor = Redactor(cfg["redaction"]["mode"], cfg["redaction"]["custom_patterns"])
        attached = sensor.start(cfg["binary_paths"])
    except (CaptureError, ValueError) as exc:
        print(f"oisp-sensor record: {exc}", file=sys.stderr)
        sensor.close()
        return 1
    try:
        sink = JsonlSink(opts.output or default_output())  # 0600, never through a link
    except OSError as exc:
        print(f"oisp-sensor record: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        sensor.close()
        return 1

    def _stop(_signum: int, _frame: Any) -> None:
        sensor.stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    probed = ", ".join(f"{a.target.path} ({len(a.probes)} probes)" for a in attached)
    print(f"oisp-sensor: recording TLS traffic of {probed}", file=sys.stderr)
    print(f"oisp-sensor: events -> {sink.path}", file=sys.stderr, flush=True)
    notify("READY=1")
    try:
        sensor.run(lambda event: sink.write(redactor.redact_event(event)))
    finally:
        notify("STOPPING=1")
        sink.close()
        sensor.unseen.settle()
        counters = sensor.counters()
        unseen = sensor.unseen.entries()
        sensor.close()
    print(f"oisp-sensor: stopped; {counters['events']} events written to {sink.path}; {summary(counters)}"
          + "".join(f"; unseen: {describe(entry)}" for entry in unseen), file=sys.stderr)
    return 0
