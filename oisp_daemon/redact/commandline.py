"""Where a command line carries a secret by name: `--api-key X`, `--token=X`, `API_KEY=X cmd`.

Only positions are computed here; the engine decides what replaces them. Values whose format a
detector knows (`--api-key sk-...`) are found by the detectors anyway; this catches the rest.
"""
from __future__ import annotations

import re
from typing import List, Sequence, Tuple

from .names import is_secret_name

_ASSIGNMENT = re.compile(r"(-{0,2}[A-Za-z_][A-Za-z0-9_.\-]*)=")
_OPTION = re.compile(r"--?[A-Za-z][A-Za-z0-9_.\-]*")
_WHITESPACE = re.compile(r"(\s+)")


def secret_values(argv: Sequence[str]) -> List[Tuple[int, int]]:
    """(index, offset) of each argument holding a secret, the value starting at `offset`.

    `--password=x` and `TOKEN=x` give (i, offset after "="); `--password x` gives (i + 1, 0)
    unless the next argument is itself an option.
    """
    found = []
    for i, arg in enumerate(argv):
        if found and found[-1][0] == i:
            continue  # already the value of the option before it
        m = _ASSIGNMENT.match(arg)
        if m and is_secret_name(m.group(1)) and m.end() < len(arg):
            found.append((i, m.end()))
        elif (
            _OPTION.fullmatch(arg)
            and is_secret_name(arg)
            and i + 1 < len(argv)
            and argv[i + 1]
            and not argv[i + 1].startswith("-")
        ):
            found.append((i + 1, 0))
    return found


def split_words(cmdline: str) -> List[str]:
    """Alternating words and whitespace runs (words at even indexes); "".join() restores it."""
    return _WHITESPACE.split(cmdline)


def args_marker(count: int) -> str:
    """What replaces the arguments of a command line in minimal mode."""
    return "[REDACTED:%d args]" % count
