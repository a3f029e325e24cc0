"""Real maths data read from local files into one schema, `MathProblem`. Nothing is fetched at run
time: `data_dir` is the layout a hub download leaves (`huggingface-cli download <repo> --repo-type
dataset --local-dir <dir>`); every `.jsonl` and `.parquet` file under it is read, so the repos'
usual layouts all work:

- Polaris-53K (POLARIS-Project/Polaris-Dataset-53K): `polaris-data-53K.jsonl`, rows {problem, answer,
  difficulty}. Training data: validation is carved from it by a hash of the statement.
- AIME 2024 (e.g. HuggingFaceH4/aime_2024 `data/train-*.parquet` {id, problem, answer}, or
  Maxwell-Jia/AIME_2024 {ID, Problem, Answer}) and AIME 2025 (e.g. math-ai/aime25 `test.jsonl`
  {id, problem, answer}, or opencompass/AIME2025 `aime2025-I.jsonl` {question, answer}): test only.
- OlympiadBench (Hothan/OlympiadBench): the text-only English maths subset, files whose path names
  `OE_TO_maths_en_COMP`; rows {id, question, final_answer: a list of LaTeX strings, often
  `$`-delimited, is_multiple_answer, unit}: test only. Several final answers are one gold answer,
  comma-separated (math-verify reads it as a tuple or set).

A statement's key is a hash of it normalised (envs/code_data.statement_key); training problems are
deduplicated against every evaluation set by it (some public AIME collections hold AIME 2024).
A row without a statement or an answer is skipped and counted (public dumps hold such rows); a line
that is not a JSON object is an error naming the file and the line (envs/data_files.py).
"""
from __future__ import annotations

import glob
import itertools
import os
from dataclasses import dataclass

from envs.code_data import deduplicate, statement_key  # noqa: F401 (deduplicate: works on any problem with a .key)
from envs.data_files import Row, Skip, Tally, need_dir, parse, read_rows

SOURCES = ("polaris", "aime24", "aime25", "olympiadbench")
TRAIN_SOURCES = ("polaris",)
VAL_PERCENT = 2            # share of Polaris carved out for validation (about 1,000 problems)
OLYMPIAD_SUBSET = "OE_TO_maths_en_COMP"

# the field names each source's known uploads use, in the order tried
_STATEMENT = ("problem", "Problem", "question", "Question")
_ANSWER = ("answer", "Answer", "final_answer")
_ID = ("id", "ID", "unique_id", "idx")


@dataclass(frozen=True)
class MathProblem:
    id: str
    source: str
    statement: str
    answer: str   # the gold answer, LaTeX without `$` delimiters

    @property
    def key(self) -> str:
        return statement_key(self.statement)


_SEE = "envs/math_data.py"
_EXPECTS = (f"with a statement ({', '.join(_STATEMENT)}) and an answer ({', '.join(_ANSWER)})")


def _rows(data_dir: str, setting: str, tally: Tally, must_name: str | None = None) -> list[Row]:
    need_dir(data_dir, setting, _SEE)
    files = sorted(f for ext in ("jsonl", "parquet")
                   for f in glob.glob(os.path.join(data_dir, "**", f"*.{ext}"), recursive=True)
                   if must_name is None or must_name in f)
    if not files:
        raise FileNotFoundError(f"no .jsonl or .parquet file{' naming ' + must_name if must_name else ''} under "
                                f"{setting}={data_dir} (see {_SEE})")
    source = tally.source(setting, data_dir)
    return [r for f in files for r in read_rows(f, _EXPECTS, source)]


def _field(row: dict, names: tuple[str, ...]):
    return next((row[n] for n in names if row.get(n) not in (None, "")), None)


def clean_answer(a) -> str:
    """A gold answer as one LaTeX string: `$` delimiters dropped, a list joined by commas."""
    if isinstance(a, (list, tuple)):
        return ", ".join(clean_answer(x) for x in a)
    s = str(a).strip()
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s[1:-1].strip()
    return s


def problem(source: str, row: dict, index: int) -> MathProblem:
    """One row of `source`; `Skip` where it lacks a statement or an answer."""
    statement, answer = _field(row, _STATEMENT), _field(row, _ANSWER)
    if statement is None:
        raise Skip(f"without a statement ({', '.join(_STATEMENT)})")
    if answer is None or not clean_answer(answer):
        raise Skip(f"without an answer ({', '.join(_ANSWER)})")
    rid = _field(row, _ID)
    return MathProblem(f"{source}/{rid if rid is not None else index}", source, str(statement).strip(),
                       clean_answer(answer))


def _val_bucket(key: str) -> bool:
    """By statement, so that two copies of a problem land in the same split."""
    return int(key, 16) % 100 < VAL_PERCENT


def load(source: str, data_dir: str, split: str, setting: str = "env",
         tally: Tally | None = None) -> list[MathProblem]:
    """The problems of one split of one source (see the module docstring). `setting`: the group
    `data_dir` came from (env, env.test_sets.aime24), for errors; `tally` counts what was read."""
    if source not in SOURCES:
        raise ValueError(f"unknown maths source {source!r}; allowed: {', '.join(SOURCES)}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; allowed: train, val, test")
    if source in TRAIN_SOURCES:
        if split == "test":
            raise ValueError(f"{source} is training data: it has train and val splits (test comes from evaluation "
                             "sets, env.test_sets)")
    elif split != "test":
        raise ValueError(f"{source} is an evaluation set: it has a test split only")
    tally = tally if tally is not None else Tally()
    rows = _rows(data_dir, f"{setting}.data_dir", tally, OLYMPIAD_SUBSET if source == "olympiadbench" else None)
    position = itertools.count()  # a row's id where it has none: its place among the files' rows (parse is in order)
    out = parse(rows, lambda r: problem(source, r, next(position)), tally)
    if source in TRAIN_SOURCES:
        kept = [p for p in out if _val_bucket(p.key) == (split == "val")]
        if len(kept) < len(out):
            other = "train" if split == "val" else "val"
            tally.skipped[f"in the {other} split ({VAL_PERCENT}% of statements are val)"] += len(out) - len(kept)
        out = kept
    return out
