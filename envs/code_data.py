"""Real code benchmarks read from local files into one schema, `CodeProblem`. Nothing is fetched at
run time: `data_dir` is the layout a hub download leaves (`huggingface-cli download <repo>
--repo-type dataset --local-dir <dir>`):

- APPS (codeparrot/apps): `train.jsonl`, `test.jsonl`; `input_output` is JSON {"inputs", "outputs",
  optional "fn_name"} (call-based problems: each input a list of arguments, each output the value or,
  an APPS quirk, a one-element list holding it); `solutions` a JSON list of Python programs.
- CodeContests (deepmind/code_contests): `data/{train,valid,test}-*.parquet`; public, private and
  generated tests ({"input": [...], "output": [...]}) and `solutions` ({"language", "solution"},
  language 3 = Python 3); all stdin.
- LiveCodeBench code_generation_lite (livecodebench/code_generation_lite): `test.jsonl`,
  `test2.jsonl`, ... `test6.jsonl` (release v6 = all six); `public_test_cases` JSON,
  `private_test_cases` JSON or base64(zlib(pickle(JSON string))), read with an unpickler that
  accepts only plain containers and strings; `testtype` stdin or functional (`metadata.func_name`,
  a method of the starter code's `class Solution`); `contest_date` ISO, filtered to a window.

Public tests are the statement's examples (a role may see them); private tests are hidden and judge
success. Splits: APPS train/test, CodeContests train/valid/test, LiveCodeBench test only; where a
source has no validation split (APPS) it is carved from training problems by a hash of their
statement (so copies of a problem fall on one side).
Training problems are deduplicated against every evaluation set by a hash of the normalised
statement (`statement_key`).
"""
from __future__ import annotations

import base64
import glob
import hashlib
import io
import json
import os
import pickle
import re
import zlib
from dataclasses import dataclass
from datetime import date

SOURCES = ("apps", "codecontests", "livecodebench")
PYTHON3 = 3  # CodeContests' language id of Python 3
VAL_PERCENT = 5  # share of APPS training problems carved out for validation


@dataclass(frozen=True)
class CodeProblem:
    id: str
    source: str
    statement: str
    mode: str                                  # "stdin" | "call"
    fn: str | None                             # call mode: the function (or "Solution.method")
    public: tuple[tuple[object, object], ...]  # (input, output) shown in the statement
    private: tuple[tuple[object, object], ...]  # hidden tests: judge success, never shown
    reference: str | None = None               # a Python solution, where the source has one
    starter: str = ""
    contest_date: str = ""

    @property
    def key(self) -> str:
        return statement_key(self.statement)


def statement_key(text: str) -> str:
    """sha256 of the statement lower-cased with every run of non-alphanumerics made one space."""
    return hashlib.sha256(re.sub(r"[^a-z0-9]+", " ", text.lower()).strip().encode()).hexdigest()


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles strings, numbers and plain containers only: any class or function is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only plain values are allowed")


def decode_private(field: str) -> list[dict]:
    """LiveCodeBench's private tests: JSON, or base64(zlib(pickle(JSON string)))."""
    try:
        return json.loads(field)
    except ValueError:
        raw = _PlainUnpickler(io.BytesIO(zlib.decompress(base64.b64decode(field.encode())))).load()
        if not isinstance(raw, (str, bytes)):
            raise ValueError(f"private tests unpickled to {type(raw).__name__}, expected a JSON string")
        return json.loads(raw)


def _jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _need(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: env.data_dir must hold the dataset as a hub download lays it out "
                                "(see envs/code_data.py)")
    return path


def _text(x) -> str:
    return "\n".join(x) if isinstance(x, list) else str(x)


def apps_problem(row: dict) -> CodeProblem | None:
    """One APPS row; None where it has no usable tests."""
    try:
        io_ = json.loads(row["input_output"]) if row.get("input_output") else {}
    except ValueError:
        return None
    ins, outs = io_.get("inputs") or [], io_.get("outputs") or []
    if not ins or len(ins) != len(outs):
        return None
    fn = io_.get("fn_name")
    tests = tuple((tuple(i) if fn else _text(i), o if fn else _text(o)) for i, o in zip(ins, outs))
    sols = json.loads(row["solutions"]) if row.get("solutions") else []
    # APPS gives no public/private division: the first test is the statement's example, the rest hidden
    return CodeProblem(f"apps/{row['problem_id']}", "apps", row["question"], "call" if fn else "stdin", fn,
                       tests[:1], tests[1:] or tests[:1], sols[0] if sols else None, row.get("starter_code") or "")


def codecontests_problem(row: dict) -> CodeProblem | None:
    def pairs(t):
        return tuple(zip(list(t["input"]), list(t["output"]))) if t else ()

    public = pairs(row.get("public_tests"))
    private = pairs(row.get("private_tests")) + pairs(row.get("generated_tests"))
    if not private:
        return None
    sols = row.get("solutions") or {}
    python = [s for lang, s in zip(list(sols.get("language", [])), list(sols.get("solution", []))) if lang == PYTHON3]
    return CodeProblem(f"codecontests/{row['name']}", "codecontests", row["description"], "stdin", None,
                       public, private, python[0] if python else None)


def livecodebench_problem(row: dict) -> CodeProblem:
    public = json.loads(row["public_test_cases"])
    private = decode_private(row["private_test_cases"])
    meta = json.loads(row.get("metadata") or "{}")
    functional = any(t.get("testtype") == "functional" for t in public + private)

    def test(t):
        if functional:  # arguments one JSON value per line; the output one JSON value
            return tuple(json.loads(a) for a in t["input"].split("\n") if a.strip()), json.loads(t["output"])
        return t["input"], t["output"]

    fn = f"Solution.{meta['func_name']}" if functional else None
    return CodeProblem(f"livecodebench/{row['question_id']}", "livecodebench", row["question_content"],
                       "call" if functional else "stdin", fn, tuple(map(test, public)), tuple(map(test, private)),
                       None, row.get("starter_code") or "", row.get("contest_date", "")[:10])


def _val_bucket(key: str) -> bool:
    """By statement, so that two copies of a problem land in the same split."""
    return int(key, 16) % 100 < VAL_PERCENT


def load(source: str, data_dir: str, split: str, release: int = 6, start: str | None = None,
         end: str | None = None) -> list[CodeProblem]:
    """The problems of one split of one source (see the module docstring); LiveCodeBench problems
    from releases 1..`release` with `start` <= contest_date <= `end` (ISO dates, inclusive)."""
    if source not in SOURCES:
        raise ValueError(f"unknown code source {source!r}; allowed: {', '.join(SOURCES)}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; allowed: train, val, test")
    if source == "apps":
        rows = _jsonl(_need(os.path.join(data_dir, "test.jsonl" if split == "test" else "train.jsonl")))
        out = [p for p in map(apps_problem, rows) if p is not None]
        return out if split == "test" else [p for p in out if _val_bucket(p.key) == (split == "val")]
    if source == "codecontests":
        import pyarrow.parquet as pq
        name = {"train": "train", "val": "valid", "test": "test"}[split]
        files = sorted(glob.glob(os.path.join(data_dir, "data", f"{name}-*.parquet")))
        if not files:
            _need(os.path.join(data_dir, "data", f"{name}-*.parquet"))
        rows = [r for f in files for r in pq.read_table(f).to_pylist()]
        return [p for p in map(codecontests_problem, rows) if p is not None]
    if split != "test":
        raise ValueError("LiveCodeBench is an evaluation set: it has a test split only")
    if not 1 <= release <= 6:
        raise ValueError(f"LiveCodeBench release must be 1..6, got {release}")
    names = ["test.jsonl"] + [f"test{i}.jsonl" for i in range(2, release + 1)]
    rows = [r for n in names for r in _jsonl(_need(os.path.join(data_dir, n)))]
    lo, hi = date.fromisoformat(start) if start else date.min, date.fromisoformat(end) if end else date.max
    return [p for p in map(livecodebench_problem, rows) if lo <= date.fromisoformat(p.contest_date) <= hi]


def deduplicate(train: list, *evaluation: list) -> tuple[list, int]:
    """Training problems whose statement is in no evaluation set (and each statement once);
    returns (kept, number dropped). Code or maths problems alike: anything with a `.key`."""
    taken = {p.key for ev in evaluation for p in ev}
    kept, seen = [], set()
    for p in train:
        if p.key not in taken and p.key not in seen:
            kept.append(p)
            seen.add(p.key)
    return kept, len(train) - len(kept)
