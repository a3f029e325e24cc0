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
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

from envs.code_data import deduplicate, statement_key  # noqa: F401 (deduplicate: works on any problem with a .key)

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


def _rows(data_dir: str, must_name: str | None = None) -> list[dict]:
    if not data_dir or not os.path.isdir(data_dir):
        raise FileNotFoundError(f"env.data_dir {data_dir!r} is not a directory: it must hold the data set as a hub "
                                "download lays it out (see envs/math_data.py)")
    files = sorted(f for ext in ("jsonl", "parquet")
                   for f in glob.glob(os.path.join(data_dir, "**", f"*.{ext}"), recursive=True)
                   if must_name is None or must_name in f)
    if not files:
        raise FileNotFoundError(f"no .jsonl or .parquet file{' naming ' + must_name if must_name else ''} under "
                                f"{data_dir} (see envs/math_data.py)")
    rows = []
    for f in files:
        if f.endswith(".jsonl"):
            with open(f) as fh:
                rows += [json.loads(line) for line in fh if line.strip()]
        else:
            import pyarrow.parquet as pq
            rows += pq.read_table(f).to_pylist()
    return rows


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


def problem(source: str, row: dict, index: int) -> MathProblem | None:
    """One row of `source`; None where it lacks a statement or an answer."""
    statement, answer = _field(row, _STATEMENT), _field(row, _ANSWER)
    if statement is None or answer is None or not clean_answer(answer):
        return None
    rid = _field(row, _ID)
    return MathProblem(f"{source}/{rid if rid is not None else index}", source, str(statement).strip(),
                       clean_answer(answer))


def _val_bucket(key: str) -> bool:
    """By statement, so that two copies of a problem land in the same split."""
    return int(key, 16) % 100 < VAL_PERCENT


def load(source: str, data_dir: str, split: str) -> list[MathProblem]:
    """The problems of one split of one source (see the module docstring)."""
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
    rows = _rows(data_dir, OLYMPIAD_SUBSET if source == "olympiadbench" else None)
    out = [p for i, r in enumerate(rows) if (p := problem(source, r, i)) is not None]
    if source in TRAIN_SOURCES:
        out = [p for p in out if _val_bucket(p.key) == (split == "val")]
    return out
