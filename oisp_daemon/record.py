"""`oisp-sensor record`: capture in the foreground and write events to a JSONL file.

The smallest whole product: the same capture and pipeline as the daemon, one sink, no control
plane. Stops cleanly on SIGINT/SIGTERM after draining what the kernel already captured.
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .capture import libraries
from .capture.loader import CaptureError, CaptureOptions, TlsCapture
from .capture.reader import RingReader
from .export.jsonl import JsonlSink
from .notify import notify
from .pipeline import Pipeline
from .progress import Progress
from .redact.engine import Redactor

log = logging.getLogger(__name__)


@dataclass
class RecordOptions:
    output: Optional[str]
    config: Dict[str, Any]
    comm: Optional[str] = None
    pid: int = 0


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
    capture = TlsCapture(
        CaptureOptions(
            ring_buffer_bytes=cfg["capture"]["ring_buffer_mb"] * 1024 * 1024,
            max_connections=cfg["capture"]["max_connections"],
            pid=opts.pid,
            comm=opts.comm,
            cache_dir=cfg["paths"]["cache_dir"],
        )
    )
    try:
        redactor = Redactor(cfg["redaction"]["mode"], cfg["redaction"]["custom_patterns"])
        with Progress("compiling and loading BPF programs"):
            capture.load()
        attached = capture.attach(libraries.discover(cfg["binary_paths"]))
    except (CaptureError, ValueError) as exc:
        print(f"oisp-sensor record: {exc}", file=sys.stderr)
        capture.close()
        return 1
    try:
        sink = JsonlSink(opts.output or default_output())  # 0600, never through a link
    except OSError as exc:
        print(f"oisp-sensor record: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        capture.close()
        return 1
    reader = RingReader(capture.poll, capture.open_ring)
    pipeline = Pipeline(
        emit=lambda event: sink.write(redactor.redact_event(event)),
        provider_hosts=cfg["providers"]["hosts"],
        max_message_bytes=cfg["capture"]["max_message_bytes"],
        idle_timeout_s=cfg["capture"]["idle_timeout_s"],
        ignore_connection=capture.ignore,
    )
    stopping: List[int] = []

    def _stop(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        reader.stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    reader.start()
    probed = ", ".join(f"{a.target.path} ({len(a.probes)} probes)" for a in attached)
    print(f"oisp-sensor: recording TLS traffic of {probed}", file=sys.stderr)
    print(f"oisp-sensor: events -> {sink.path}", file=sys.stderr, flush=True)
    notify("READY=1")
    try:
        _consume(reader, pipeline)
    finally:
        notify("STOPPING=1")
        sink.close()
        lost = capture.lost()
        capture.close()
    s = pipeline.stats
    print(
        f"oisp-sensor: stopped; {s.events} events ({s.ai_requests} requests, {s.ai_responses} "
        f"responses) written to {sink.path}; lost bytes in kernel: {lost['lost_bytes']}",
        file=sys.stderr,
    )
    return 0


def _consume(reader: RingReader, pipeline: Pipeline) -> None:
    """Pipeline loop: until the poller has finished its last drain and the queue is empty."""
    while True:
        try:
            record = reader.queue.get(timeout=0.2)
        except queue.Empty:
            if reader.finished:
                return
            pipeline.tick()
            continue
        pipeline.handle(record)
        pipeline.tick()
