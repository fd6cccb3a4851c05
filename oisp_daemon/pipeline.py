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
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .capture import records as rec
from .capture.reader import StreamAssembler, StreamData, StreamGap
from .decode.connection import ConnectionTracker, starts_a_request
from .decode.messages import HttpResponse
from .decode.protocol import (
    CONNECTION_CLOSED, PROCESS_EXIT, Exchange, RequestDone, ResponseDone, ResponseProgress, SkippingReads, Step,
)
from .events.ai import build_ai_request, build_ai_response, build_ai_response_missing, build_tool_call_events
from .events.context import HostContext, ProcessCache
from .events.correlation import Correlator, stamp
from .events.envelope import Clock
from .events.plaintext import mark_plaintext
from .events.serving import ServingLinks
from .events.streaming import ChunkTimings, build_streaming_chunk
from .events.tool_result import build_tool_result_events
from .providers import parse_request, parse_response
from .providers.exchange import AiRequestInfo, AiResponseInfo, StreamDelta
from .providers.parse import OPENAI_COMPATIBLE, is_openai_compatible, stream_decoder
from .providers.stream import StreamDecoder
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
    # None until its first bytes: True when this process serves the connection (capture.tls_servers)
    serving: Optional[bool] = None
    last_seq: int = -1  # sequence number of its latest call fed to the tracker


@dataclass
class _LiveStream:
    """A streamed answer being decoded as it arrives (None decoder: not a stream after all)."""

    decoder: Optional[StreamDecoder]
    process: Optional[Dict[str, Any]]
    actor: Optional[Dict[str, Any]]
    timings: ChunkTimings


@dataclass
class _Pending:
    """What the pipeline made of a request, kept on its Exchange until the response comes."""

    info: AiRequestInfo
    request_event: Dict[str, Any]
    trace_id: str  # the conversation the request belongs to (events/correlation.py)
    key: ConnKey
    stream: Optional[_LiveStream] = None  # set by the first ResponseProgress


@dataclass
class PipelineStats:
    """Counters of the pipeline's own work (Pipeline.counters adds the decode layer's)."""

    records: int = 0  # capture records consumed
    bytes: int = 0  # plaintext bytes handed to the decoders
    gaps: int = 0  # places where the kernel lost bytes of a connection
    ignored_connections: int = 0  # connections whose capture was stopped in the kernel
    ai_requests: int = 0  # ai.request events
    ai_responses: int = 0  # ai.response events (one per ai.request)
    streaming_chunks: int = 0  # ai.streaming_chunk events
    partial_responses: int = 0  # of those, marked partial (gap, limit, no or cut response, ...)
    events: int = 0  # events handed to emit (all types)
    emit_errors: int = 0  # emit raised: the event was lost, capture went on
    pipeline_errors: int = 0  # records that broke the pipeline (a bug): dropped, capture went on


class Pipeline:
    def __init__(
        self,
        *,
        emit: Emit,
        provider_hosts: Dict[str, str],
        max_message_bytes: int,
        idle_timeout_s: float,
        ignore_connection: Callable[[int, int], None],
        forget_connection: Callable[[int, int], None] = lambda pid, ssl: None,
        skip_reads: Callable[[int, int, int], None] = lambda pid, ssl, next_seq: None,
        clock: Optional[Clock] = None,
        host: Optional[HostContext] = None,
        processes: Optional[ProcessCache] = None,
        streaming_chunks: bool = True,
        tls_servers: Sequence[str] = (),
    ) -> None:
        """`streaming_chunks` (capture.streaming_chunks): emit an `ai.streaming_chunk` per
        streamed delta; streams are decoded live either way (time to first token, chunk timing)."""
        self.emit = emit
        self.streaming_chunks = streaming_chunks
        self.provider_hosts = provider_hosts
        self.ignore_connection = ignore_connection
        # a plain socket's kernel entry outlives a process that exits without close(2)
        self.forget_connection = forget_connection
        # a connection joined mid-answer: the kernel may stop copying its reads (pid, ssl, next seq)
        self.skip_reads = skip_reads
        self.clock = clock or Clock()
        self.host = host or HostContext.collect()
        self.processes = processes or ProcessCache()
        self.assembler = StreamAssembler()
        self.tracker = ConnectionTracker(max_body_bytes=max_message_bytes, idle_timeout_s=idle_timeout_s)
        self.conns: Dict[ConnKey, _Conn] = {}
        self.fd_addr: Dict[Tuple[int, int], Tuple[str, int]] = {}  # (pid, fd) -> remote address
        self.correlation = Correlator()
        self.tls_servers = frozenset(tls_servers)
        self.serving = ServingLinks()
        self.stats = PipelineStats()
        self._last_expiry_ns = time.monotonic_ns()

    # -- records in ---------------------------------------------------------------------------

    def handle(self, record: rec.Record) -> None:
        """Consume one capture record; never raises (one bad record must not stop capture)."""
        self.stats.records += 1
        try:
            self._dispatch(record)
        except Exception:
            log.exception("dropping a record that broke the pipeline: %r", type(record).__name__)
            self.stats.pipeline_errors += 1

    def _dispatch(self, record: rec.Record) -> None:
        if isinstance(record, rec.DataChunk):
            for item in self.assembler.feed(record):
                if isinstance(item, StreamGap):
                    self.stats.gaps += 1
                    self._steps(self.tracker.on_gap(item.key, item.ts_ns))
                else:
                    self._on_data(item)
        elif isinstance(record, rec.ConnEnd):
            key = (record.pid, record.ssl)
            self._steps(self.tracker.on_close(key, record.ts_ns))
            self.assembler.forget(key)
            self.conns.pop(key, None)
        elif isinstance(record, rec.SetFd):
            self.conns.setdefault((record.pid, record.ssl), _Conn()).fd = record.fd
        elif isinstance(record, rec.Connect):
            self.fd_addr[(record.pid, record.fd)] = (record.address, record.port)
        elif isinstance(record, rec.Fork):
            self.processes.note_fork(record.parent_pid, record.child_pid)
        elif isinstance(record, rec.Exec):
            self.processes.note_exec(record.pid, record.filename, record.comm, record.uid,
                                     record.proc_cmdline, record.proc_exe)
        elif isinstance(record, rec.Exit):
            self._on_exit(record)

    def _on_data(self, item: StreamData) -> None:
        self.stats.bytes += len(item.data)
        conn = self.conns.setdefault(item.key, _Conn())
        if not conn.decided:
            # Snapshot process context while the process likely still exists (it was doing TLS),
            # with the kernel's comm and uid for when it is already gone.
            self.processes.note_comm(item.key[0], item.comm)
            self.processes.lookup(item.key[0])
            self.processes.note_uid(item.key[0], item.uid)  # the kernel's word, if /proc was gone
        if conn.serving is None:
            conn.serving = self._serves(item)
        # The serving end reads the request: the decoders see every connection as its client does.
        direction = _OTHER_WAY[item.direction] if conn.serving else item.direction
        conn.last_seq = item.seq
        self._steps(self.tracker.on_data(item.key, direction, item.data, item.ts_ns))

    def _serves(self, item: StreamData) -> bool:
        """A TLS connection of a configured server process whose first bytes are a request it
        reads (an HTTP/1 request line or the HTTP/2 preface)."""
        if not self.tls_servers or item.direction != "read" or rec.is_plain(item.key[1]):
            return False
        if not starts_a_request(item.data):
            return False
        process, _actor = self.processes.lookup(item.key[0])
        return item.comm in self.tls_servers or bool(process) and process.get("exe") in self.tls_servers

    def _on_exit(self, record: rec.Exit) -> None:
        self._steps(self.tracker.on_process_exit(record.pid, record.ts_ns))
        self.assembler.forget_pid(record.pid)
        for key in [k for k in self.conns if k[0] == record.pid]:
            if rec.is_plain(key[1]):
                self.forget_connection(*key)
            del self.conns[key]
        for key in [k for k in self.fd_addr if k[0] == record.pid]:
            del self.fd_addr[key]
        self.serving.forget(record.pid)
        self.processes.forget(record.pid)

    def tick(self, now_mono_ns: Optional[int] = None) -> None:
        """Periodic work: release idle connections (at most once a second). `now_mono_ns` is
        CLOCK_MONOTONIC, the kernel timestamps' clock."""
        now = time.monotonic_ns() if now_mono_ns is None else now_mono_ns
        if now - self._last_expiry_ns < 1_000_000_000:
            return
        self._last_expiry_ns = now
        self._steps(self.tracker.expire_idle(now))

    def counters(self) -> Dict[str, int]:
        """Every counter of the pipeline and the decode layer by name (PipelineStats, DecodeStats),
        plus "connections" being decoded now: what status reports."""
        return {**asdict(self.stats), **self.tracker.counters(), "connections": self.tracker.connection_count()}

    # -- connections --------------------------------------------------------------------------

    def _ignore(self, key: ConnKey) -> None:
        """Not AI traffic: stop decoding it and copying its bytes."""
        self._stop_capture(key)
        self._steps(self.tracker.ignore(key))

    def _stop_capture(self, key: ConnKey) -> None:
        conn = self.conns.setdefault(key, _Conn())
        conn.decided = True
        self.ignore_connection(*key)
        self.stats.ignored_connections += 1

    def _skip_reads(self, key: ConnKey) -> None:
        """The tracker skips the reads of a connection joined mid-answer: so may the kernel, as
        long as no call came after the one just fed (the verdict names the next sequence number)."""
        conn = self.conns.get(key)
        if conn is not None and conn.last_seq >= 0 and not conn.serving:
            self.skip_reads(key[0], key[1], conn.last_seq + 1)

    def _remote(self, key: ConnKey) -> Optional[Tuple[str, int]]:
        conn = self.conns.get(key)
        if conn is None or conn.fd is None:
            return None
        return self.fd_addr.get((key[0], conn.fd))

    def _provider_for(self, key: ConnKey, host: Optional[str]) -> Optional[str]:
        # a Host header without a port names port 80 on plain HTTP, 443 on TLS
        default_port = 80 if rec.is_plain(key[1]) else None
        provider = detect_provider(host, default_port, self.provider_hosts) if host else None
        if provider is None:
            remote = self._remote(key)
            if remote is not None:
                provider = detect_provider(remote[0], remote[1], self.provider_hosts)
        return provider

    # -- exchanges to events ------------------------------------------------------------------

    def _steps(self, steps: List[Step]) -> None:
        for step in steps:
            if isinstance(step, RequestDone):
                self._on_request(step.exchange)
            elif isinstance(step, ResponseProgress):
                self._on_progress(step)
            elif isinstance(step, ResponseDone):
                self._on_response(step.exchange)
            elif isinstance(step, SkippingReads):
                self._skip_reads(step.key)
            else:  # Stopped: the tracker no longer decodes it (other protocol, decoder failure)
                self._stop_capture(step.key)

    def _on_request(self, exchange: Exchange) -> None:
        key, req = exchange.key, exchange.request
        conn = self.conns.setdefault(key, _Conn())
        if conn.decided and conn.provider is None:
            return  # decided not AI (and ignored: its exchanges were ended without events)
        host = req.header("host")
        provider = self._provider_for(key, host)
        if provider is None and (conn.provider == OPENAI_COMPATIBLE or not conn.decided and is_openai_compatible(req)):
            provider = OPENAI_COMPATIBLE  # a host no table knows, whose first request was OpenAI-shaped
        if provider is None:
            if not conn.decided:
                self._ignore(key)  # first request on it is not AI: stop copying its bytes
            return
        conn.decided, conn.provider, conn.host = True, provider, host
        endpoint_host = host or ":".join(map(str, self._remote(key) or ()))
        info = parse_request(provider, req, endpoint_host)
        if info is None:
            return  # an endpoint of the provider that is not an AI call (e.g. GET /v1/models)
        if rec.is_plain(key[1]) and info.endpoint.startswith("https://"):
            info.endpoint = "http://" + info.endpoint[len("https://"):]
        process, actor = self.processes.lookup(key[0])
        event = build_ai_request(info, req, clock=self.clock, host=self.host, process=process, actor=actor)
        if conn.serving:
            self.serving.inbound(key[0], event)
        else:
            self.serving.outbound(key[0], event)
        trace_id, results = self.correlation.on_request(key[0], info, event)
        # the response and chunks need only its ids and confidence: the whole event would pin its body
        ids = {"event_id": event["event_id"], "data": {"request_id": event["data"]["request_id"]},
               "confidence": event["confidence"]}
        exchange.note = _Pending(info, ids, trace_id, key)
        exchange.streaming = info.streaming  # decode its answer live (ResponseProgress)
        self.stats.ai_requests += 1
        self._emit(event, key)
        for result_event in build_tool_result_events(results, event):
            self._emit(result_event, key)

    def _on_progress(self, step: ResponseProgress) -> None:
        """Body bytes of a streamed answer as a TLS read delivered them: decode them now, one
        `ai.streaming_chunk` per delta, at the kernel time of the read that completed its event."""
        pending = step.exchange.note
        if not isinstance(pending, _Pending):
            return
        stream = pending.stream
        if stream is None:
            process, actor = self.processes.lookup(step.exchange.key[0])
            stream = pending.stream = _LiveStream(
                stream_decoder(pending.info, step.response), process, actor, ChunkTimings())
        if stream.decoder is None:
            step.exchange.streaming = False  # not a stream: no more progress steps for it
            return
        deltas = self._decode_live(stream, lambda decoder: decoder.feed(step.data))
        for delta in deltas:
            # The event's last byte (just before delta.offset) is what completed it.
            self._on_delta(pending, stream, delta, step.ts_at(max(delta.offset - 1, step.offset)))

    def _decode_live(self, stream: _LiveStream, run: Callable[[StreamDecoder], List[StreamDelta]]) -> List[StreamDelta]:
        """Run the live decoder; a parser bug ends live decoding of that stream, nothing more
        (the ai.response is parsed from the whole body as always)."""
        try:
            return run(stream.decoder)
        except Exception:
            log.exception("live stream decoding failed; the stream gets no more chunk events")
            stream.decoder = None
            return []

    def _on_delta(self, pending: _Pending, stream: _LiveStream, delta: StreamDelta, ts_ns: int) -> None:
        index = stream.timings.count
        stream.timings.add(ts_ns)
        if not self.streaming_chunks:
            return
        event = build_streaming_chunk(
            delta, index, ts_ns, request_event=pending.request_event, clock=self.clock, host=self.host,
            process=stream.process, actor=stream.actor)
        stamp(event, pending.trace_id)
        self.stats.streaming_chunks += 1
        self._emit(event, pending.key)

    def _finish_stream(self, pending: _Pending, exchange: Exchange) -> None:
        """The body ended: the live decoder's last deltas (events the end of the body completed)."""
        stream = pending.stream
        if stream is None or stream.decoder is None or exchange.response is None:
            return
        ts_ns = exchange.response.ts_end_ns
        for delta in self._decode_live(stream, lambda decoder: decoder.close()):
            self._on_delta(pending, stream, delta, ts_ns)

    def _on_response(self, exchange: Exchange) -> None:
        pending = exchange.note
        if not isinstance(pending, _Pending):
            return  # not an AI call
        exchange.note = None
        process, actor = self.processes.lookup(exchange.key[0])
        context: Dict[str, Any] = dict(
            request_event=pending.request_event, clock=self.clock, host=self.host, process=process, actor=actor)
        resp_info = None
        if exchange.response is None:
            # Nothing of an answer was seen; the request still gets its (partial) response event.
            response_event = build_ai_response_missing(
                pending.info, exchange.ended or "unknown", exchange.ended_ns, **context)
        else:
            self._finish_stream(pending, exchange)
            resp_info = parse_response(pending.info, exchange.response)
            _mark_client_abort(exchange, exchange.response, resp_info)
            response_event = build_ai_response(
                pending.info, resp_info, exchange.request, exchange.response, **context)
            if pending.stream is not None and pending.stream.decoder is not None:
                response_event.setdefault("attrs", {}).update(pending.stream.timings.attrs())
        conn = self.conns.get(exchange.key)
        if conn is not None and conn.serving:
            self.serving.answered(exchange.key[0], pending.request_event["event_id"], response_event)
        self.stats.ai_responses += 1
        if response_event["confidence"]["completeness"] == "partial":
            self.stats.partial_responses += 1
        tool_calls = build_tool_call_events(resp_info, response_event) if resp_info is not None else []
        self.correlation.on_response(exchange.key[0], pending.trace_id, response_event, tool_calls)
        self._emit(response_event, exchange.key)
        for event in tool_calls:
            self._emit(event, exchange.key)

    def _emit(self, event: Dict[str, Any], key: ConnKey) -> None:
        if rec.is_plain(key[1]):
            mark_plaintext(event)  # read from the socket syscalls, not at a TLS library
        self.stats.events += 1
        try:
            self.emit(event)
        except Exception:
            self.stats.emit_errors += 1
            log.exception("delivering an event failed; capture goes on")


_OTHER_WAY = {"read": "write", "write": "read"}

# What ends an exchange when the client goes away: its connection closes, its process exits.
_CLIENT_GONE = (CONNECTION_CLOSED, PROCESS_EXIT)


def _mark_client_abort(exchange: Exchange, response: HttpResponse, resp_info: AiResponseInfo) -> None:
    """A streamed answer that had started and was cut because the client went away (before the
    stream's own end marker): the client abandoned it. The event names `client_abort` first and
    keeps the underlying cause after it (limitations ["client_abort", "connection_closed"])."""
    if (exchange.ended in _CLIENT_GONE or any(r in _CLIENT_GONE for r in response.partial_reasons)) \
            and resp_info.streaming and not resp_info.stream_finished and not response.complete \
            and "client_abort" not in response.partial_reasons:
        response.partial_reasons.insert(0, "client_abort")
