"""HTTP/1.1 exchanges of one connection, from the client's side: two parsers and in-order pairing.

The sensor sits in the client process: what it writes are requests, what it reads are responses,
and HTTP/1.1 answers in request order, so a response pairs with the oldest request still waiting.
An exchange is created as soon as its request line is parsed, so that an early response (a 413
while the body is still being sent) pairs with it and the response parser knows its method (a
HEAD response has no body).

Pairing must never cross, so:
- a response that began before the oldest waiting request began cannot answer it (the kernel
  timestamps say so: requests are stamped at SSL_write entry, responses at SSL_read return): it
  is counted as an orphan, never paired;
- after lost bytes (a gap, direction unknown) the lost bytes may have held any response's start,
  so every open exchange ends there (partial, "gap"), and only requests sent after the gap pair
  with responses that follow. Only pipelined requests sent before the gap and answered after it
  could still be mismatched; real clients do not pipeline.
- a 101 (upgrade) or a 2xx to CONNECT (tunnel) answers its request, but what follows is another
  protocol: that response is marked partial with the reason, and the decoder stops.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Deque, List, Optional

from .http1 import MAX_PENDING_RESPONSES, Http1Parser
from .messages import HttpRequest, HttpResponse
from .protocol import (
    GAP, TOO_MANY_PENDING, ConnectionKey, DecodeStats, Exchange, ProtocolDecoder, Step, end_exchange,
    request_done, response_done, response_progress,
)

_SWITCHES = ("upgrade", "tunnel")


@dataclass
class _Slot:
    exchange: Exchange
    early: Optional[HttpResponse] = None  # a response that came before the request ended


class Http1Decoder(ProtocolDecoder):
    """One HTTP/1.x connection: requests from "write", responses from "read"."""

    def __init__(self, key: ConnectionKey, stats: DecodeStats, max_body_bytes: int,
                 max_header_bytes: int) -> None:
        self.key = key
        self.stats = stats
        self.requests = Http1Parser("request", max_body_bytes, max_header_bytes)
        self.responses = Http1Parser("response", max_body_bytes, max_header_bytes)
        self._slots: Deque[_Slot] = deque()
        # The exchange whose response switched the connection to another protocol (101, CONNECT
        # 2xx), for the decoder the tracker hands the connection to.
        self.switched: Optional[Exchange] = None

    # -- ProtocolDecoder --------------------------------------------------------------------------

    @property
    def stopped(self) -> Optional[str]:
        return self.requests.protocol_error or self.responses.protocol_error

    @property
    def skipped_bytes(self) -> int:
        return self.requests.skipped_bytes + self.responses.skipped_bytes

    @property
    def resyncs(self) -> int:
        return self.requests.resyncs + self.responses.resyncs

    @property
    def leftover(self) -> bytes:
        """What the server sent after the response that switched protocols (the new protocol's)."""
        return self.responses.leftover

    def feed(self, direction: str, data: bytes, ts_ns: int, out: List[Step]) -> None:
        if direction == "write":
            self._requests_done(self.requests.feed(data, ts_ns), out)
        else:
            self._responses_done(self.responses.feed(data, ts_ns), out)
            self._progress(out)

    def gap(self, ts_ns: int, out: List[Step]) -> None:
        self._requests_done(self.requests.gap(ts_ns), out)
        self._responses_done(self.responses.gap(ts_ns), out)
        self._end_all(ts_ns, GAP, out)
        self.responses.forget_expected()

    def close(self, ts_ns: int, why: str, out: List[Step]) -> None:
        self._requests_done(self.requests.close(ts_ns, why), out)
        self._responses_done(self.responses.close(ts_ns, why), out)
        self._end_all(ts_ns, why, out)

    def open_exchanges(self) -> List[Exchange]:
        return [slot.exchange for slot in self._slots]

    # -- pairing ----------------------------------------------------------------------------------

    def _slot_of(self, request: HttpRequest) -> Optional[_Slot]:
        return next((s for s in self._slots if s.exchange.request is request), None)

    def _register(self, request: HttpRequest, out: List[Step]) -> _Slot:
        slot = _Slot(Exchange(self.key, request))
        self._slots.append(slot)
        self.responses.expect_response_to(request.method)
        if len(self._slots) > MAX_PENDING_RESPONSES:
            # The response parser forgot the oldest method too; keep both queues aligned. The
            # oldest request is complete: on one connection only the newest can be in progress.
            oldest = self._slots.popleft()
            end_exchange(oldest.exchange, TOO_MANY_PENDING, request.ts_start_ns, out)
        return slot

    def _requests_done(self, requests: List[HttpRequest], out: List[Step]) -> None:
        for request in requests:
            slot = self._slot_of(request) or self._register(request, out)
            request_done(slot.exchange, out)
            if slot.early is not None:
                self._slots.remove(slot)
                response_done(slot.exchange, slot.early, out)
        current = self.requests.in_progress
        if current is not None and self._slot_of(current) is None:
            self._register(current, out)

    def _responses_done(self, responses: List[HttpResponse], out: List[Step]) -> None:
        switch = self.responses.protocol_error
        if responses and switch in _SWITCHES:
            # The last response switched the connection away from HTTP/1.x: the exchange it
            # answers goes on in a protocol this decoder does not read.
            responses[-1].mark_partial(switch)
        for response in responses:
            slot = next((s for s in self._slots if s.early is None), None)
            if slot is None or response.ts_start_ns < slot.exchange.request.ts_start_ns:
                self.stats.orphan_responses += 1
                continue
            if switch in _SWITCHES and response is responses[-1]:
                self.switched = slot.exchange
            if slot.exchange.requested:
                self._slots.remove(slot)
                response_done(slot.exchange, response, out)
            else:
                slot.early = response

    def _progress(self, out: List[Step]) -> None:
        """New body bytes of the response in progress, for a streaming exchange (see
        protocol.ResponseProgress); nothing is looked at or copied for any other."""
        response = self.responses.in_progress
        if not isinstance(response, HttpResponse):
            return
        slot = next((s for s in self._slots if s.early is None), None)
        if slot is None or not slot.exchange.streaming or response.ts_start_ns < slot.exchange.request.ts_start_ns:
            return
        new = self.responses.body_since(slot.exchange.progressed)
        if new is not None:
            response_progress(slot.exchange, response, new[0], new[1], out)

    def _end_all(self, ts_ns: int, why: str, out: List[Step]) -> None:
        while self._slots:
            slot = self._slots.popleft()
            end_exchange(slot.exchange, why, ts_ns, out, slot.early)
