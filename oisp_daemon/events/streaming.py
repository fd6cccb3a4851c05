"""OISP `ai.streaming_chunk` events, and the timing of a live stream's chunks for `ai.response`.

A chunk event is one StreamDelta (what one streamed event added to the answer), stamped with the
kernel time of the TLS read that delivered the event, and linked to its `ai.request`. The
inter-chunk latencies (gaps between consecutive chunks' kernel times) go into the `ai.response`
under `attrs`: the OISP v0.1 response schema has time_to_first_token_ms but no inter-chunk field.
"""
from __future__ import annotations

import random
from typing import Any, Dict, List, Optional

from oisp_daemon.events.ai import CAPTURE_METHOD, HostBlock, _host_block
from oisp_daemon.events.envelope import Clock, envelope, make_confidence, make_source
from oisp_daemon.providers.exchange import StreamDelta

# Gaps kept for the median: a uniform sample beyond this many (max and count stay exact), so a
# stream of millions of tiny events costs a fixed amount of memory.
MAX_SAMPLED_GAPS = 4096


class ChunkTimings:
    """Kernel times of a stream's chunks, reduced to what `ai.response` reports."""

    def __init__(self, max_samples: int = MAX_SAMPLED_GAPS) -> None:
        self.max_samples = max_samples
        self.count = 0  # chunks seen
        self.last_ns: Optional[int] = None
        self.max_gap_ns = 0
        self._gaps: List[int] = []
        self._gap_count = 0

    def add(self, ts_ns: int) -> None:
        self.count += 1
        if self.last_ns is not None:
            gap = max(ts_ns - self.last_ns, 0)
            self.max_gap_ns = max(self.max_gap_ns, gap)
            self._gap_count += 1
            if len(self._gaps) < self.max_samples:
                self._gaps.append(gap)
            else:  # reservoir sampling: every gap is kept with the same probability
                slot = random.randrange(self._gap_count)
                if slot < self.max_samples:
                    self._gaps[slot] = gap
        self.last_ns = ts_ns

    def attrs(self) -> Dict[str, Any]:
        """inter_chunk_latency_{p50,max}_ms (ms, microsecond precision) and the chunk count;
        no latencies with fewer than two chunks."""
        out: Dict[str, Any] = {"stream_chunks": self.count}
        if self._gaps:
            gaps = sorted(self._gaps)
            mid = len(gaps) // 2
            p50 = gaps[mid] if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2
            out["inter_chunk_latency_p50_ms"] = round(p50 / 1e6, 3)
            out["inter_chunk_latency_max_ms"] = round(self.max_gap_ns / 1e6, 3)
        return out


def _delta_block(delta: StreamDelta) -> Dict[str, Any]:
    block: Dict[str, Any] = {}
    if delta.role:
        block["role"] = delta.role
    if delta.content:
        block["content"] = delta.content
    call = delta.tool_call
    if call is not None:
        piece: Dict[str, Any] = {"type": call.type}
        if call.name:
            piece["name"] = call.name
        if call.id:
            piece["id"] = call.id
        if call.arguments:
            piece["arguments"] = call.arguments
        block["tool_calls"] = [piece]
    return block


def build_streaming_chunk(
    delta: StreamDelta,
    chunk_index: int,
    ts_ns: int,
    *,
    request_event: Dict[str, Any],
    clock: Clock,
    host: HostBlock = None,
    process: Optional[Dict[str, Any]] = None,
    actor: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The `ai.streaming_chunk` of one delta (index `chunk_index` in its stream, from 0), at the
    kernel time `ts_ns` of the read that delivered it; child of `request_event`."""
    data: Dict[str, Any] = {
        "request_id": request_event["data"]["request_id"],
        "chunk_index": chunk_index,
        "delta": _delta_block(delta),
    }
    if delta.finish_reason:
        data["finish_reason"] = delta.finish_reason
    method = request_event["confidence"].get("ai_detection_method", "known_endpoint")  # as its request
    event = envelope(
        "ai.streaming_chunk",
        ts_ns,
        clock,
        make_source(CAPTURE_METHOD, "ssl_read"),
        make_confidence(
            completeness="full",
            reasons=["tls_boundary_capture", method],
            content_source="tls_boundary",
            ai_detection_method=method,
            process_attribution="direct",
        ),
        host=_host_block(host),
        actor=actor,
        process=process,
        data=data,
        related=[(request_event["event_id"], "parent")],
    )
    if delta.choice_index:
        event.setdefault("attrs", {})["choice_index"] = delta.choice_index
    return event
