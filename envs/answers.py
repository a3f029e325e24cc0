"""Maths answers: extracted from a role's text, checked against the gold answer with math-verify.

- Gold first: `math_verify.verify(gold, prediction)` is not symmetric (the gold's parse decides,
  e.g., whether `1,2` is a set or a number); the reference code passed them the other way round.
- The prediction is parsed with math-verify's LaTeX extraction only (an ANTLR grammar); its
  expression extraction goes through sympy's `parse_expr`, which calls `eval`, and a model's text
  never reaches that. The gold (the data set's) is parsed with both.
- math-verify's own timeouts use SIGALRM, which works only in a process's main thread, and the
  harnesses check answers in the tool pool's threads. So every check runs in a worker process
  (`python -m envs.answers`, whose main thread serves it, so those timeouts work) under an address-space
  limit, and the caller waits at most CHECK_DEADLINE_S for its answer: a check that hangs, blows
  its memory or kills its worker scores wrong with status `timeout` or `error`, and the worker is
  replaced. Nothing here raises on a bad answer.
- Plain integers on both sides (the tiny task's answers) are compared as integers without a
  worker: the value math-verify gives them (tests/envs/test_answers.py checks the two agree).
"""
from __future__ import annotations

import json
import os
import queue
import re
import resource
import select
import subprocess
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache

WORKERS = 2              # check processes (each mostly waits; sympy is single-threaded)
PARSE_TIMEOUT_S = 3      # math-verify's own limits, inside the worker (whole seconds: SIGALRM)
VERIFY_TIMEOUT_S = 3
CHECK_DEADLINE_S = 15.0  # the caller's backstop per check, the worker's start included
WORKER_MEMORY_MB = 2048  # address space of a worker (sympy on a hostile expression can balloon)
MAX_ANSWER_CHARS = 500   # longer answers are not parsed (status "too_long")

_BOXED = "\\boxed{"
_INT = re.compile(r"^\s*[-+]?\d{1,30}\s*$")


def last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (braces balanced), or None if there is none."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(_BOXED)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


@dataclass(frozen=True)
class Verdict:
    correct: bool
    status: str  # ok | no_answer | too_long | timeout | error


def serve() -> None:
    """A worker (`python -m envs.answers`): one JSON [gold, prediction] per stdin line, one JSON
    [status, correct] per stdout line, until stdin closes."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    limit = WORKER_MEMORY_MB << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    gold_cfg = [LatexExtractionConfig(), ExprExtractionConfig()]
    pred_cfg = [LatexExtractionConfig()]
    for line in sys.stdin:
        gold, pred = json.loads(line)
        try:
            g = parse(f"${gold}$", gold_cfg, parsing_timeout=PARSE_TIMEOUT_S)
            p = parse(f"${pred}$", pred_cfg, parsing_timeout=PARSE_TIMEOUT_S)
            answer = ["ok", bool(g) and bool(p) and bool(verify(g, p, timeout_seconds=VERIFY_TIMEOUT_S))]
        except Exception:  # MemoryError, RecursionError, or math-verify's own failure: scored wrong
            answer = ["error", False]
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class _Worker:
    """One worker process, started with this interpreter (`-m envs.answers`), no shell, no fork."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "envs.answers"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def ask(self, gold: str, pred: str) -> str | list:
        """[status, correct], or "timeout" / "error" if the worker did not answer (it is then to be killed)."""
        try:
            self.proc.stdin.write(json.dumps([gold, pred]) + "\n")
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], CHECK_DEADLINE_S)
            if not ready:
                return "timeout"
            line = self.proc.stdout.readline()
            return json.loads(line) if line else "error"
        except (OSError, ValueError):
            return "error"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


_POOL: queue.Queue | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> queue.Queue:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = queue.Queue()
            for _ in range(WORKERS):
                _POOL.put(None)  # a worker slot, started on first use
    return _POOL


def _check_in_worker(gold: str, pred: str) -> Verdict:
    slots = _pool()
    worker = slots.get()
    try:
        if worker is not None and worker.proc.poll() is not None:  # died since its last check
            worker = None
        worker = worker or _Worker()
        got = worker.ask(gold, pred)
        if isinstance(got, str):  # hung or died: replace it
            worker.kill()
            worker = None
            return Verdict(False, got)
        status, correct = got
        return Verdict(bool(correct), status)
    finally:
        slots.put(worker)


@lru_cache(maxsize=65536)
def check(gold: str, prediction: str | None) -> Verdict:
    """Is `prediction` (an answer's text, e.g. a `\\boxed{}`'s contents) the gold answer?"""
    if prediction is None or not prediction.strip():
        return Verdict(False, "no_answer")
    if len(prediction) > MAX_ANSWER_CHARS:
        return Verdict(False, "too_long")
    if _INT.match(gold) and _INT.match(prediction):
        return Verdict(int(gold) == int(prediction), "ok")
    return _check_in_worker(gold, prediction)


if __name__ == "__main__":
    serve()
