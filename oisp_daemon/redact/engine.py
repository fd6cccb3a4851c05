"""Redaction of OISP events: the step between event building and every session, sink and tail.

Modes (the `redaction_profile` recorded in each event's confidence):

- safe (default): each secret or PII value found in content is replaced by `[REDACTED:<detector>]`.
- minimal: content strings are replaced by OISP `redacted_content` objects carrying only length
  and hash (or, where the schema allows only a string, by a string saying the same); command
  lines keep their program and lose their arguments.
- full: nothing is removed. Who may choose it is the control plane's business.

In safe and minimal modes credentials are also removed from non-content strings (endpoint URLs
with `?key=`, headers in attrs, ...), by format (secret detectors only, never PII) or because
the key they sit under names a credential (`api_key`, `password`, ...). Structural values (ids,
hashes, model, provider and tool names, roles, enums, timestamps) are never rewritten.

Findings are counted by detector into `attrs.redaction.findings`; the input event is never
mutated, because the same event is redacted differently for sessions with different modes.
"""
from __future__ import annotations

import copy
import threading
from collections import Counter, OrderedDict
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .commandline import (
    RULES,
    URL_RULES,
    Rule,
    args_marker,
    join_argv,
    named_value_spans,
    secret_values,
    split_cmdline,
    split_words,
)
from .custom import compile_custom_patterns
from .detectors import DETECTORS, marker_for
from .digest import short_sha256
from .errors import RedactionConfigError
from .names import NAMED_SECRET, is_credential_name, is_secret_name
from .scanner import Scanner

MODES = ("safe", "minimal", "full")

# String values under these keys in `data` (and in `attrs`/`ext`) are content: prompts,
# completions, tool input and output, error messages, previews. `arguments_raw` is where the
# event builders keep tool-call arguments that are not a JSON object (attrs.arguments_raw).
CONTENT_KEYS = frozenset(
    {
        "content", "text", "arguments", "result", "prompt", "input", "output", "query",
        "description", "system_prompt", "message", "preview", "content_preview", "arguments_raw",
    }
)  # fmt: skip
# Payloads whose whole structure is user data (tool arguments and results, embedding input):
# every string nested inside them is content.
OPAQUE_KEYS = frozenset({"arguments", "result", "input", "output"})
# Content keys under which minimal mode may put a redacted_content object in place of a string:
# the schema allows one (message content) or says nothing. Under the other content keys the
# schema wants a string (error message, tool description, RAG query, file content_preview,
# streaming delta.content), or its oneOf [string, object, redacted_content] rejects a
# redacted_content, which is also an object (ai tool_call arguments, agent tool_result result):
# there minimal mode writes a string saying the same. Strings nested inside an arguments or
# result object are unconstrained and become redacted_content objects.
OBJECT_KEYS = frozenset({"content", "input", "output", "text", "prompt", "system_prompt"})
# Structural members copied as they are wherever they occur (plus any "*_id" and "*_hash").
PROTECTED_KEYS = frozenset(
    {"id", "name", "model", "role", "type", "hash", "key_prefix", "finish_reason", "request_type",
     "tool_choice"}
)  # fmt: skip
# Envelope members copied as they are.
UNTOUCHED_MEMBERS = frozenset(
    {"oisp_version", "event_id", "event_type", "ts", "ts_mono", "source", "confidence",
     "related_events", "trace_context"}
)  # fmt: skip


class Redactor:
    """Applies one redaction mode, plus the configured custom patterns, to OISP events.

    Build one per (mode, custom patterns) and share it: it holds only compiled detectors.
    Invalid modes and patterns raise RedactionConfigError here, never per event.
    """

    def __init__(self, mode: str = "safe", custom_patterns: Iterable[Mapping[str, Any]] = ()) -> None:
        if mode not in MODES:
            raise RedactionConfigError(
                "unknown redaction mode %r (expected one of: %s)" % (mode, ", ".join(MODES))
            )
        self.mode = mode
        custom = compile_custom_patterns(custom_patterns)
        self._content = Scanner(DETECTORS + custom)
        self._secrets = Scanner([d for d in DETECTORS if d.secret])
        self._cmdlines = CmdlineCache()

    def redact_event(self, event: Mapping[str, Any]) -> Dict[str, Any]:
        """A redacted copy of `event`, with confidence.redaction_applied/redaction_profile set."""
        if self.mode == "full":
            out = copy.deepcopy(dict(event))
            _stamp(out, self.mode, False, Counter())
            return out
        run = _Run(self.mode == "minimal", self._content, self._secrets, self._cmdlines)
        out = {}
        for key, value in event.items():
            if key in UNTOUCHED_MEMBERS:
                out[key] = copy.deepcopy(value)
            elif key == "data" and isinstance(value, dict):
                out[key] = run.data(value)
            elif key in ("attrs", "ext") and isinstance(value, dict):
                out[key] = run.node(value, None)
            elif key == "process" and isinstance(value, dict):
                out[key] = run.process(value)
            else:
                out[key] = run.sweep(value)
        _stamp(out, self.mode, run.changed, run.counts)
        return out


# Shorter than this, an argument holds nothing a rule or detector could find (the shortest
# are "key=x", "-ua:b", "a@b.c"); the pass over the whole line still sees it with its neighbours.
_MIN_FINDABLE = 5


class CmdlineCache:
    """Redacted command lines by their text: every event of a process carries the same one, and
    a long hostile line (thousands of arguments) must cost its redaction once, not per event."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._entries: "OrderedDict[str, Tuple[str, Counter[str], bool]]" = OrderedDict()

    def get(self, cmdline: str) -> Optional[Tuple[str, "Counter[str]", bool]]:
        with self._lock:
            entry = self._entries.get(cmdline)
            if entry is not None:
                self._entries.move_to_end(cmdline)
            return entry

    def put(self, cmdline: str, entry: Tuple[str, "Counter[str]", bool]) -> None:
        with self._lock:
            self._entries[cmdline] = entry
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class _Run:
    """One redact_event call: walks the event, counts findings, notes whether anything changed."""

    def __init__(self, minimal: bool, content: Scanner, secrets: Scanner, cmdlines: CmdlineCache) -> None:
        self.minimal = minimal
        self.content_scanner = content
        self.secret_scanner = secrets
        self.cmdlines = cmdlines
        self.counts: Counter[str] = Counter()
        self.changed = False

    # --- strings --------------------------------------------------------------------------------

    def replace(self, scanner: Scanner, text: str) -> str:
        """Safe-mode replacement of what `scanner` finds in `text`."""
        new, counts = scanner.redact(text)
        if counts:
            self.counts.update(counts)
            self.changed = True
        return new

    def content(self, text: str, object_ok: bool) -> Any:
        """A content string, as the mode wants it."""
        if not text:
            return text
        if not self.minimal:
            return self.replace(self.content_scanner, text)
        counts = self.content_scanner.count(text)
        self.counts.update(counts)
        self.changed = True
        return _redacted_object(text, counts) if object_ok else _redacted_string(text)

    def whole(self, value: str) -> str:
        """A value that is secret by its name: replaced entirely, by the marker of the detector
        that recognises all of it, else by the named_secret marker."""
        if not value:
            return value
        self.changed = True
        findings = self.content_scanner.find(value)
        if len(findings) == 1 and findings[0].start == 0 and findings[0].end == len(value):
            self.counts[findings[0].detector.name] += 1
            return findings[0].detector.marker
        self.counts[NAMED_SECRET] += 1
        return marker_for(NAMED_SECRET)

    # --- outside content ------------------------------------------------------------------------

    def sweep(self, value: Any) -> Any:
        """A non-content value: credentials removed, everything else kept."""
        if isinstance(value, str):
            return self.replace(self.secret_scanner, self.named(value, URL_RULES)) if value else value
        if isinstance(value, dict):
            return {k: self.member(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.sweep(x) for x in value]
        return copy.deepcopy(value)

    def member(self, key: str, value: Any) -> Any:
        """One member of a non-content object."""
        if _protected(key):
            return copy.deepcopy(value)
        if isinstance(value, str) and is_secret_name(key):
            return self.whole(value)
        return self.sweep(value)

    # --- data -----------------------------------------------------------------------------------

    def data(self, data: Mapping[str, Any]) -> Dict[str, Any]:
        """The event payload; `args`/`env` at its top are a process.exec command line and env."""
        out = {}
        for key, value in data.items():
            if key == "args" and _strings(value):
                out[key] = self.argv(value)
            elif key == "env" and isinstance(value, dict):
                out[key] = self.env(value)
            else:
                out[key] = self.entry(key, value, None)
        return out

    def entry(self, key: str, value: Any, parent: Optional[str]) -> Any:
        """One member of an object inside `data`, routed by its key."""
        if _protected(key):
            return copy.deepcopy(value)
        if key in OPAQUE_KEYS and not isinstance(value, str):
            return self.opaque(value)
        if key in CONTENT_KEYS:
            object_ok = key in OBJECT_KEYS and parent != "delta"
            if isinstance(value, str):
                return self.content(value, object_ok)
            if isinstance(value, list):
                return [
                    self.content(x, object_ok) if isinstance(x, str) else self.node(x, key)
                    for x in value
                ]
            return self.node(value, key)
        if isinstance(value, str) and is_secret_name(key):
            return self.whole(value)
        return self.node(value, key)

    def node(self, value: Any, key: Optional[str]) -> Any:
        """A value inside `data` that is not content itself (it may contain some)."""
        if isinstance(value, dict):
            if "$redacted" in value:
                return self.existing(value)
            return {k: self.entry(k, v, key) for k, v in value.items()}
        if isinstance(value, list):
            return [self.node(x, key) for x in value]
        return self.sweep(value)

    def opaque(self, value: Any) -> Any:
        """Tool arguments and results, embedding input, ...: every string inside is content."""
        if isinstance(value, str):
            return self.content(value, True)
        if isinstance(value, dict):
            if "$redacted" in value:
                return self.existing(value)
            return {
                k: self.whole(v)
                if isinstance(v, str) and not self.minimal and is_secret_name(k)
                else self.opaque(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.opaque(x) for x in value]
        return copy.deepcopy(value)

    def existing(self, value: Mapping[str, Any]) -> Dict[str, Any]:
        """A redacted_content object already in the event: kept, but its preview is content."""
        out = copy.deepcopy(dict(value))
        inner = out.get("$redacted")
        if isinstance(inner, dict) and isinstance(inner.get("preview"), str):
            if self.minimal:
                del inner["preview"]
                self.changed = True
            else:
                inner["preview"] = self.replace(self.content_scanner, inner["preview"])
        return out

    # --- processes ------------------------------------------------------------------------------

    def process(self, proc: Mapping[str, Any]) -> Dict[str, Any]:
        """Envelope process context: command line, argv and environment carry secrets."""
        out = {}
        for key, value in proc.items():
            if key == "cmdline" and isinstance(value, str):
                out[key] = self.cmdline(value)
            elif key == "cmdline_args" and _strings(value):
                out[key] = self.argv(value)
            elif key == "env" and isinstance(value, dict):
                out[key] = self.env(value)
            elif key == "parent" and isinstance(value, dict):
                out[key] = self.process(value)
            else:
                out[key] = self.member(key, value)
        return out

    def argv(self, argv: List[str]) -> List[str]:
        """Safe: values of secret-named options and of credential names inside an argument
        (headers, URL parameters, JSON members) replaced whole, then the detectors.
        Minimal: the program, then one marker counting the arguments removed."""
        if self.minimal:
            if not argv:
                return []
            program = self.text(argv[0])
            if len(argv) == 1:
                return [program]
            for arg in argv[1:]:
                self.counts.update(self.content_scanner.count(arg))
            self.changed = True
            return [program, args_marker(len(argv) - 1)]
        secret = dict(secret_values(argv))
        out = []
        for i, arg in enumerate(argv):
            if i in secret:
                out.append(arg[: secret[i]] + self.whole(arg[secret[i] :]))
            elif len(arg) < _MIN_FINDABLE:
                out.append(arg)
            else:
                out.append(self.text(arg))
        return out

    def cmdline(self, cmdline: str) -> str:
        """A command line as one string (cached: see CmdlineCache)."""
        cached = self.cmdlines.get(cmdline)
        if cached is None:
            outer_counts, outer_changed = self.counts, self.changed
            self.counts, self.changed = Counter(), False
            cached = (self.redact_cmdline(cmdline), self.counts, self.changed)
            self.counts, self.changed = outer_counts, outer_changed
            self.cmdlines.put(cmdline, cached)
        text, counts, changed = cached
        self.counts.update(counts)
        self.changed = self.changed or changed
        return text

    def redact_cmdline(self, cmdline: str) -> str:
        """Redacted argument by argument (split as events/context.py joined it, else on
        whitespace), rejoined, then once more as a whole, so that a header, its scheme and its
        token are seen together even across arguments."""
        argv = split_cmdline(cmdline)
        if self.minimal:
            words = argv if argv is not None else [w for w in split_words(cmdline)[0::2] if w]
            if not words:
                return cmdline
            kept = self.argv(words)
            return " ".join([join_argv(kept[:1])] + kept[1:])
        if argv is not None:
            joined = join_argv(self.argv(argv))
        else:
            parts = split_words(cmdline)
            parts[0::2] = self.argv(parts[0::2])
            joined = "".join(parts)
        return self.text(joined)

    def text(self, value: str) -> str:
        """Free text outside content (an argument, a command line, an environment value):
        values after credential names replaced whole, then every detector."""
        value = self.named(value, RULES)
        return self.replace(self.content_scanner, value) if value else value

    def named(self, value: str, rules: Sequence[Rule]) -> str:
        """`value` with what `rules` find after credential names replaced whole."""
        spans = named_value_spans(value, rules)
        if not spans:
            return value
        parts, pos = [], 0
        for start, end in spans:
            parts.append(value[pos:start])
            parts.append(self.whole(value[start:end]))
            pos = end
        parts.append(value[pos:])
        return "".join(parts)

    def env(self, env: Mapping[str, Any]) -> Dict[str, Any]:
        """Environment variables: names are kept; values of credential names replaced whole,
        others as free text (an HTTP_PROXY with a password, CURL_OPTS with a header)."""
        out = {}
        for name, value in env.items():
            if not isinstance(value, str) or not value:
                out[name] = copy.deepcopy(value)
            elif self.minimal:
                self.counts.update(self.content_scanner.count(value))
                self.changed = True
                out[name] = _redacted_string(value)
            elif is_credential_name(name):
                out[name] = self.whole(value)
            else:
                out[name] = self.text(value)
        return out


def _protected(key: str) -> bool:
    return key in PROTECTED_KEYS or key.endswith(("_id", "_hash"))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def _findings(counts: Mapping[str, int]) -> List[Dict[str, Any]]:
    return [{"type": name, "count": n} for name, n in sorted(counts.items())]


def _redacted_object(text: str, counts: Mapping[str, int]) -> Dict[str, Any]:
    """OISP redacted_content for minimal mode: length and hash, plus findings if any."""
    inner: Dict[str, Any] = {
        "reason": "policy",
        "redaction_profile": "minimal",
        "original_length": len(text),
        "hash": short_sha256(text),
    }
    if counts:
        inner["findings"] = _findings(counts)
    return {"$redacted": inner}


def _redacted_string(text: str) -> str:
    """The same facts as `_redacted_object`, where the schema allows only a string."""
    return "[REDACTED:policy original_length=%d hash=%s]" % (len(text), short_sha256(text))


def _stamp(event: Dict[str, Any], mode: str, applied: bool, counts: Mapping[str, int]) -> None:
    """Record the mode and outcome in confidence, and the findings in attrs.redaction."""
    confidence = event.get("confidence")
    confidence = dict(confidence) if isinstance(confidence, dict) else {}
    confidence["redaction_applied"] = applied
    confidence["redaction_profile"] = mode
    event["confidence"] = confidence
    if counts:
        attrs = event.get("attrs")
        attrs = dict(attrs) if isinstance(attrs, dict) else {}
        redaction = attrs.get("redaction")
        redaction = dict(redaction) if isinstance(redaction, dict) else {}
        redaction["findings"] = _findings(counts)
        attrs["redaction"] = redaction
        event["attrs"] = attrs
