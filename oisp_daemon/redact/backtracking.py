"""Static check of a regex for the shapes that make a backtracking matcher take exponential time.

Custom redaction patterns come from the configuration and run on every captured prompt; a pattern
like `(a+)+$` makes Python's `re` try 2^n ways on "aaaa...!" while it holds the GIL, which froze
the whole daemon. This refuses, at check-config and reload, the shapes that cause that:

- a quantifier over something that itself holds a quantifier (`(a+)+`, `(\\w+\\s?)*`,
  `(a{1,9}){1,99}`), unless both are small and bounded (`(\\d{3}-){2}`);
- a quantifier over an alternation whose branches can start with the same character or match
  nothing (`(a|ab)*`, `(\\w|\\d)+`, `(x|)+`), so that one text splits into branches many ways.

It reads the parse tree of the stdlib parser, so it judges exactly what `re` would run. It cannot
catch every slow pattern (polynomial ones like `.*.*.*=` pass): custom patterns also run in a
bounded matcher (custom.py).
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

try:  # Python 3.11+
    from re import _constants as sre_constants
    from re import _parser as sre_parse
except ImportError:  # Python 3.9, 3.10
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

MAXREPEAT = sre_constants.MAXREPEAT
_REPEATS = tuple(
    getattr(sre_constants, name) for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") if hasattr(sre_constants, name)
)
_POSSESSIVE = getattr(sre_constants, "POSSESSIVE_REPEAT", None)
_ATOMIC = getattr(sre_constants, "ATOMIC_GROUP", None)
# Two bounded quantifiers nest harmlessly while the product of their counts stays this small.
_SMALL_PRODUCT = 64
_TOP = 0x10FFFF
_ALL = [(0, _TOP)]

Ranges = List[Tuple[int, int]]

_CATEGORIES = {
    sre_constants.CATEGORY_DIGIT: [(48, 57), (0x80, _TOP)],
    sre_constants.CATEGORY_WORD: [(48, 57), (65, 90), (95, 95), (97, 122), (0x80, _TOP)],
    sre_constants.CATEGORY_SPACE: [(9, 13), (28, 32), (0x80, _TOP)],
}


def backtracking_problem(pattern: str) -> Optional[str]:
    """Why `pattern` can backtrack exponentially, or None. The pattern must compile."""
    return _walk(sre_parse.parse(pattern))


def _walk(seq: Any) -> Optional[str]:
    for op, av in seq:
        if op in _REPEATS:
            low, high, body = av
            if high > 1 and op != _POSSESSIVE:
                inner = _largest_repeat(body)
                if inner and (high == MAXREPEAT or inner == MAXREPEAT or high * inner > _SMALL_PRODUCT):
                    return "nested quantifiers (a repeated group that itself repeats, like (a+)+)"
                if _ambiguous_branch(body):
                    return ("a repeated alternation whose branches can match the same text "
                            "(like (a|ab)* or (x|x?)+)")
            problem = _walk(body)
        elif op == sre_constants.SUBPATTERN:
            problem = _walk(av[-1])
        elif op == sre_constants.BRANCH:
            problem = next((p for p in map(_walk, av[1]) if p), None)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT) or op == _ATOMIC:
            problem = _walk(av[-1] if isinstance(av, tuple) else av)
        elif op == sre_constants.GROUPREF_EXISTS:
            problem = _walk(av[1]) or (_walk(av[2]) if av[2] is not None else None)
        else:
            problem = None
        if problem:
            return problem
    return None


def _children(op: Any, av: Any) -> List[Any]:
    if op in _REPEATS:
        return [av[2]]
    if op == sre_constants.SUBPATTERN:
        return [av[-1]]
    if op == sre_constants.BRANCH:
        return list(av[1])
    if op == sre_constants.GROUPREF_EXISTS:
        return [x for x in av[1:] if x is not None]
    if op == _ATOMIC:
        return [av]
    return []  # lookarounds match nothing themselves


def _largest_repeat(seq: Any) -> int:
    """The largest upper count of any non-possessive quantifier inside `seq` (0 if none)."""
    best = 0
    for op, av in seq:
        if op in _REPEATS and op != _POSSESSIVE and av[1] > 1:
            best = max(best, av[1])
        for child in _children(op, av):
            best = max(best, _largest_repeat(child))
    return best


def _ambiguous_branch(seq: Any) -> bool:
    """An alternation (outside any inner quantifier) with overlapping or empty branches."""
    for op, av in seq:
        if op == sre_constants.BRANCH:
            firsts = []
            for branch in av[1]:
                chars, nullable = _first(branch)
                if nullable:
                    return True
                firsts.append(chars)
            for i, a in enumerate(firsts):
                if any(_overlap(a, b) for b in firsts[i + 1 :]):
                    return True
        if op not in _REPEATS and any(_ambiguous_branch(c) for c in _children(op, av)):
            return True
    return False


def _first(seq: Any) -> Tuple[Ranges, bool]:
    """(characters a match of `seq` can start with, whether it can match the empty string)."""
    chars: Ranges = []
    for op, av in seq:
        item, nullable = _first_item(op, av)
        chars += item
        if not nullable:
            return chars, False
    return chars, True


def _first_item(op: Any, av: Any) -> Tuple[Ranges, bool]:
    if op == sre_constants.LITERAL:
        return [(av, av)], False
    if op == sre_constants.IN:
        return _set_ranges(av), False
    if op in _REPEATS:
        chars, nullable = _first(av[2])
        return chars, nullable or av[0] == 0
    if op == sre_constants.SUBPATTERN:
        return _first(av[-1])
    if op == _ATOMIC:
        return _first(av)
    if op == sre_constants.BRANCH:
        chars, nullable = [], False
        for branch in av[1]:
            c, n = _first(branch)
            chars += c
            nullable = nullable or n
        return chars, nullable
    if op in (sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return [], True
    return list(_ALL), False  # ANY, NOT_LITERAL, group references, ...


def _set_ranges(items: Any) -> Ranges:
    out: Ranges = []
    for op, av in items:
        if op == sre_constants.LITERAL:
            out.append((av, av))
        elif op == sre_constants.RANGE:
            out.append(av)
        elif op == sre_constants.CATEGORY and av in _CATEGORIES:
            out += _CATEGORIES[av]
        else:  # NEGATE, negated categories: assume anything
            return list(_ALL)
    return out


def _overlap(a: Ranges, b: Ranges) -> bool:
    return any(lo1 <= hi2 and lo2 <= hi1 for lo1, hi1 in a for lo2, hi2 in b)
