"""The sensor: capture, ring reader and pipeline built once from the configuration, and the loop
that runs them.

`oisp-sensor record` and the daemon are the same sensor with different consumers: record hands
the loop a JSONL sink; the daemon hands it the fan-out to sessions and tails, plus the commands
its control plane queues (commands.py), which the loop runs between two records. The thread in
`run` owns capture state: the attached probes and the pipeline are changed from it only.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

from .capture import libraries, plain_http
from .capture.discovery import ATTACH_FAILED, ATTACHED_ALREADY, ATTACHED_NEW, Discovery
from .capture.elf_image import Identity
from .capture.loader import Attached, CaptureOptions, TlsCapture
from .capture.reader import RingReader
from .capture.unseen import UnseenTls, maps_probed
from .commands import CommandQueue
from .pipeline import Emit, Pipeline
from .progress import Progress

log = logging.getLogger(__name__)

_WAKE = object()  # put in the record queue so that a waiting loop runs a new command at once
# How long a stop may spend draining the records already captured: well within systemd's
# default stop timeout (90 s), whatever backlog a flood left on a busy machine.
DRAIN_LIMIT_S = 15.0


class Sensor:
    def __init__(
        self, config: Dict[str, Any], *, pid: int = 0, uid: Optional[int] = None, comm: Optional[str] = None
    ) -> None:
        self.config = config
        cap = config["capture"]
        self.capture = TlsCapture(
            CaptureOptions(
                ring_buffer_bytes=cap["ring_buffer_mb"] * 1024 * 1024,
                max_connections=cap["max_connections"],
                pid=pid,
                uid=uid,
                comm=comm,
                cache_dir=config["paths"]["cache_dir"],
                plain_http=plain_http.from_config(cap),
            )
        )
        self.reader: Optional[RingReader] = None
        self.discovery: Optional[Discovery] = None
        self.pipeline: Optional[Pipeline] = None
        self.commands = CommandQueue(wake=self._wake)
        self._owner = 0  # the thread in run()
        self._pipeline_counters: Dict[str, int] = {}
        self._counted_at = 0.0
        self._stop_at: Optional[float] = None  # when stop() was asked (monotonic)
        self._abandoned = False
        # processes talking TLS through a library nothing here can read (status, record's end)
        self.unseen = UnseenTls(self._is_covered, self._unsupported_library, tls_ports=cap["unseen_tls_ports"])

    # -- set-up -------------------------------------------------------------------------------

    def start(self, binary_paths: Iterable[str]) -> List[Attached]:
        """Compile and load the BPF programs, probe the system's TLS libraries and `binary_paths`,
        and start discovery. Raises CaptureError (its message says what to do) when nothing can
        be probed."""
        with Progress("compiling and loading BPF programs"):
            self.capture.load()
        self.capture.attach(libraries.discover(binary_paths))
        self.discovery = Discovery(self._attach_discovered, self._detach_discovered)
        self.reader = RingReader(self.capture.poll, self.capture.open_ring, on_image=self.discovery.notify)
        with Progress("looking for TLS libraries in running processes"):
            self.discovery.start()
        return self.capture.attachments()

    def _attach_discovered(self, target: libraries.TlsTarget) -> str:
        """(discovery thread) Probe a file a process maps, unless it has probes already."""
        with self.capture.lock:
            if self.capture.attached_file(target.identity) is not None:
                return ATTACHED_ALREADY
            return ATTACHED_NEW if self.capture.attach_target(target).probes else ATTACH_FAILED

    def _detach_discovered(self, identity: Identity) -> None:
        """(discovery thread) No process maps a discovered file any more: release its probes."""
        with self.capture.lock:
            attached = self.capture.attached_file(identity)
            if attached is not None and attached.target.origin == "discovered":
                self.capture.detach_target(attached)
                log.info("no longer probing %s: no process maps it", attached.target.shown_path)

    def sync_targets(self, binary_paths: Iterable[str]) -> None:
        """(owner thread) Probe exactly the system libssl and the files `binary_paths` lead to:
        files no longer wanted lose their probes, new ones get them, each file once."""
        wanted = libraries.discover(binary_paths)
        identities = {t.identity for t in wanted}
        for attached in self.capture.attachments():
            if attached.target.origin == "config" and attached.target.identity not in identities:
                self.capture.detach_target(attached)
                log.info("no longer probing %s", attached.target.path)
        for target in wanted:
            if self.capture.attached_file(target.identity) is None and self.capture.attach_target(target).probes:
                log.info("probing %s", target.path)

    # -- the loop -----------------------------------------------------------------------------

    def run(self, emit: Emit, on_tick: Optional[Callable[[], None]] = None) -> None:
        """Consume capture into `emit` until stop() and the last drain; between records run the
        queued commands and `on_tick` (the daemon's signals and watchdog)."""
        assert self.reader is not None, "start() first"
        cap = self.config["capture"]
        self.pipeline = Pipeline(
            emit=emit,
            provider_hosts=self.config["providers"]["hosts"],
            max_message_bytes=cap["max_message_bytes"],
            idle_timeout_s=cap["idle_timeout_s"],
            ignore_connection=self.capture.ignore,
            forget_connection=self.capture.forget_connection,
            skip_reads=self.capture.skip_reads,
            streaming_chunks=cap["streaming_chunks"],
            tls_servers=cap["tls_servers"],
        )
        self._owner = threading.get_ident()
        self._pipeline_counters = self.pipeline.counters()
        self.reader.start()
        try:
            while True:
                if self._stop_at is not None and time.monotonic() - self._stop_at > DRAIN_LIMIT_S:
                    self._abandon()
                try:
                    record = self.reader.queue.get(timeout=0.2)
                except queue.Empty:
                    record = None
                    if self.reader.finished:
                        return
                if record is not None and record is not _WAKE:
                    self.pipeline.handle(record)
                    self.unseen.handle(record)
                if self.commands.run_pending():
                    self._counted_at = 0.0  # a command's effect shows in the next status
                self.pipeline.tick()
                self.unseen.tick()
                self._refresh_counters()
                if on_tick is not None:
                    on_tick()
        finally:
            self.commands.close()

    def _is_covered(self, pid: int) -> bool:
        """The process maps a probed file: discovery's answer, or for a process it has not read
        yet, its maps against the attachments."""
        if self.discovery is not None and self.discovery.is_covered(pid):
            return True
        return maps_probed(pid, [a.target.identity for a in self.capture.attachments()])

    def _unsupported_library(self, pid: int) -> Optional[str]:
        """The library discovery recognised in the process but cannot probe, if any."""
        scans = self.discovery.unsupported_for(pid) if self.discovery is not None else []
        return scans[0].library if scans else None

    def _wake(self) -> None:
        if self.reader is not None:
            try:
                self.reader.queue.put_nowait(_WAKE)  # type: ignore[arg-type]
            except queue.Full:
                pass  # records are waiting: the loop runs commands after the next one

    def stop(self) -> None:
        """Finish after draining what the kernel already captured, for at most DRAIN_LIMIT_S
        (safe in a signal handler)."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        if self.reader is not None:
            self.reader.stop()

    def _abandon(self) -> None:
        """The drain took too long (a backlog behind a flood, on a busy machine): what is still
        queued is given up and counted, so that a stop stays within systemd's stop timeout."""
        assert self.reader is not None
        if not self._abandoned:
            self._abandoned = True
            count = self.reader.queue.close()
            log.warning("stopping: gave up %d queued records after draining for %.0f s", count, DRAIN_LIMIT_S)

    def close(self) -> None:
        if self.discovery is not None:
            self.discovery.stop()
        self.capture.close()

    # -- counters -----------------------------------------------------------------------------

    def counters(self) -> Dict[str, Any]:
        """Every counter an operator needs to judge the capture: what went through, what was
        dropped where and why. `oisp-ctl status`, record's closing line and the sd_notify STATUS=
        line all come from here. The pipeline's part is counted on its own thread (its maps
        change under a reader): other threads get the copy the loop refreshes a few times a second."""
        if threading.get_ident() == self._owner or self.pipeline is None:
            pipeline = self.pipeline.counters() if self.pipeline is not None else {}
        else:
            pipeline = self._pipeline_counters
        out: Dict[str, Any] = dict(pipeline)
        out["unseen_tls_processes"] = self.unseen.count()
        if self.capture.loaded:
            lost = self.capture.lost()
            out["lost_bytes"] = lost["lost_bytes"]
            out["ring_drops"] = lost["lost_records"]
            out["lost_by_uid"] = lost["lost_by_uid"]
            out["lost_bytes_per_cpu"] = self.capture.lost_bytes_per_cpu()
        else:
            out.update(lost_bytes=0, ring_drops=0, lost_by_uid={}, lost_bytes_per_cpu=[])
        # records waiting for the pipeline, and the data dropped for a uid over its share of them
        out["queue_bytes"] = self.reader.queue.queued_bytes if self.reader is not None else 0
        out["queue_dropped_by_uid"] = self.reader.queue.dropped_by_uid() if self.reader is not None else {}
        out["shutdown_abandoned_records"] = self.reader.queue.abandoned if self.reader is not None else 0
        if self.discovery is not None:
            out.update(self.discovery.counters)
        return out

    def _refresh_counters(self) -> None:
        now = time.monotonic()
        if self.pipeline is not None and now - self._counted_at >= 0.25:
            self._counted_at = now
            self._pipeline_counters = self.pipeline.counters()


def summary(counters: Dict[str, Any]) -> str:
    """The counters an operator checks first, in one line (STATUS= and record's closing line)."""
    per_cpu = ", ".join(f"cpu{i} {n}" for i, n in enumerate(counters.get("lost_bytes_per_cpu", [])) if n)
    # the uids that lost most (lost_by_uid is sorted so): the line stays short with many of them
    by_uid = ", ".join(f"uid {uid} {v['bytes']}" for uid, v in list(counters.get("lost_by_uid", {}).items())[:3])
    detail = "; ".join(part for part in (per_cpu, by_uid) if part)
    lost = f"lost {counters['lost_bytes']} bytes" + (f" ({detail})" if detail else "")
    return (
        f"{counters.get('ai_requests', 0)} AI requests, {counters.get('ai_responses', 0)} responses, "
        f"{counters.get('events', 0)} events; {lost}, {counters['ring_drops']} ring drops, "
        f"{counters.get('gaps', 0)} gaps, {counters.get('resyncs', 0)} decoder resyncs, "
        f"{counters.get('decode_failures', 0)} decode failures, {counters.get('emit_errors', 0)} emit errors, "
        f"{counters.get('unseen_tls_processes', 0)} processes with TLS the sensor cannot see"
    )
