"""How a program's output is compared with the expected one. The parent does this, outside the
sandbox; the expected outputs never enter it.

stdout (LiveCodeBench's rule for stdin problems): both texts are stripped and split into lines,
each line stripped; equal line counts are required; two lines match if they are equal, or if both
split on whitespace into the same number of tokens that all parse as decimals and are equal as
decimals ("1.0" matches "1", "2.50" matches "2.5"; no tolerance beyond that).

values (call-based problems): the program's result arrives as JSON (sandbox.driver.encode: only
plain values cross) and matches if equal to the expected value, tuples read as lists (JSON test
data has no tuples).
"""
from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from sandbox.driver import decode


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except InvalidOperation:
        return None


def same_stdout(got: str, expected: str) -> bool:
    a, b = _lines(got), _lines(expected)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        dx, dy = _decimals(x), _decimals(y)
        if dx is None or dy is None or len(dx) != len(dy) or any(not (p == q) for p, q in zip(dx, dy)):
            return False
    return True


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def read_value(text: str) -> tuple[bool, Any]:
    """(ok, value) of a call's result (`Result.out`); not ok if it is not a well-formed encoding."""
    try:
        return True, decode(json.loads(text))
    except (ValueError, TypeError, AttributeError, MemoryError, RecursionError):
        return False, None


def same_value(got_repr: str, expected: Any) -> bool:
    ok, got = read_value(got_repr)
    return ok and _plain(got) == _plain(expected)
