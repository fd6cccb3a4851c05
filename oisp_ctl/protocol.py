"""The control protocol between oisp-ctl and the daemon: newline-delimited JSON on a Unix socket.

It lives in the client package so that oisp-ctl can speak it without importing the daemon (which
needs bcc and root); the daemon imports it from here. Nothing in this module may import oisp_daemon.

Wire format: one JSON object per line, UTF-8, no NaN/Infinity.

- request   {"id": <int|str>, "op": "<name>", "args": {...}}
- reply     {"id": <same>, "ok": true, "result": ...}
            {"id": <same>, "ok": false, "error": {"code": "<code>", "message": "<cause and fix>"}}
- tail      {"id": <same>, "event": {...}}      one captured OISP event
            {"id": <same>, "dropped": N}        N events were dropped because the reader was slow
            {"id": <same>, "ok": true, "result": {"end": "<reason>"}}   the stream is over

The first exchange is "hello": the client sends {"protocol": 1, "client": "oisp-ctl/<ver>"} and the
daemon answers {"protocol": 1, "daemon": <ver>, "uid": ..., "groups": [...], "permissions": [...]};
different versions are refused with code "protocol_version".
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

PROTOCOL_VERSION = 1

DEFAULT_SOCKET_PATH = "/run/oisp-sensor/control.sock"
SOCKET_PATH_ENV = "OISP_SENSOR_CONTROL_SOCKET"

# The daemon reads only requests, which are small: this bounds what an unprivileged peer can make
# the root daemon buffer.
MAX_LINE_BYTES = 1 << 20
# The client reads replies and tail events; an event carries HTTP bodies up to the capture limit
# (64 MiB by default), which JSON escaping can grow, so the client accepts much longer lines.
MAX_STREAM_LINE_BYTES = 256 << 20
# Nesting allowed in a request line, the request object being level 1. Real requests use four
# (request, args, filters, a list); the bound keeps every later walk of the arguments
# (validation, copies, JSON dumps) far from Python's recursion limit, whatever the peer sends.
MAX_REQUEST_DEPTH = 16

OP_HELLO = "hello"
OP_STATUS = "status"
OP_SESSION_START = "session.start"
OP_SESSION_STOP = "session.stop"
OP_SESSION_LIST = "session.list"
OP_BINARY_PATHS_ADD = "binary_paths.add"
OP_BINARY_PATHS_REMOVE = "binary_paths.remove"
OP_BINARY_PATHS_LIST = "binary_paths.list"
OP_REDACTION_GET = "redaction.get"
OP_REDACTION_SET = "redaction.set"
OP_RELOAD = "reload"
OP_TAIL = "tail"

OPS = frozenset({
    OP_HELLO, OP_STATUS, OP_SESSION_START, OP_SESSION_STOP, OP_SESSION_LIST,
    OP_BINARY_PATHS_ADD, OP_BINARY_PATHS_REMOVE, OP_BINARY_PATHS_LIST,
    OP_REDACTION_GET, OP_REDACTION_SET, OP_RELOAD, OP_TAIL,
})

E_BAD_REQUEST = "bad_request"
E_UNKNOWN_OP = "unknown_op"
E_PERMISSION_DENIED = "permission_denied"
E_NOT_FOUND = "not_found"
E_CONFLICT = "conflict"
E_INVALID_ARGUMENT = "invalid_argument"
E_PROTOCOL_VERSION = "protocol_version"
E_INTERNAL = "internal"
E_LIMIT = "limit_exceeded"          # a per-caller limit (sessions, connections, calls in flight)

ERROR_CODES = frozenset({
    E_BAD_REQUEST, E_UNKNOWN_OP, E_PERMISSION_DENIED, E_NOT_FOUND, E_CONFLICT,
    E_INVALID_ARGUMENT, E_PROTOCOL_VERSION, E_INTERNAL, E_LIMIT,
})

# Redaction modes, the default first: the one list of them. The daemon's event path cannot
# import this package, so tests/unit/test_redact_modes.py checks that the engine, authz, the
# config schema and oisp-ctl agree with it.
REDACTION_MODES = ("safe", "minimal", "full")

# Permission names the daemon lists in its hello reply, so oisp-ctl can say what the caller may do.
PERM_READ = "read"                  # status, redaction.get, binary_paths.list
PERM_TAIL_OWN = "tail.own"          # tail events of the caller's own uid
PERM_TAIL_ALL = "tail.all"          # tail every uid's events
PERM_SESSIONS_OWN = "sessions.own"  # list sessions, start and stop one's own
PERM_SESSIONS_ALL = "sessions.all"  # start and stop anyone's sessions, weaker session redaction
PERM_CONFIGURE = "configure"        # redaction.set, binary_paths.add/remove, reload

PERMISSIONS = (
    PERM_READ, PERM_TAIL_OWN, PERM_TAIL_ALL, PERM_SESSIONS_OWN, PERM_SESSIONS_ALL, PERM_CONFIGURE,
)

RequestId = Union[int, str]

_REQUEST_KEYS = frozenset({"id", "op", "args"})


class ProtocolError(Exception):
    """A failure that travels as an error reply: a machine `code` and a message naming cause and fix.

    `request_id` is the id of the request it answers when that could be read, else None (the reply
    then carries "id": null).
    """

    def __init__(self, code: str, message: str, request_id: Optional[RequestId] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    def to_reply(self) -> Dict[str, Any]:
        """The error reply for this failure."""
        return error_reply(self.request_id, self.code, self.message)


class Request(NamedTuple):
    """A validated request."""

    id: RequestId
    op: str
    args: Dict[str, Any]


def socket_path(override: Optional[str] = None) -> str:
    """The control socket path: an explicit override, else $OISP_SENSOR_CONTROL_SOCKET, else the default."""
    return override or os.environ.get(SOCKET_PATH_ENV) or DEFAULT_SOCKET_PATH


def _reject_constant(name: str) -> None:
    raise ValueError("%s is not valid JSON" % name)


# A \\uD800-\\uDFFF escape in JSON text: only such text can decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_STRING = re.compile(rb'"[^"]*"')  # once escaped backslashes and quotes are out
_BRACKETS = bytes.maketrans(b"[]{}", b"()()")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def _nesting_exceeds(text: bytes, max_depth: int) -> bool:
    """Whether valid JSON `text` nests containers deeper than `max_depth` levels.

    Done on the text at C speed (a walk of the decoded value in Python costs several times the
    decoding for a line of a million brackets): escapes out (in valid JSON a run of backslashes
    starts an escape, so pairs of them are escaped backslashes), then strings, then all but
    brackets; each pass strips the innermost pairs, so after `max_depth` passes nothing is left
    unless it nests deeper.
    """
    unescaped = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = _JSON_STRING.sub(b"", unescaped).translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not brackets:
            return False
        brackets = brackets.replace(b"()", b"")
    return bool(brackets)


def value_problem(value: Any, text: bytes, max_depth: int) -> Optional[str]:
    """Why `value`, decoded from the JSON `text`, may not reach the daemon's operations; or None.

    Refused: nesting deeper than `max_depth` (`value` itself is level 1), and strings or keys
    holding a lone UTF-16 surrogate ("\\ud800"): JSON's escapes allow it, but it is no Unicode
    character and has no UTF-8 form (file names, logs, replies).
    """
    if text.count(b"[") + text.count(b"{") > max_depth and _nesting_exceeds(text, max_depth):
        return "it nests deeper than %d levels" % max_depth
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return "a string holds a lone UTF-16 surrogate, which is not a Unicode character"
    return None


def loads(text: Union[str, bytes], max_depth: int = MAX_REQUEST_DEPTH - 1) -> Any:
    """Strict JSON from an untrusted peer: the D-Bus transport's arguments (an args object, so one
    level less than a request line may have).

    Raises ValueError naming the problem for text that is not JSON, NaN/Infinity, nesting deeper
    than `max_depth` (also where json itself would hit the recursion limit) and lone surrogates.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("it nests deeper than %d levels" % max_depth) from None
    problem = value_problem(value, raw, max_depth)
    if problem is not None:
        raise ValueError(problem)
    return value


def encode(obj: Any) -> bytes:
    """One message as a UTF-8 line, newline included.

    Compact separators and no NaN/Infinity, so every line is strict JSON any client can parse.
    A string holding a lone surrogate (a non-UTF-8 file name decoded with surrogateescape, say)
    has no UTF-8 form: the line is then written with ASCII escapes, still valid JSON, rather than
    not at all.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


class Decoder:
    """Turns arbitrary pieces of a byte stream into messages, one per complete line.

    `feed` returns, in stream order, a dict for every valid line and a ProtocolError (code
    bad_request) for every bad one, so one garbled line never costs the rest of the stream. A line
    longer than `max_line` bytes is reported once and skipped up to its newline without buffering it.
    Blank lines are ignored; a trailing "\\r" is tolerated. With `max_depth` (the daemon reading
    requests) a line nesting deeper, or holding a lone surrogate, is refused too (value_problem);
    the client leaves it None, as captured events may nest as deeply as the bodies they carry.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES, max_depth: Optional[int] = None) -> None:
        if max_line <= 0:
            raise ValueError("max_line must be positive, got %r" % (max_line,))
        self.max_line = max_line
        self.max_depth = max_depth
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line, discarding up to its newline
        self._line_no = 0

    @property
    def pending(self) -> int:
        """Bytes buffered of a line whose newline has not arrived yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> List[Union[Dict[str, Any], ProtocolError]]:
        """Add bytes; return the messages (and per-line errors) completed by them."""
        out: List[Union[Dict[str, Any], ProtocolError]] = []
        start = 0
        while start < len(data):
            nl = data.find(b"\n", start)
            end = len(data) if nl < 0 else nl
            if not self._skipping:
                if len(self._buf) + (end - start) > self.max_line:
                    self._line_no += 1
                    out.append(self._too_long())
                    self._buf.clear()
                    self._skipping = True
                else:
                    self._buf += data[start:end]
            if nl < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                self._line_no += 1
                item = self._parse(bytes(self._buf))
                self._buf.clear()
                if item is not None:
                    out.append(item)
            start = nl + 1
        return out

    def close(self) -> List[Union[Dict[str, Any], ProtocolError]]:
        """End of stream: parse a last line that had no newline, so a peer that omits it loses nothing."""
        if self._skipping or not self._buf:
            self._skipping = False
            return []
        self._line_no += 1
        item = self._parse(bytes(self._buf))
        self._buf.clear()
        return [] if item is None else [item]

    def _too_long(self) -> ProtocolError:
        return ProtocolError(
            E_BAD_REQUEST,
            "line %d is longer than %d bytes, the protocol's limit; it was discarded "
            "(send smaller messages)" % (self._line_no, self.max_line),
        )

    def _parse(self, line: bytes) -> Optional[Union[Dict[str, Any], ProtocolError]]:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return None
        try:
            obj = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as exc:
            return ProtocolError(E_BAD_REQUEST, "line %d is not UTF-8 (%s); send UTF-8 encoded JSON"
                                 % (self._line_no, exc.reason))
        except ValueError as exc:
            return ProtocolError(E_BAD_REQUEST, "line %d is not valid JSON (%s); send one JSON "
                                 "object per line" % (self._line_no, exc))
        except RecursionError:
            return ProtocolError(E_BAD_REQUEST, "line %d nests JSON too deeply to decode; a request "
                                 "nests at most %d levels" % (self._line_no, MAX_REQUEST_DEPTH))
        if not isinstance(obj, dict):
            return ProtocolError(E_BAD_REQUEST, "line %d is a JSON %s, not an object; send one JSON "
                                 "object per line" % (self._line_no, type(obj).__name__))
        problem = None if self.max_depth is None else value_problem(obj, line, self.max_depth)
        if problem is not None:
            raw_id = obj.get("id")
            return ProtocolError(E_BAD_REQUEST, "line %d is refused: %s" % (self._line_no, problem),
                                 raw_id if _is_request_id(raw_id) else None)
        return obj


def _is_request_id(value: Any) -> bool:
    # bool is an int subclass, but true/false as an id is certainly a client bug; a lone
    # surrogate has no UTF-8 form, so the reply could not carry the id back
    if isinstance(value, str):
        return not _SURROGATE.search(value)
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request(msg: Dict[str, Any]) -> Request:
    """Validate a decoded message as a request; raise ProtocolError (bad_request or unknown_op)."""
    raw_id = msg.get("id")
    request_id = raw_id if _is_request_id(raw_id) else None
    if "id" not in msg:
        raise ProtocolError(E_BAD_REQUEST, 'request has no "id"; every request needs an integer or '
                            "string id that its reply will carry")
    if request_id is None:
        raise ProtocolError(E_BAD_REQUEST, 'request "id" must be an integer or a string, got %s%s'
                            % (json.dumps(raw_id)[:100], " (a lone surrogate is no Unicode "
                               "character)" if isinstance(raw_id, str) else ""))
    extra = sorted(set(msg) - _REQUEST_KEYS)
    if extra:
        raise ProtocolError(E_BAD_REQUEST, "request has unknown keys %s; a request has only "
                            '"id", "op" and "args"' % ", ".join(repr(k) for k in extra), request_id)
    op = msg.get("op")
    if not isinstance(op, str) or not op:
        raise ProtocolError(E_BAD_REQUEST, 'request "op" must be a non-empty string naming the '
                            "operation", request_id)
    if op not in OPS:
        raise ProtocolError(E_UNKNOWN_OP, "unknown operation %r; known operations: %s (is oisp-ctl "
                            "newer than the daemon?)" % (op, ", ".join(sorted(OPS))), request_id)
    args = msg.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(E_BAD_REQUEST, 'request "args" must be a JSON object, got a JSON %s'
                            % type(args).__name__, request_id)
    return Request(request_id, op, args)


def request(request_id: RequestId, op: str, args: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A request message."""
    return {"id": request_id, "op": op, "args": {} if args is None else args}


def ok_reply(request_id: Optional[RequestId], result: Any) -> Dict[str, Any]:
    """A success reply."""
    return {"id": request_id, "ok": True, "result": result}


def error_reply(request_id: Optional[RequestId], code: str, message: str) -> Dict[str, Any]:
    """An error reply; `code` is one of ERROR_CODES."""
    if code not in ERROR_CODES:
        raise ValueError("unknown error code %r" % (code,))
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def event_item(request_id: RequestId, event: Dict[str, Any]) -> Dict[str, Any]:
    """One event of a tail stream."""
    return {"id": request_id, "event": event}


def event_item_frame(request_id: RequestId) -> Tuple[bytes, bytes]:
    """The bytes before and after an event's JSON in its tail line.

    head + event JSON (compact, as `encode` writes it) + end == encode(event_item(request_id,
    event)): the daemon encodes an event once and sends those bytes to every tail.
    """
    line = encode(event_item(request_id, None))  # type: ignore[arg-type]
    return line[:-len(b"null}\n")], b"}\n"


def dropped_item(request_id: RequestId, count: int) -> Dict[str, Any]:
    """The notice that `count` events were dropped because the reader fell behind."""
    return {"id": request_id, "dropped": count}


def end_item(request_id: RequestId, reason: str) -> Dict[str, Any]:
    """The final reply of a tail stream, saying why it ended."""
    return ok_reply(request_id, {"end": reason})


def message_kind(msg: Dict[str, Any]) -> str:
    """What the client got: "reply", "event" or "dropped"; raise ProtocolError if it is none of them."""
    if "ok" in msg:
        ok = msg["ok"]
        if ok is True and "result" in msg:
            return "reply"
        error = msg.get("error")
        if ok is False and isinstance(error, dict) and isinstance(error.get("code"), str) \
                and isinstance(error.get("message"), str):
            return "reply"
    elif isinstance(msg.get("event"), dict):
        return "event"
    elif isinstance(msg.get("dropped"), int) and not isinstance(msg.get("dropped"), bool):
        return "dropped"
    raise ProtocolError(E_BAD_REQUEST, "the daemon sent a message that is neither a reply nor a "
                        "tail item: %s" % json.dumps(msg)[:200], msg.get("id"))


def reply_result(msg: Dict[str, Any]) -> Any:
    """The result of a reply, or the daemon's error raised as a ProtocolError."""
    if message_kind(msg) != "reply":
        raise ProtocolError(E_BAD_REQUEST, "expected a reply, got a tail item", msg.get("id"))
    if msg["ok"]:
        return msg["result"]
    error = msg["error"]
    raise ProtocolError(error["code"], error["message"], msg.get("id"))


def hello_args(client: str) -> Dict[str, Any]:
    """The client's hello arguments, e.g. hello_args("oisp-ctl/0.1.0")."""
    return {"protocol": PROTOCOL_VERSION, "client": client}


def check_hello_args(args: Dict[str, Any]) -> str:
    """Daemon side: validate a hello's arguments; return the client's name.

    Raises ProtocolError protocol_version when the client speaks another version.
    """
    version = args.get("protocol")
    client = args.get("client")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError(E_BAD_REQUEST, 'hello needs "protocol": <integer version>, this daemon '
                            "speaks protocol %d" % PROTOCOL_VERSION)
    if not isinstance(client, str) or not client:
        raise ProtocolError(E_BAD_REQUEST, 'hello needs "client": "<name>/<version>", e.g. '
                            '"oisp-ctl/0.1.0"')
    if version != PROTOCOL_VERSION:
        raise ProtocolError(E_PROTOCOL_VERSION, "%s speaks control protocol %d but this daemon speaks "
                            "protocol %d; install oisp-ctl from the same release as the daemon"
                            % (client, version, PROTOCOL_VERSION))
    return client


def check_hello_result(result: Any) -> None:
    """Client side: refuse a daemon that answered hello with another protocol version."""
    version = result.get("protocol") if isinstance(result, dict) else None
    if version != PROTOCOL_VERSION:
        raise ProtocolError(E_PROTOCOL_VERSION, "the daemon speaks control protocol %s but this "
                            "oisp-ctl speaks protocol %d; install oisp-ctl from the same release as "
                            "the daemon" % (version, PROTOCOL_VERSION))
