"""envs/answers.py: math-verify called gold first, off the main thread, in a worker that a hostile
answer cannot hang or crash the caller through."""
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import envs.answers as answers
from envs.answers import check, last_boxed


def test_gold_comes_first():
    # math-verify is asymmetric here: an inequality gold accepts the interval, not the reverse.
    # The reference code passed (prediction, gold); passed that way this first check would fail.
    assert check("x \\leq 1", "(-\\infty,1]").correct
    assert not check("(-\\infty,1]", "x \\leq 1").correct


@pytest.mark.parametrize(("gold", "pred", "right"), [
    ("\\frac{1}{2}", "0.5", True), ("\\frac{1}{2}", "\\frac12", True), ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("10", "10.0", True), ("(1,2)", "(1, 2)", True), ("\\{1,2\\}", "\\{2,1\\}", True),
    ("\\frac{4}{3}", "1.33", False), ("[1,2]", "(1,2]", False), ("\\pi", "3.14159", False),
])
def test_equivalent_forms(gold, pred, right):
    assert check(gold, pred) == answers.Verdict(right, "ok")


def test_plain_integers_agree_with_math_verify():
    rng = random.Random(0)
    pairs = [(str(a), str(a if rng.random() < 0.5 else a + rng.choice((-1, 1, 10)))) for a in
             (rng.randint(-999, 9999) for _ in range(40))]
    pairs += [("7", "007"), ("-3", "-3"), ("12", "+12")]
    for g, p in pairs:
        assert check(g, p).correct == answers._check_in_worker(g, p).correct, (g, p)


def test_checks_run_in_threads():
    # math-verify's SIGALRM timeouts raise outside the main thread: the worker is what makes this work
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda gp: check(*gp).correct, [("\\frac{3}{4}", "0.75"), ("\\frac{3}{5}", "0.75"),
                                                           ("\\sqrt{2}", "2^{1/2}"), ("e", "2.7")]))
    assert got == [True, False, True, False]


def test_no_answer_and_too_long():
    assert check("1", None) == answers.Verdict(False, "no_answer")
    assert check("1", "  ") == answers.Verdict(False, "no_answer")
    assert check("1", "1" * (answers.MAX_ANSWER_CHARS + 1)).status == "too_long"


def test_a_hanging_check_is_cut_off_and_its_worker_replaced(monkeypatch):
    monkeypatch.setattr(answers, "CHECK_DEADLINE_S", 2.0)
    t = time.time()
    v = check("1", "9^{9^{9^{9^{9}}}}")  # a tower sympy cannot finish evaluating
    assert not v.correct and v.status in ("timeout", "error", "ok")
    assert time.time() - t < 2.0 + 5.0
    assert check("\\frac{1}{3}", "\\frac{2}{6}").correct  # the pool still answers


def test_a_dead_worker_is_replaced():
    assert check("\\frac{1}{7}", "\\frac{2}{14}").correct  # starts a worker
    slots = answers._pool()
    workers = [slots.get() for _ in range(answers.WORKERS)]
    for w in workers:
        if w is not None:
            w.proc.kill()
            w.proc.wait()
        slots.put(w)
    assert check("\\frac{1}{11}", "\\frac{2}{22}") == answers.Verdict(True, "ok")


def test_a_worker_that_dies_mid_check_is_an_error():
    w = answers._Worker()
    w.proc.kill()
    w.proc.wait()
    assert w.ask("1", "1") == "error"


def test_last_boxed():
    assert last_boxed("so \\boxed{\\frac{1}{2}} then \\boxed{3}") == "3"
    assert last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{unclosed") is None
