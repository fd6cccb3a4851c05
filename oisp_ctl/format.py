"""Human output of oisp-ctl: one line per event (like `journalctl -f`) and the status/session views.

An event line reads

    20:15:05.123 ai.response     python3[4242] openai/gpt-4o-mini 1200→340 tok $0.0012 812ms stop

time (local), event type, process name[pid], provider/model, then a short summary that depends on
the type: tokens, cost, latency and finish reason of a response, tool names, HTTP errors. Colors
only help a person at a terminal: they are used only on a TTY and never when NO_COLOR is set
(https://no-color.org). Everything here reads events defensively: a field may be missing or
redacted, and a line is printed regardless.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Optional, TextIO

Event = Dict[str, Any]

TYPE_WIDTH = 15
SUMMARY_TEXT_LIMIT = 60

_RESET = "\033[0m"
_DIM = "\033[2m"
_BOLD = "\033[1m"
_RED = "\033[31m"
_GREEN = "\033[32m"
_YELLOW = "\033[33m"
_BLUE = "\033[34m"
_MAGENTA = "\033[35m"
_CYAN = "\033[36m"

_TYPE_COLORS = (("ai.request", _CYAN), ("ai.response", _GREEN), ("ai.", _BLUE),
                ("agent.", _MAGENTA), ("", _YELLOW))


def use_color(stream: TextIO) -> bool:
    """Colors on a terminal unless NO_COLOR is set (to anything non-empty)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _Paint:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, *codes: str) -> str:
        if not self.color or not codes or not text:
            return text
        return "".join(codes) + text + _RESET


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _text(value: Any, limit: int = SUMMARY_TEXT_LIMIT) -> str:
    """A single-line, length-limited rendering of a captured string (it may hold anything)."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def parse_ts(ts: Any) -> Optional[datetime]:
    """An RFC 3339 `ts` as an aware datetime, or None (fromisoformat takes "Z" only from 3.11)."""
    if not isinstance(ts, str):
        return None
    if ts.endswith(("Z", "z")):
        ts = ts[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _clock(ts: Any) -> str:
    parsed = parse_ts(ts)
    if parsed is None:
        return "--:--:--.---"
    local = parsed.astimezone()
    return local.strftime("%H:%M:%S.") + "%03d" % (local.microsecond // 1000)


def duration(ms: Any) -> str:
    """812 -> "812ms", 1534 -> "1.53s", 95000 -> "95.0s"."""
    value = _num(ms)
    if value is None:
        return ""
    if value < 1000:
        return "%dms" % round(value)
    return "%.2fs" % (value / 1000) if value < 10000 else "%.1fs" % (value / 1000)


def cost(usd: Any) -> str:
    """Dollars with enough digits for a fraction of a cent: 0.000123 -> "$0.000123"."""
    value = _num(usd)
    if value is None:
        return ""
    if value == 0:
        return "$0"
    if value >= 0.01:
        return "$%.4f" % value
    return "$%.6f" % value if value >= 0.0000005 else "<$0.000001"


def _tokens(usage: Any) -> str:
    prompt = _num(_get(usage, "prompt_tokens"))
    completion = _num(_get(usage, "completion_tokens"))
    total = _num(_get(usage, "total_tokens"))
    if prompt is not None and completion is not None:
        return "%d→%d tok" % (prompt, completion)
    if total is not None:
        return "%d tok" % total
    if prompt is not None:
        return "%d tok in" % prompt
    return ""


def _model(event: Event) -> str:
    provider = _get(event, "data", "provider", "name")
    model = _get(event, "data", "model", "id")
    parts = [p for p in (provider, model) if isinstance(p, str) and p]
    return "/".join(parts)


def _process(event: Event) -> str:
    name = _get(event, "process", "name")
    pid = _get(event, "process", "pid")
    name = name if isinstance(name, str) and name else "?"
    return "%s[%s]" % (name, pid) if isinstance(pid, int) else name


def _names(items: Any, *path: str) -> List[str]:
    if not isinstance(items, list):
        return []
    names = [_get(item, *path) for item in items]
    return [n for n in names if isinstance(n, str) and n]


def _summary_request(data: Dict[str, Any], paint: _Paint) -> List[str]:
    parts = []
    kind = data.get("request_type")
    if isinstance(kind, str) and kind not in ("chat", "completion"):
        parts.append(kind)
    if data.get("streaming") is True:
        parts.append("stream")
    messages = _num(data.get("messages_count"))
    if messages:
        parts.append("%d msg" % messages)
    tools = _num(data.get("tools_count"))
    if tools:
        parts.append("%d tools" % tools)
    return parts


def _summary_response(data: Dict[str, Any], paint: _Paint) -> List[str]:
    parts = []
    status = data.get("status_code")
    if data.get("success") is False or (isinstance(status, int) and status >= 400):
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        described = " ".join(_text(v) for v in (error.get("type"), error.get("message")) if v)
        label = "HTTP %s" % status if status is not None else "failed"
        parts.append(paint(" ".join(p for p in (label, described) if p), _RED, _BOLD))
    parts += [p for p in (_tokens(data.get("usage")), cost(_get(data, "usage", "total_cost_usd")),
                          duration(data.get("latency_ms"))) if p]
    ttft = duration(data.get("time_to_first_token_ms"))
    if ttft and data.get("streaming") is True:
        parts.append("ttft " + ttft)
    finish = data.get("finish_reason")
    if isinstance(finish, str) and finish:
        parts.append(paint(finish, _BOLD) if finish != "stop" else finish)
    tools = _names(data.get("tool_calls"), "name")
    if tools:
        parts.append("→ " + ", ".join(tools))
    return parts


def _summary_tool(data: Dict[str, Any], paint: _Paint) -> List[str]:
    parts = []
    name = _get(data, "tool", "name")
    if isinstance(name, str):
        parts.append(paint(name, _BOLD))
    if data.get("success") is False:
        parts.append(paint("failed", _RED))
    took = duration(data.get("duration_ms"))
    if took:
        parts.append(took)
    return parts


def _summary_other(event_type: str, data: Dict[str, Any], paint: _Paint) -> List[str]:
    if event_type == "process.exec":
        args = data.get("args")
        if isinstance(args, list) and args:
            return [_text(" ".join(str(a) for a in args))]
        return [_text(data["exe"])] if data.get("exe") else []
    if event_type == "process.exit":
        code = data.get("exit_code")
        return ["exit %s" % code] if code is not None else []
    if event_type.startswith("file."):
        path = data.get("path") or data.get("new_path")
        return [_text(path)] if path else []
    if event_type.startswith("network."):
        dest = data.get("dest") if isinstance(data.get("dest"), dict) else {}
        host = dest.get("domain") or dest.get("ip")
        if host:
            return ["%s:%s" % (host, dest["port"]) if dest.get("port") else str(host)]
        return [_text(data["query_name"])] if data.get("query_name") else []
    return []


def format_event(event: Event, color: bool = False) -> str:
    """One human line for an OISP event."""
    paint = _Paint(color)
    event_type = event.get("event_type")
    event_type = event_type if isinstance(event_type, str) else "?"
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    if event_type == "ai.request":
        summary = _summary_request(data, paint)
    elif event_type in ("ai.response", "ai.embedding"):
        summary = _summary_response(data, paint)
    elif event_type in ("agent.tool_call", "agent.tool_result"):
        summary = _summary_tool(data, paint)
    else:
        summary = _summary_other(event_type, data, paint)
    type_color = next(c for prefix, c in _TYPE_COLORS if event_type.startswith(prefix))
    fields = [paint(_clock(event.get("ts")), _DIM),
              paint(event_type.ljust(TYPE_WIDTH), type_color),
              _process(event)]
    model = _model(event)
    if model:
        fields.append(paint(model, _BOLD))
    fields += summary
    return " ".join(fields)


def format_dropped(count: int, color: bool = False) -> str:
    """The notice for events the daemon dropped because this reader was slow."""
    noun = "event" if count == 1 else "events"
    return _Paint(color)("-- %d %s dropped: this reader fell behind (narrow it with --type, --pid "
                         "or --comm) --" % (count, noun), _YELLOW)


# -- status, sessions, paths -----------------------------------------------------------------


def _uptime(seconds: Any) -> str:
    value = _num(seconds)
    if value is None:
        return "?"
    value = int(value)
    days, rest = divmod(value, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return "%dd %dh %dm" % (days, hours, minutes)
    if hours:
        return "%dh %dm" % (hours, minutes)
    return "%dm %ds" % (minutes, secs) if minutes else "%ds" % secs


def _probe_line(probe: Any) -> str:
    if not isinstance(probe, dict):
        return str(probe)
    what = probe.get("path") or probe.get("library") or probe.get("name") or "?"
    notes = []
    for key, value in sorted(probe.items()):
        if key in ("path", "library", "name"):
            continue
        notes.append("%d %s" % (len(value), key) if isinstance(value, list) else "%s %s" % (key, value))
    return "%s (%s)" % (what, ", ".join(notes)) if notes else str(what)


def _value(value: Any) -> str:
    """A status value: a list or mapping (the counters, sorted by name) without its brackets."""
    if isinstance(value, dict):
        value = dict(sorted(value.items()))
    text = _nested(value)
    return text[1:-1] if value and isinstance(value, (list, dict)) else text


def _nested(value: Any) -> str:
    """A value inside a status value (a counter per uid or per CPU) in the same key=value form,
    grouped, rather than as a Python repr; in the daemon's order (it lists the uids that lost most
    first)."""
    if isinstance(value, (list, dict)) and not value:
        return "none"
    if isinstance(value, list):
        return "[%s]" % ", ".join(_nested(v) for v in value)
    if isinstance(value, dict):
        return "(%s)" % ", ".join("%s=%s" % (k, _nested(v)) for k, v in value.items())
    return "-" if value is None else str(value)


_STATUS_ORDER = ("version", "pid", "uptime_s", "kernel", "kernel_headers", "redaction", "sessions",
                 "binary_paths", "config_files", "last_reload", "counters")


def unseen_line(entry: Any) -> str:
    """One process whose TLS the sensor cannot see: who, through what, since when."""
    if not isinstance(entry, dict):
        return str(entry)
    who = "pid %s %s" % (entry.get("pid", "?"), entry.get("comm") or "?")
    if entry.get("exe"):
        who += " (%s)" % entry["exe"]
    since = _num(entry.get("first_seen"))
    when = time.strftime("%H:%M:%S", time.localtime(since)) if since is not None else "?"
    return "%s: %s; %s TLS connects since %s" % (
        who, entry.get("library") or "no TLS library the sensor probes", entry.get("connects", "?"), when)


def format_status(status: Dict[str, Any]) -> str:
    """The daemon's status as labelled lines: known keys first, any others after, probes and the
    processes whose TLS is not seen last."""
    lines = []
    keys = [k for k in _STATUS_ORDER if k in status]
    keys += sorted(set(status) - set(_STATUS_ORDER) - {"probes", "unseen_tls"})
    for key in keys:
        value = _uptime(status[key]) if key == "uptime_s" else _value(status[key])
        label = "uptime" if key == "uptime_s" else key.replace("_", " ")
        lines.append("%-15s %s" % (label + ":", value))
    probes = status.get("probes")
    if isinstance(probes, list):
        lines.append("%-15s %d" % ("probes:", len(probes)))
        lines += ["  " + _probe_line(p) for p in probes]
    unseen = status.get("unseen_tls")
    if isinstance(unseen, list):
        lines.append("%-15s %d%s" % ("unseen TLS:", len(unseen), " (processes whose TLS traffic the sensor "
                                                                   "cannot see)" if unseen else ""))
        lines += ["  " + unseen_line(u) for u in unseen]
    return "\n".join(lines)


def _created(value: Any) -> str:
    if _num(value) is not None:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(value))
    parsed = parse_ts(value)
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M") if parsed else "?"


def _filters(filters: Any) -> str:
    if not isinstance(filters, dict) or not filters:
        return "everything"
    return " ".join("%s=%s" % (k, ",".join(str(v) for v in vals)) for k, vals in sorted(filters.items())
                    if vals) or "everything"


def _table(header: List[str], rows: Iterable[List[str]]) -> str:
    rows = [header] + list(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join(" ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip()
                     for r in rows)


def format_sessions(sessions: List[Dict[str, Any]]) -> str:
    """A table of sessions, or a sentence when there is none."""
    if not sessions:
        return "no sessions (start one with: oisp-ctl session start NAME)"
    rows = []
    for s in sessions:
        rows.append([str(s.get("name", "?")), str(s.get("owner_uid", "?")), str(s.get("events", "?")),
                     str(s.get("redaction", "?")), _created(s.get("created")), _filters(s.get("filters")),
                     str(_get(s, "sink", "path") or "?")])
    return _table(["NAME", "OWNER", "EVENTS", "REDACTION", "CREATED", "FILTERS", "SINK"], rows)


def format_session(session: Dict[str, Any]) -> str:
    """One session in a sentence, for start and stop."""
    return "%s: %s events, redaction %s, filters: %s, sink %s" % (
        session.get("name", "?"), session.get("events", 0), session.get("redaction", "?"),
        _filters(session.get("filters")), _get(session, "sink", "path") or "?")
