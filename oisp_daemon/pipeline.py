"""The one-way flow from captured records to exported events.

capture records -> stream assembly (gaps) -> HTTP per connection -> provider parsing
-> OISP events (with process and host context) -> `emit` (redaction and sinks are the
consumer's: each session redacts with its own mode).

Runs on one thread (the consumer of the ring reader's queue): every stage keeps per-connection
state, and a single owner makes that state safe without locks.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .capture import records as rec
from .capture.reader import StreamAssembler, StreamData, StreamGap
from .decode.connection import ConnectionTracker, Exchange
from .events.ai import build_ai_request, build_ai_response, build_tool_call_events
from .events.context import HostContext, ProcessCache
from .events.envelope import Clock
from .providers import parse_request, parse_response
from .providers.exchange import AiRequestInfo
from .providers.registry import detect_provider

log = logging.getLogger(__name__)

ConnKey = Tuple[int, int]
Emit = Callable[[Dict[str, Any]], None]


@dataclass
class _Conn:
    """What the pipeline knows about a connection beyond its bytes."""

    fd: Optional[int] = None
    provider: Optional[str] = None
    host: Optional[str] = None
    decided: bool = False  # provider (or "not AI") decided from the first request


@dataclass
class _Pending:
    info: AiRequestInfo
    request_event: Dict[str, Any]


@dataclass
class PipelineStats:
    records: int = 0
    bytes: int = 0
    gaps: int = 0
    ignored_connections: int = 0
    ai_requests: int = 0
    ai_responses: int = 0
    events: int = 0
    emit_errors: int = 0
    counters: Dict[str, int] = field(default_factory=dict)


class Pipeline:
    def __init__(
        self,
        *,
        emit: Emit,
        provider_hosts: Dict[str, str],
        max_message_bytes: int,
        idle_timeout_s: float,
        ignore_connection: Callable[[int, int], None],
        clock: Optional[Clock] = None,
        host: Optional[HostContext] = None,
        processes: Optional[ProcessCache] = None,
    ) -> None:
        self.emit = emit
        self.provider_hosts = provider_hosts
        self.ignore_connection = ignore_connection
        self.clock = clock or Clock()
        self.host = host or HostContext.collect()
        self.processes = processes or ProcessCache()
        self.assembler = StreamAssembler()
        self.tracker = ConnectionTracker(max_body_bytes=max_message_bytes, idle_timeout_s=idle_timeout_s)
        self.conns: Dict[ConnKey, _Conn] = {}
        self.fd_addr: Dict[Tuple[int, int], Tuple[str, int]] = {}  # (pid, fd) -> remote address
        self.pending: Dict[int, _Pending] = {}  # id(HttpRequest) -> parsed request
        self.stats = PipelineStats()
        self._last_expiry = time.monotonic()

    # -- records in ---------------------------------------------------------------------------

    def handle(self, record: rec.Record) -> None:
        """Consume one capture record; never raises (one bad record must not stop capture)."""
        self.stats.records += 1
        try:
            self._dispatch(record)
        except Exception:
            log.exception("dropping a record that broke the pipeline: %r", type(record).__name__)
            self.stats.counters["pipeline_errors"] = self.stats.counters.get("pipeline_errors", 0) + 1

    def _dispatch(self, record: rec.Record) -> None:
        if isinstance(record, rec.DataChunk):
            for item in self.assembler.feed(record):
                if isinstance(item, StreamGap):
                    self.stats.gaps += 1
                    for direction in ("write", "read"):
                        self._exchanges(self.tracker.on_gap(item.key, direction, item.ts_ns))
                else:
                    self._on_data(item)
        elif isinstance(record, rec.ConnEnd):
            key = (record.pid, record.ssl)
            self._exchanges(self.tracker.on_close(key, record.ts_ns))
            self.assembler.forget(key)
            self.conns.pop(key, None)
        elif isinstance(record, rec.SetFd):
            self.conns.setdefault((record.pid, record.ssl), _Conn()).fd = record.fd
        elif isinstance(record, rec.Connect):
            self.fd_addr[(record.pid, record.fd)] = (record.address, record.port)
        elif isinstance(record, rec.Fork):
            self.processes.note_fork(record.parent_pid, record.child_pid)
        elif isinstance(record, rec.Exec):
            self.processes.note_exec(record.pid)
        elif isinstance(record, rec.Exit):
            self._on_exit(record)

    def _on_data(self, item: StreamData) -> None:
        self.stats.bytes += len(item.data)
        conn = self.conns.setdefault(item.key, _Conn())
        if not conn.decided:
            # Snapshot process context while the process surely exists (it is doing TLS now).
            self.processes.lookup(item.key[0])
        self._exchanges(self.tracker.on_data(item.key, item.direction, item.data, item.ts_ns))
        protocol = self.tracker.protocol_of(item.key)
        if protocol is not None and protocol.startswith("unknown"):
            self._ignore(item.key)

    def _on_exit(self, record: rec.Exit) -> None:
        self._exchanges(self.tracker.on_process_exit(record.pid, record.ts_ns))
        self.assembler.forget_pid(record.pid)
        for key in [k for k in self.conns if k[0] == record.pid]:
            del self.conns[key]
        for key in [k for k in self.fd_addr if k[0] == record.pid]:
            del self.fd_addr[key]
        self.processes.forget(record.pid)

    def tick(self, now_mono_ns: Optional[int] = None) -> None:
        """Periodic work: release idle connections (at most once a second)."""
        if time.monotonic() - self._last_expiry < 1.0:
            return
        self._last_expiry = time.monotonic()
        self._exchanges(self.tracker.expire_idle(now_mono_ns or time.monotonic_ns()))

    # -- connections --------------------------------------------------------------------------

    def _ignore(self, key: ConnKey) -> None:
        conn = self.conns.setdefault(key, _Conn())
        conn.decided = True
        self.tracker.ignore(key)
        self.ignore_connection(*key)
        self.stats.ignored_connections += 1

    def _remote(self, key: ConnKey) -> Optional[Tuple[str, int]]:
        conn = self.conns.get(key)
        if conn is None or conn.fd is None:
            return None
        return self.fd_addr.get((key[0], conn.fd))

    def _provider_for(self, key: ConnKey, host: Optional[str]) -> Optional[str]:
        provider = detect_provider(host, None, self.provider_hosts) if host else None
        if provider is None:
            remote = self._remote(key)
            if remote is not None:
                provider = detect_provider(remote[0], remote[1], self.provider_hosts)
        return provider

    # -- exchanges to events ------------------------------------------------------------------

    def _exchanges(self, exchanges: List[Exchange]) -> None:
        for exchange in exchanges:
            if exchange.response is None:
                self._on_request(exchange)
            else:
                self._on_response(exchange)

    def _on_request(self, exchange: Exchange) -> None:
        key, req = exchange.key, exchange.request
        conn = self.conns.setdefault(key, _Conn())
        host = req.header("host")
        provider = self._provider_for(key, host)
        if provider is None:
            if not conn.decided:
                self._ignore(key)  # first request on it is not AI: stop copying its bytes
            return
        conn.decided, conn.provider, conn.host = True, provider, host
        info = parse_request(provider, req, host or "")
        if info is None:
            return  # an endpoint of the provider that is not an AI call (e.g. GET /v1/models)
        process, actor = self.processes.lookup(key[0])
        event = build_ai_request(info, req, clock=self.clock, host=self.host, process=process, actor=actor)
        self.pending[id(req)] = _Pending(info, event)
        self.stats.ai_requests += 1
        self._emit(event)

    def _on_response(self, exchange: Exchange) -> None:
        pending = self.pending.pop(id(exchange.request), None)
        if pending is None:
            return
        resp_info = parse_response(pending.info, exchange.response)
        process, actor = self.processes.lookup(exchange.key[0])
        response_event = build_ai_response(
            pending.info,
            resp_info,
            exchange.request,
            exchange.response,
            request_event=pending.request_event,
            clock=self.clock,
            host=self.host,
            process=process,
            actor=actor,
        )
        self.stats.ai_responses += 1
        self._emit(response_event)
        for event in build_tool_call_events(resp_info, response_event):
            self._emit(event)

    def _emit(self, event: Dict[str, Any]) -> None:
        self.stats.events += 1
        try:
            self.emit(event)
        except Exception:
            self.stats.emit_errors += 1
            log.exception("delivering an event failed; capture goes on")
