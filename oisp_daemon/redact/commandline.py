"""Where a command line (or an environment value) carries a secret: by position or by a name.

Two views of one command line are redacted, because each sees what the other cannot:
- argument by argument (`argv`), where an argument's extent is known: `--password 'a b c'`,
  `-H 'Cookie: a=1; b=2'`, `-u user:pass`;
- the whole line as one string, where a header, its scheme and its token stand together even when
  they were passed as separate arguments (`-H Authorization: Bearer <key>` unquoted).

`join_argv` writes an argv as one string that `split_cmdline` reads back exactly, so the event's
`process.cmdline` keeps its argument boundaries. Only positions are computed here; the engine
decides what replaces them. Every regex is tried only at the start of a word or after a literal
delimiter and its repetitions are bounded or delimited, so each stays linear-time on
multi-megabyte input (tests/unit/test_redact_linear.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Pattern, Sequence, Tuple

from .names import is_credential_name, is_secret_name

_ASSIGNMENT = re.compile(r"(-{0,2}[A-Za-z_][A-Za-z0-9_.\-]*)=")
_OPTION = re.compile(r"--?[A-Za-z][A-Za-z0-9_.\-]*")
_WHITESPACE = re.compile(r"(\s+)")

# Options whose next argument is `user:password` (curl, wget, httpie, ...): the part after the
# first colon is secret. Options whose next argument is a cookie string: all of it is.
USER_OPTIONS = frozenset({"-u", "-U", "--user", "--proxy-user", "--auth", "-a"})
COOKIE_OPTIONS = frozenset({"-b", "--cookie"})

MARKER_START = "[REDACTED"  # values already replaced are left alone (and not counted twice)


def secret_values(argv: Sequence[str]) -> List[Tuple[int, int]]:
    """(index, offset) of each argument holding a secret, the value starting at `offset`.

    `--password=x` and `TOKEN=x` give (i, offset after "="); `--password x` gives (i + 1, 0)
    unless the next argument is itself an option; `-u user:pass` gives (i + 1, offset after ":").
    """
    found: List[Tuple[int, int]] = []
    for i, arg in enumerate(argv):
        if found and found[-1][0] == i:
            continue  # already the value of the option before it
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        m = _ASSIGNMENT.match(arg)
        if m and is_credential_name(m.group(1)) and m.end() < len(arg):
            found.append((i, m.end()))
        elif arg in USER_OPTIONS and ":" in nxt:
            found.append((i + 1, nxt.index(":") + 1))
        elif arg in COOKIE_OPTIONS and nxt:
            found.append((i + 1, 0))
        elif _OPTION.fullmatch(arg) and is_credential_name(arg) and nxt and not nxt.startswith("-"):
            found.append((i + 1, 0))
    return found


def split_words(cmdline: str) -> List[str]:
    """Alternating words and whitespace runs (words at even indexes); "".join() restores it."""
    return _WHITESPACE.split(cmdline)


def args_marker(count: int) -> str:
    """What replaces the arguments of a command line in minimal mode."""
    return "[REDACTED:%d args]" % count


# --- one string for an argv, and back ----------------------------------------------------------

_NEEDS_QUOTES = re.compile(r"[\s'\"\\]")
# A shell-like word: single-quoted, double-quoted (with \" and \\ escapes), an escaped character,
# or a plain run; whitespace separates words.
_LEXEME = re.compile(r"""(\s+)|'([^']*)'|"((?:[^"\\]|\\[\s\S])*)"|\\([\s\S])|([^\s'"\\]+)""")
_DQ_ESCAPE = re.compile(r"\\([\"\\])")


def join_argv(argv: Sequence[str]) -> str:
    """argv as one line: arguments that hold whitespace, quotes or backslashes (or nothing) are
    single-quoted, shell style, so `split_cmdline` gives back exactly `argv`."""
    out = []
    for arg in argv:
        if arg and not _NEEDS_QUOTES.search(arg):
            out.append(arg)
        else:
            out.append("'" + arg.replace("'", "'\"'\"'") + "'")
    return " ".join(out)


def split_cmdline(cmdline: str) -> Optional[List[str]]:
    """The arguments of a line written by `join_argv` (or by a POSIX shell user, without
    expansions); None when its quotes do not balance, so the caller falls back to words."""
    words: List[str] = []
    current: List[str] = []
    in_word = False
    pos = 0
    while pos < len(cmdline):
        m = _LEXEME.match(cmdline, pos)
        if m is None:
            return None  # an unbalanced quote or a trailing backslash
        pos = m.end()
        space, single, double, escaped, plain = m.groups()
        if space is not None:
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
            continue
        in_word = True
        if single is not None:
            current.append(single)
        elif double is not None:
            current.append(_DQ_ESCAPE.sub(r"\1", double))
        else:
            current.append(escaped if escaped is not None else plain)
    if in_word:
        words.append("".join(current))
    return words


# --- values after a name, in free text ---------------------------------------------------------

# A value as a shell or JSON writes it: quoted (possibly cut off before its closing quote) or bare.
_VALUE = r"""'[^']*'?|"(?:[^"\\]|\\[\s\S])*"?|[^\s'"]+"""
# A cookie list also continues across "; " when its quotes were lost: `Cookie: a=1; b=2`.
_COOKIE_VALUE = r"""'[^']*'?|"(?:[^"\\]|\\[\s\S])*"?|[^\s'";]+(?:;[ \t]*[^\s'";]+)*"""
_WORD_START = r"(?<![^\s'\"])"
_SCHEMES = r"(?:(?i:bearer|basic|token|digest|apikey|api-key|ssws|key)[ \t]+)?"


@dataclass(frozen=True)
class Rule:
    """A credential written after a name or keyword.

    `prefix` finds where a value starts (its group "name", when it has one, must satisfy
    `named`); `value` is matched right there and is the secret. Quotes around a value are kept.
    """

    kind: str
    prefix: Pattern[str]
    value: Pattern[str]
    named: Optional[Callable[[str], bool]] = None
    hint: Optional[Pattern[str]] = None


RULES: Tuple[Rule, ...] = (
    # Any header, YAML or "name: value" pair whose name is a credential: Authorization (with or
    # without its scheme), api-key, x-api-key, Ocp-Apim-Subscription-Key, Cookie, X-Auth-Token...
    Rule(
        "header",
        re.compile(r"(?<![\w.\-])(?P<name>[A-Za-z][\w.\-]{0,63})[ \t]{0,8}:[ \t]*" + _SCHEMES),
        re.compile(_COOKIE_VALUE),
        is_credential_name,
        re.compile(":"),
    ),
    # "Bearer <token>" wherever it stands, whatever the token looks like.
    Rule("bearer", re.compile(r"(?<![A-Za-z0-9])(?i:bearer)[ \t]+"), re.compile(r"[^\s'\"]+")),
    # URL query and form parameters: ?api_key=, &token=, ?key=, &sig=, ;auth=.
    Rule(
        "query",
        re.compile(r"[?&;](?P<name>[\w.\-\[\]%]{1,64})="),
        re.compile(r"[^&#\s'\"]+"),
        is_credential_name,
        re.compile("="),
    ),
    # Members of inline JSON or Python literals: "api_key": "...", 'token': '...', \"secret\": 1.
    Rule(
        "json",
        re.compile(r"""(?P<q>\\?["'])(?P<name>[^"'\\\s]{1,64})(?P=q)[ \t]*:[ \t]*"""),
        re.compile(r"""\\"(?:[^\\]|\\[^"])*(?:\\")?|'[^']*'?|"(?:[^"\\]|\\[\s\S])*"?|[^\s,}\]'"]+"""),
        is_secret_name,
        re.compile(":"),
    ),
    # Options: --api-key X, --token=X, --oauth2-bearer X (not when X is the next option).
    Rule(
        "option",
        re.compile(_WORD_START + r"(?P<name>--?[A-Za-z][\w.\-]{0,63})(?:=|[ \t]+(?!-))"),
        re.compile(_VALUE),
        is_credential_name,
    ),
    # -u user:password, --user=user:password, -uuser:password: the part after the colon.
    Rule(
        "user",
        re.compile(_WORD_START + r"(?:-u|-U|--user|--proxy-user)(?:=|[ \t]*)[^\s:'\"]{0,256}:"),
        re.compile(r"[^\s'\"]+"),
    ),
    # curl's -b/--cookie: the whole cookie string.
    Rule("cookie", re.compile(_WORD_START + r"(?:-b|--cookie)(?:=|[ \t]+)"), re.compile(_COOKIE_VALUE)),
    # Environment-style assignments: OPENAI_API_KEY=..., AZURE_OPENAI_KEY='...'.
    Rule(
        "assignment",
        re.compile(_WORD_START + r"(?P<name>[A-Za-z_][\w.\-]{0,127})="),
        re.compile(_VALUE),
        is_credential_name,
        re.compile("="),
    ),
    # Passwords in URLs: scheme://user:password@host.
    Rule(
        "userinfo",
        re.compile(r"(?<![\w+.\-])[A-Za-z][\w+.\-]{0,31}://[^\s/@:'\"]{0,256}:"),
        re.compile(r"[^\s/@'\"]+(?=@)"),
        hint=re.compile("@"),
    ),
)


# The rules for URLs, which are safe to apply to any string outside content (attrs, ext, ...):
# `?token=` and `user:password@` mean a credential wherever a URL stands.
URL_RULES: Tuple[Rule, ...] = tuple(r for r in RULES if r.kind in ("query", "userinfo"))


def _unquoted(text: str, start: int, end: int) -> Tuple[int, int]:
    """The span inside a value's quotes (an unterminated quote is dropped from the start only)."""
    for quote in ('\\"', '"', "'"):
        if text.startswith(quote, start):
            start += len(quote)
            if end - start >= len(quote) and text.startswith(quote, end - len(quote)):
                end -= len(quote)
            break
    return start, end


def named_value_spans(text: str, rules: Sequence[Rule] = RULES) -> List[Tuple[int, int]]:
    """Sorted, non-overlapping (start, end) of every value the rules say is a credential.

    A value that is already a redaction marker is skipped, so a second pass over redacted text
    finds nothing new.
    """
    spans: List[Tuple[int, int]] = []
    for rule in rules:
        if rule.hint is not None and not rule.hint.search(text):
            continue
        last_end = 0
        for m in rule.prefix.finditer(text):
            if m.start() < last_end:
                continue  # inside a value this rule already took
            if rule.named is not None and not rule.named(m.group("name")):
                continue
            v = rule.value.match(text, m.end())
            if v is None or v.end() == v.start():
                continue
            start, end = _unquoted(text, v.start(), v.end())
            last_end = v.end()
            if start < end and not text.startswith(MARKER_START, start):
                spans.append((start, end))
    return _merged(spans)


def _merged(spans: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start < out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
