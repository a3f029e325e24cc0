"""Reading the data files of the file-backed tasks (envs/code_data.py, envs/math_data.py) so that a
file that does not hold what its loader expects is an error naming the setting, the file, the row
(a `.jsonl` line, a `.parquet` row index) and the field, and saying what was expected.

Rows that lack what a problem needs (a statement, an answer, usable tests) are skipped, as public
dumps hold such rows; a `Tally` counts them by reason, with the files and rows read, so that a
split left empty (or too small for the run) says where its problems went.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable


class DataError(ValueError):
    """A data file that does not hold what its loader expects."""


class FieldError(ValueError):
    """One field of a row is not what the loader expects; `read` adds the file and the row."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"field {name!r} {problem}")


class Skip(Exception):
    """A row that holds no usable problem (public dumps have such rows): skipped and counted."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Row:
    where: str   # "<file> line <n>" or "<file> row index <i>"
    data: dict


@dataclass
class Source:
    setting: str                # the data_dir setting, e.g. env.test_sets.aime24.data_dir
    data_dir: str
    files: dict[str, int] = field(default_factory=dict)  # path: rows read

    def describe(self) -> str:
        names = [f"{os.path.relpath(f, self.data_dir)}: {_rows(n)}" for f, n in self.files.items()]
        if len(names) > 4:
            names = names[:3] + [f"{len(names) - 3} more files"]
        return f"{self.setting}={self.data_dir} ({', '.join(names) or 'no file read'})"


@dataclass
class Tally:
    """What the loads of one split read, and what they skipped, by reason."""

    sources: list[Source] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def source(self, setting: str, data_dir: str) -> Source:
        self.sources.append(Source(setting, data_dir))
        return self.sources[-1]

    def where(self) -> str:
        return "; ".join(s.describe() for s in self.sources)

    def describe(self) -> str:
        rows = sum(n for s in self.sources for n in s.files.values())
        why = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        dropped = sum(self.skipped.values())
        return f"read {_rows(rows)} from {self.where()}; dropped {dropped}{': ' + why if why else ''}"


def _rows(n: int) -> str:
    return f"{n} row{'' if n == 1 else 's'}"


def error_name(e: Exception) -> str:
    """`binascii.Error`, not a bare `Error`."""
    kind = type(e)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def need_dir(data_dir: str, setting: str, see: str) -> str:
    if not data_dir or not os.path.isdir(data_dir):
        raise FileNotFoundError(f"{setting} {data_dir!r} is not a directory: it must hold the data set as a hub "
                                f"download lays it out (see {see})")
    return data_dir


def need_file(path: str, setting: str, see: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {setting} must hold the data set as a hub download lays it out "
                                f"(see {see})")
    return path


def read_rows(path: str, expects: str, source: Source | None = None) -> list[Row]:
    """The rows of one `.jsonl` or `.parquet` file, each with where it was read; `expects` says
    what a row should be (for the error on one that is not a JSON object)."""
    rows = []
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's errors differ by version and damage; any means the same here
            raise DataError(f"{path}: not a readable parquet file ({error_name(e)}: {e})") from e
        rows = [Row(f"{path} row index {i}", r) for i, r in enumerate(table)]
    else:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path} line {n}: not valid JSON ({e.msg} at column {e.colno}); each line "
                                    f"must be one JSON object {expects}") from None
                if not isinstance(r, dict):
                    raise DataError(f"{path} line {n}: a JSON {type(r).__name__}, expected a JSON object {expects}")
                rows.append(Row(f"{path} line {n}", r))
    if source is not None:
        source.files[path] = len(rows)
    return rows


def parse(rows: list[Row], problem: Callable[[dict], Any], tally: Tally | None = None) -> list:
    """`problem(row)` of every row: a skipped row is counted, a bad field names its file and row."""
    out = []
    for row in rows:
        try:
            out.append(problem(row.data))
        except Skip as s:
            if tally is not None:
                tally.skipped[s.reason] += 1
        except FieldError as e:
            raise DataError(f"{row.where}: {e}") from None
    return out


def required(row: dict, name: str, what: str):
    """A field that every row of the source has; its absence is an error, not a skip."""
    v = row.get(name)
    if v is None or v == "":
        raise FieldError(name, f"is missing; expected {what}")
    return v


def json_field(row: dict, name: str, what: str, kind: type | tuple[type, ...]):
    """A field holding JSON text of `kind` (its absence: an error)."""
    text = required(row, name, what)
    try:
        v = json.loads(text)
    except (TypeError, ValueError) as e:
        raise FieldError(name, f"is not valid JSON ({e}); expected {what}") from None
    if not isinstance(v, kind):
        raise FieldError(name, f"holds a JSON {type(v).__name__}; expected {what}")
    return v
