"""Text forms shared by the roles: the instruction line, Python programs in a reply, and the grid
tasks' rows, move lists and cells, with their parsers.

Parsers never raise: any text gives a `Parsed`, and a failure carries an error that says what was
expected (tests/roles/test_parsers.py runs them on arbitrary text).
"""
from __future__ import annotations

import ast
import random
import re
from typing import Callable

from roles.base import Parsed
from sandbox import parse_python

Cell = tuple[int, int]

_WORDS = {"u": "U", "up": "U", "d": "D", "down": "D", "l": "L", "left": "L", "r": "R", "right": "R"}
LABEL = re.compile(r"^\s*[A-Za-z ]{0,20}:\s*")  # a leading "plan:" style label on an answer line
_INDEX = re.compile(r"^\d{1,3}(?=[A-Za-z])")  # a numbered item's index: "12R" -> "R"
CODE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def head(instructions: bool, text: str) -> str:
    """A prompt's first line, the task statement for chat models (`instructions`), or nothing."""
    return text + "\n" if instructions else ""


def parse_program(text: str, fn: str | None = "f", prints: bool = False) -> Parsed:
    """A Python program (defining `fn`, unless None; calling print if `prints`, as a tool program
    that prints its answer must): the last ```python block, or the text itself. Parsed, never run."""
    blocks = CODE.findall(text)
    code = blocks[-1] if blocks else text
    try:
        tree = parse_python(code)
    except Exception as e:  # SyntaxError, or a parser running out of stack on hostile nesting
        return Parsed(False, error=f"not Python: {type(e).__name__}")
    if fn is not None and not any(isinstance(n, ast.FunctionDef) and n.name == fn for n in tree.body):
        return Parsed(False, error=f"no function {fn}")
    if prints and not any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print" for n in ast.walk(tree)):
        return Parsed(False, error="no print(): a tool program prints its answer")
    return Parsed(True, code)


def render_rows(n: int, char: Callable[[int, int], str], coords: bool = False) -> str:
    """n rows of n cells; with coords, a header of column numbers and each row led by its number
    (digits mod 10), so reading a cell's coordinates is a lookup rather than a count."""
    rows = [" " + "".join(str(c % 10) for c in range(n))] if coords else []
    for r in range(n):
        cells = "".join(char(r, c) for c in range(n))
        rows.append(f"{r % 10}{cells}" if coords else cells)
    return "\n".join(rows)


def last_line(text: str) -> str:
    """The last non-empty line of `text` with any leading label removed ("" if none)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return LABEL.sub("", lines[-1]) if lines else ""


def format_moves(moves, numbered: bool = False) -> str:
    """"R R D", or numbered "1R 2R 3D": each move led by its index, so copying a move list is a
    lookup (the move after "3" in the source) rather than counting along runs of equal moves."""
    return " ".join(f"{i}{m}" for i, m in enumerate(moves, 1)) if numbered else " ".join(moves)


def parse_moves(text: str, max_moves: int = 200) -> Parsed:
    """Moves from the last bracketed list in `text`, else from its last non-empty line.
    Items are U/D/L/R or up/down/left/right (any case), separated by spaces, commas or quotes,
    each optionally led by its index ("1R 2D"); the indices are not checked."""
    try:
        lists = re.findall(r"\[([^\[\]]*)\]", text)
        body = lists[-1] if lists else last_line(text)
        items = [w for w in re.split(r"[\s,\"'`]+", body) if w]
        if not items:
            return Parsed(False, error="no moves found")
        moves = [_WORDS.get(_INDEX.sub("", w).lower()) for w in items]
        if None in moves:
            bad = items[moves.index(None)]
            return Parsed(False, error=f"not a move: {bad[:20]!r} (allowed U D L R)")
        if len(moves) > max_moves:
            return Parsed(False, error=f"{len(moves)} moves, more than the limit {max_moves}")
        return Parsed(True, tuple(moves))
    except Exception as e:  # a parser must never take the run down; count it as a failure
        return Parsed(False, error=f"parser error: {type(e).__name__}")


def parse_cell(text: str) -> Parsed:
    """A cell "row col" from the last line: exactly two integers."""
    nums = re.findall(r"-?\d+", text.strip().splitlines()[-1] if text.strip() else "")
    if len(nums) != 2:
        return Parsed(False, error="expected two integers 'row col'")
    if any(len(n) > 7 for n in nums):  # int() refuses > 4300 digits; never raise
        return Parsed(False, error="cell out of range")
    r, c = int(nums[0]), int(nums[1])
    if abs(r) > 10_000 or abs(c) > 10_000:
        return Parsed(False, error="cell out of range")
    return Parsed(True, (r, c))


def format_cell(cell: Cell) -> str:
    return f"{cell[0]} {cell[1]}"


def manhattan_walk(src: Cell, dst: Cell) -> list[str]:
    """Vertical moves then horizontal ones from src to dst, walls ignored."""
    dr, dc = dst[0] - src[0], dst[1] - src[1]
    return ["D" if dr > 0 else "U"] * abs(dr) + ["R" if dc > 0 else "L"] * abs(dc)


def random_moves(rng: random.Random) -> list[str]:
    """A random short move list (1 to 3 moves): the noise action of the move-list tasks."""
    return [rng.choice("UDLR") for _ in range(rng.randint(1, 3))]
