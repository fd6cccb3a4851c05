"""A WebSocket connection (RFC 6455) after its HTTP upgrade, as exchanges.

The connection tracker hands a connection over here once its HTTP/1.1 upgrade was answered by
101 Switching Protocols (decode/connection.py: after_upgrade); over HTTP/2 a stream opened by
extended CONNECT with `:protocol` websocket (RFC 8441) and answered 2xx carries one, and its DATA
comes here the same way (after_connect). What the client writes are its messages, what it
reads the server's; `permessage-deflate` (RFC 7692) is set up from the 101's
Sec-WebSocket-Extensions.

One connection carries many exchanges. The AI APIs spoken over WebSocket (OpenAI's Responses
API in WebSocket mode, the Realtime API, and the providers that copy them) send JSON events with a
"type", and an exchange is one `response.create` from the client up to the server event that
ends that response (`response.completed`, `response.done`, ...), or an `error` before the
response began. Its request and response are HTTP messages like the other protocols' (so the
provider parsers and the pipeline need nothing new):

- the request: method WEBSOCKET (a pseudo-method: the messages of a connection upgraded by
  `GET target`), the upgrade's target and headers (Host, Authorization), and as body the client's
  messages since the previous exchange (session.update, conversation.item.create, ...; audio
  appends left out) ending with the response.create, as a JSON text sequence (RFC 7464:
  RS, message, LF each), Content-Type application/json-seq;
- the response: the 101's status and headers, and as body the server's messages for that
  response in the same framing, one body mark per message at the TLS read that completed it.

Server messages outside any exchange (session.created, rate limits) and binary messages are
counted and dropped (their bytes as DecodeStats.ignored_bytes). Connections of other WebSocket APIs are framed but give no exchanges.

Lost bytes (a gap) or a frame the RFC forbids leave no way to find the next frame boundary: the
open exchanges end partial and the connection is no longer decoded.
"""
from __future__ import annotations

import bisect
import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, List, Optional, Tuple

from .http1 import MAX_PENDING_RESPONSES
from .messages import HttpRequest, HttpResponse, header_value
from .protocol import (
    GAP, TOO_MANY_PENDING, ConnectionKey, DecodeStats, Exchange, ProtocolDecoder, Step, end_exchange, request_done,
    response_done, response_progress,
)
from .ws_frames import TEXT
from .ws_messages import Close, Inflater, Message, MessageReader

WEBSOCKET_METHOD = "WEBSOCKET"
JSON_SEQ = "application/json-seq"
RS = b"\x1e"

# Why the decoder stopped (ProtocolDecoder.stopped), and why its open exchanges ended.
WEBSOCKET_ERROR = "websocket_error"  # a frame the RFC forbids: boundaries are lost
WEBSOCKET_GAP = "websocket_gap"  # bytes were lost: boundaries are lost
WEBSOCKET_CLOSE = "websocket_close"  # a close frame ended the open exchanges
# permessage-deflate with context takeover could not inflate a message: the later ones cannot be
DEFLATE_CONTEXT_LOST = "deflate_context_lost"

_STARTS = frozenset({"response.create"})
_ENDS = frozenset({"response.completed", "response.done", "response.failed", "response.incomplete",
                   "response.cancelled"})
# Client messages that are no part of what a request asks (audio bytes).
_NOT_CONTEXT = frozenset({"input_audio_buffer.append"})


@dataclass
class DeflateParams:
    """The permessage-deflate parameters the server accepted (RFC 7692 section 7.1)."""

    client_takeover: bool = True
    server_takeover: bool = True
    client_max_window_bits: int = 15
    server_max_window_bits: int = 15


def deflate_params(extensions: Optional[str]) -> Optional[DeflateParams]:
    """permessage-deflate from a 101's Sec-WebSocket-Extensions, None if it was not accepted."""
    for offer in (extensions or "").split(","):
        parts = [p.strip() for p in offer.split(";")]
        if parts[0].lower() != "permessage-deflate":
            continue
        params = DeflateParams()
        for part in parts[1:]:
            name, _, value = part.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "client_no_context_takeover":
                params.client_takeover = False
            elif name == "server_no_context_takeover":
                params.server_takeover = False
            elif name in ("client_max_window_bits", "server_max_window_bits") and value.isdigit():
                setattr(params, name, int(value))
        return params
    return None


# The APIs put "type" first: read it without parsing the whole message (the provider parses it).
_TYPE_FIRST = re.compile(rb'\s*\{\s*"type"\s*:\s*"([A-Za-z0-9_.]{1,128})"\s*[,}]')


def _event_type(data: bytes) -> Optional[str]:
    """The "type" of a JSON event message, None when it is not one."""
    first = _TYPE_FIRST.match(data)
    if first is not None:
        return first.group(1).decode("ascii")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None


@dataclass
class _Open:
    exchange: Exchange
    response: Optional[HttpResponse] = None
    body: bytearray = field(default_factory=bytearray)
    marks: List[Tuple[int, int]] = field(default_factory=list)
    started: bool = False  # the server began this response (an event other than "error")


class WebSocketDecoder(ProtocolDecoder):
    """One upgraded connection: client messages from "write", server messages from "read"."""

    def __init__(self, key: ConnectionKey, stats: DecodeStats, max_body_bytes: int,
                 upgrade: HttpRequest, accepted: HttpResponse) -> None:
        self.key = key
        self.stats = stats
        self.max_body_bytes = max_body_bytes
        self.upgrade = upgrade
        self.accepted = accepted
        deflate = deflate_params(accepted.header("Sec-WebSocket-Extensions"))
        self.deflate = deflate
        self.client = MessageReader(max_body_bytes, deflate and Inflater(deflate.client_takeover, max_body_bytes))
        self.server = MessageReader(max_body_bytes, deflate and Inflater(deflate.server_takeover, max_body_bytes))
        self.dropped_messages = 0  # server messages outside any exchange, binary messages
        self.close_code: Optional[int] = None
        self._context: List[bytes] = []  # client messages since the last exchange began
        self._context_size = 0
        self._context_cut = False  # some of them did not fit
        self._open: Deque[_Open] = deque()
        self._stopped: Optional[str] = None

    # -- ProtocolDecoder --------------------------------------------------------------------------

    @property
    def stopped(self) -> Optional[str]:
        return self._stopped

    @property
    def skipped_bytes(self) -> int:
        return 0

    @property
    def resyncs(self) -> int:
        return 0

    def feed(self, direction: str, data: bytes, ts_ns: int, out: List[Step]) -> None:
        if self._stopped is not None:
            return
        reader = self.client if direction == "write" else self.server
        for item in reader.feed(data, ts_ns):
            if isinstance(item, Close):
                self.close_code = item.code
                self._end_all(item.ts_ns, WEBSOCKET_CLOSE, out)
            elif direction == "write":
                self._client_message(item, out)
            else:
                self._server_message(item, out)
        if direction == "read":
            self._progress(out)
        if reader.error is not None:
            self._stopped = WEBSOCKET_ERROR
        elif reader.inflater is not None and reader.inflater.lost:
            self._stopped = DEFLATE_CONTEXT_LOST
        if self._stopped is not None:
            self._end_all(ts_ns, self._stopped, out)

    def gap(self, ts_ns: int, out: List[Step]) -> None:
        self._end_all(ts_ns, GAP, out)
        self._stopped = WEBSOCKET_GAP

    def close(self, ts_ns: int, why: str, out: List[Step]) -> None:
        self._end_all(ts_ns, why, out)

    def open_exchanges(self) -> List[Exchange]:
        return [o.exchange for o in self._open]

    # -- messages ---------------------------------------------------------------------------------

    def _client_message(self, message: Message, out: List[Step]) -> None:
        if message.opcode != TEXT:
            return
        kind = _event_type(message.data)
        if kind in _NOT_CONTEXT:
            return
        record = RS + message.data + b"\n"
        if self._context_size + len(record) <= self.max_body_bytes:
            self._context.append(record)
            self._context_size += len(record)
        else:
            self._context_cut = True
        if kind not in _STARTS:
            return
        context, cut = self._context, self._context_cut
        self._context, self._context_size, self._context_cut = [], 0, False
        headers = [(k, v) for k, v in self.upgrade.headers if k.lower() != "content-type" and k[:1] != ":"]
        request = HttpRequest(
            headers=headers + [("Content-Type", JSON_SEQ)], body=b"".join(context),
            ts_start_ns=message.ts_start_ns, ts_end_ns=message.ts_end_ns,
            body_marks=[(0, message.ts_end_ns)], wire_body_bytes=len(message.data),
            method=WEBSOCKET_METHOD, target=self.upgrade.target, version=self.upgrade.version)
        for reason in message.partial_reasons:
            request.mark_partial(reason)
        if cut:
            request.mark_partial("body_limit")
        opened = _Open(Exchange(self.key, request))
        self._open.append(opened)
        request_done(opened.exchange, out)
        if len(self._open) > MAX_PENDING_RESPONSES:  # answers that never come must not pile up
            self._end(self._open.popleft(), TOO_MANY_PENDING, message.ts_end_ns, out)

    def _server_message(self, message: Message, out: List[Step]) -> None:
        opened = self._open[0] if self._open else None
        if opened is None or message.opcode != TEXT:
            self.dropped_messages += 1
            self.stats.ignored_bytes += len(message.data)  # decoded into nothing
            return
        # A message that is no JSON event (cut, not inflatable) still belongs to the response.
        kind = _event_type(message.data)
        response = opened.response
        if response is None:
            headers = [(k, v) for k, v in self.accepted.headers if k.lower() != "content-type"]
            response = opened.response = HttpResponse(
                headers=headers + [("Content-Type", JSON_SEQ)], body=b"",
                ts_start_ns=message.ts_start_ns, ts_end_ns=message.ts_end_ns,
                status=self.accepted.status, reason=self.accepted.reason, version=self.accepted.version)
        for reason in message.partial_reasons:
            response.mark_partial(reason)
        record = RS + message.data + b"\n"
        response.wire_body_bytes += len(message.data)
        response.ts_end_ns = message.ts_end_ns
        if len(opened.body) + len(record) <= self.max_body_bytes:
            opened.marks.append((len(opened.body), message.ts_end_ns))
            opened.body += record
        else:
            response.mark_partial("body_limit")
        ends = kind in _ENDS or (kind == "error" and not opened.started)
        opened.started = opened.started or kind != "error"
        if ends:
            self._open.popleft()
            self._finish(opened, out)

    def _progress(self, out: List[Step]) -> None:
        """New server messages of streaming exchanges, as ResponseProgress steps."""
        for opened in self._open:
            exchange = opened.exchange
            if opened.response is None or not exchange.streaming or len(opened.body) <= exchange.progressed:
                continue
            start = exchange.progressed
            first = bisect.bisect_left(opened.marks, (start, 0))  # messages are whole: a mark is there
            marks = opened.marks[first:] or [(start, opened.response.ts_end_ns)]
            response_progress(exchange, opened.response, bytes(opened.body[start:]), marks, out)

    def _finish(self, opened: _Open, out: List[Step]) -> None:
        response = opened.response
        if response is not None:
            response.body, response.body_marks = bytes(opened.body), opened.marks
        response_done(opened.exchange, response, out)

    def _end_all(self, ts_ns: int, why: str, out: List[Step]) -> None:
        while self._open:
            self._end(self._open.popleft(), why, ts_ns, out)

    def _end(self, opened: _Open, why: str, ts_ns: int, out: List[Step]) -> None:
        if opened.response is not None:
            opened.response.body, opened.response.body_marks = bytes(opened.body), opened.marks
        end_exchange(opened.exchange, why, ts_ns, out, opened.response)


def after_upgrade(key: ConnectionKey, stats: DecodeStats, max_body_bytes: int,
                  upgrade: Optional[HttpRequest], accepted: Optional[HttpResponse]) -> Optional[WebSocketDecoder]:
    """The decoder of a connection whose HTTP/1.1 upgrade was answered, if it is a WebSocket."""
    if upgrade is None or accepted is None or accepted.status != 101:
        return None
    if (header_value(accepted.headers, "Upgrade") or "").strip().lower() != "websocket":
        return None
    return WebSocketDecoder(key, stats, max_body_bytes, upgrade, accepted)


def after_connect(key: ConnectionKey, stats: DecodeStats, max_body_bytes: int,
                  connect: HttpRequest, accepted: HttpResponse) -> Optional[WebSocketDecoder]:
    """The decoder of an HTTP/2 stream opened by extended CONNECT (RFC 8441), if it carries a
    WebSocket: `:protocol` websocket (kept as a field by decode/http2.py) answered 2xx."""
    if connect.method != "CONNECT" or not 200 <= accepted.status < 300:
        return None
    if (connect.header(":protocol") or "").strip().lower() != "websocket":
        return None
    return WebSocketDecoder(key, stats, max_body_bytes, connect, accepted)
