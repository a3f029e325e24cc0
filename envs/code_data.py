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
statement (`statement_key`). A row without usable tests or with an empty statement is skipped and
counted; one that does not hold what its source's rows hold is an error naming the file, the row
and the field (envs/data_files.py).
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

from envs.data_files import (FieldError, Skip, Tally, error_name, json_field, need_dir, need_file, parse, read_rows,
                             required)

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


_SEE = "envs/code_data.py"
_TESTS = "a JSON list of {input, output, testtype} objects"


def _text(x) -> str:
    return "\n".join(x) if isinstance(x, list) else str(x)


def _statement(row: dict, name: str) -> str:
    """Every row of a source has the field (its absence: an error); an empty one is skipped."""
    if name not in row:
        raise FieldError(name, "is missing; expected the statement")
    if not row[name]:
        raise Skip(f"with an empty statement ({name})")
    return row[name]


def apps_problem(row: dict) -> CodeProblem:
    """One APPS row; `Skip` where it has no usable tests."""
    pid, question = required(row, "problem_id", "the problem's id"), _statement(row, "question")
    try:
        io_ = json.loads(row["input_output"]) if row.get("input_output") else {}
    except ValueError:
        raise Skip("without usable tests (input_output is not JSON)") from None
    if not isinstance(io_, dict):
        raise FieldError("input_output", f"holds a JSON {type(io_).__name__}; expected a JSON object "
                         "{inputs, outputs, fn_name}")
    ins, outs = io_.get("inputs") or [], io_.get("outputs") or []
    if not ins or len(ins) != len(outs):
        raise Skip("without usable tests (input_output: no inputs, or not one output per input)")
    fn = io_.get("fn_name")
    tests = tuple((tuple(i) if fn else _text(i), o if fn else _text(o)) for i, o in zip(ins, outs))
    sols = json_field(row, "solutions", "a JSON list of Python programs", list) if row.get("solutions") else []
    # APPS gives no public/private division: the first test is the statement's example, the rest hidden
    return CodeProblem(f"apps/{pid}", "apps", question, "call" if fn else "stdin", fn,
                       tests[:1], tests[1:] or tests[:1], sols[0] if sols else None, row.get("starter_code") or "")


def codecontests_problem(row: dict) -> CodeProblem:
    def pairs(name):
        t = row.get(name)
        if not t:
            return ()
        ins, outs = (list(t.get(k) or []) for k in ("input", "output")) if isinstance(t, dict) else (None, None)
        if ins is None or len(ins) != len(outs):
            raise FieldError(name, "is not {input: [...], output: [...]} with one output per input")
        return tuple(zip(ins, outs))

    name, description = required(row, "name", "the problem's name"), _statement(row, "description")
    public = pairs("public_tests")
    private = pairs("private_tests") + pairs("generated_tests")
    if not private:
        raise Skip("without hidden tests (private_tests, generated_tests)")
    sols = row.get("solutions") or {}
    if not isinstance(sols, dict):
        raise FieldError("solutions", f"is a {type(sols).__name__}; expected {{language: [...], solution: [...]}}")
    python = [s for lang, s in zip(list(sols.get("language", [])), list(sols.get("solution", []))) if lang == PYTHON3]
    return CodeProblem(f"codecontests/{name}", "codecontests", description, "stdin", None,
                       public, private, python[0] if python else None)


_ISO = "an ISO date (YYYY-MM-DD, optionally with a time)"


def _iso(value) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _private(row: dict) -> list:
    try:
        got = decode_private(required(row, "private_test_cases", _TESTS))
    except (ValueError, zlib.error, pickle.UnpicklingError) as e:  # binascii.Error is a ValueError
        raise FieldError("private_test_cases", f"could not be read ({error_name(e)}: {e}); expected {_TESTS}, "
                         "or that JSON pickled, zlib-compressed and base64-encoded") from None
    if not isinstance(got, list):
        raise FieldError("private_test_cases", f"holds a {type(got).__name__}; expected {_TESTS}")
    return got


def livecodebench_problem(row: dict) -> CodeProblem:
    qid, content = required(row, "question_id", "the problem's id"), _statement(row, "question_content")
    public, private = json_field(row, "public_test_cases", _TESTS, list), _private(row)
    for name, raw in (("public_test_cases", public), ("private_test_cases", private)):
        if not all(isinstance(t, dict) for t in raw):
            raise FieldError(name, f"holds a test that is not an object; expected {_TESTS}")
    meta = json_field(row, "metadata", "a JSON object", dict) if row.get("metadata") else {}
    functional = any(t.get("testtype") == "functional" for t in public + private)
    if functional and not meta.get("func_name"):
        raise FieldError("metadata", "has no func_name; functional tests call Solution.<func_name>")
    when = _iso(required(row, "contest_date", _ISO))
    if when is None:
        raise FieldError("contest_date", f"is {row['contest_date']!r}, not {_ISO}")

    def test(t):
        if functional:  # arguments one JSON value per line; the output one JSON value
            return tuple(json.loads(a) for a in t["input"].split("\n") if a.strip()), json.loads(t["output"])
        return t["input"], t["output"]

    def tests(name, raw):
        try:
            return tuple(map(test, raw))
        except (KeyError, AttributeError, ValueError) as e:  # a missing key, input not text, output not JSON
            form = " (functional: one JSON argument a line, the output JSON)" if functional else ""
            raise FieldError(name, f"holds a test that could not be read ({error_name(e)}: {e}); "
                             f"expected {_TESTS}{form}") from None

    fn = f"Solution.{meta['func_name']}" if functional else None
    return CodeProblem(f"livecodebench/{qid}", "livecodebench", content, "call" if functional else "stdin", fn,
                       tests("public_test_cases", public), tests("private_test_cases", private),
                       None, row.get("starter_code") or "", when.isoformat())


def _val_bucket(key: str) -> bool:
    """By statement, so that two copies of a problem land in the same split."""
    return int(key, 16) % 100 < VAL_PERCENT


_ROW = {"apps": "{problem_id, question, input_output, solutions, starter_code}",
        "codecontests": "{name, description, public_tests, private_tests, generated_tests, solutions}",
        "livecodebench": "{question_id, question_content, contest_date, public_test_cases, private_test_cases, "
                         "metadata, starter_code}"}


_PROBLEM = {"apps": apps_problem, "codecontests": codecontests_problem, "livecodebench": livecodebench_problem}


def _window(setting: str, release: int, start, end) -> tuple[date, date]:
    """LiveCodeBench's settings checked: the contest_date window (`date.min`/`max` where open)."""
    if not isinstance(release, int) or not 1 <= release <= 6:
        raise ValueError(f"{setting}.release must be 1..6 (files test.jsonl .. test6.jsonl), got {release!r}")
    lo, hi = (_iso(v) if v else d for v, d in ((start, date.min), (end, date.max)))
    for name, v, got in (("start", start, lo), ("end", end, hi)):
        if got is None:
            raise ValueError(f"{setting}.{name} {v!r} is not {_ISO}, or null for an open window")
    return lo, hi


def load(source: str, data_dir: str, split: str, release: int = 6, start: str | None = None,
         end: str | None = None, setting: str = "env", tally: Tally | None = None) -> list[CodeProblem]:
    """The problems of one split of one source (see the module docstring); LiveCodeBench problems
    from releases 1..`release` with `start` <= contest_date <= `end` (ISO dates, inclusive).
    `setting`: the group these came from (env, env.eval_sets.<name>), for errors; `tally` counts
    what was read and skipped."""
    if source not in SOURCES:
        raise ValueError(f"unknown code source {source!r}; allowed: {', '.join(SOURCES)}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; allowed: train, val, test")
    tally = tally if tally is not None else Tally()
    where = f"{setting}.data_dir"
    need_dir(data_dir, where, _SEE)
    if source == "livecodebench":
        if split != "test":
            raise ValueError("LiveCodeBench is an evaluation set: it has a test split only")
        lo, hi = _window(setting, release, start, end)
        paths = [os.path.join(data_dir, n) for n in ["test.jsonl"] + [f"test{i}.jsonl" for i in range(2, release + 1)]]
    elif source == "apps":
        paths = [os.path.join(data_dir, "test.jsonl" if split == "test" else "train.jsonl")]
    else:
        name = {"train": "train", "val": "valid", "test": "test"}[split]
        paths = sorted(glob.glob(os.path.join(data_dir, "data", f"{name}-*.parquet"))) or \
            [os.path.join(data_dir, "data", f"{name}-*.parquet")]
    read = tally.source(where, data_dir)
    rows = [r for f in paths for r in read_rows(need_file(f, where, _SEE), _ROW[source], read)]
    out = parse(rows, _PROBLEM[source], tally)
    if source == "apps" and split != "test":
        kept = [p for p in out if _val_bucket(p.key) == (split == "val")]
        why = f"in the {'train' if split == 'val' else 'val'} split ({VAL_PERCENT}% of statements are val)"
    elif source == "livecodebench":
        kept = [p for p in out if lo <= date.fromisoformat(p.contest_date) <= hi]
        why = f"with a contest_date outside {setting}.start..end ({start}..{end})"
    else:
        kept, why = out, ""
    if len(kept) < len(out):
        tally.skipped[why] += len(out) - len(kept)
    return kept


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
