"""HumanEval through the sandbox: all 164 canonical solutions pass, and each one with its return
value perturbed fails (the check runs in the trainer; only the calls run in the sandbox)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from sandbox.humaneval import passes, perturbed, problems


@pytest.mark.e2e
def test_canonical_solutions_pass_and_perturbed_ones_fail():
    ps = problems()
    assert len(ps) == 164
    with ThreadPoolExecutor(8) as pool:
        good = list(pool.map(lambda p: passes(p, p["canonical_solution"]), ps))
        bad = list(pool.map(lambda p: passes(p, perturbed(p)), ps))
    failing = [(p["task_id"], why) for p, (ok, why) in zip(ps, good) if not ok]
    passing = [p["task_id"] for p, (ok, _) in zip(ps, bad) if ok]
    assert not failing, failing
    assert not passing, passing


def test_an_unanswering_candidate_fails_the_check():
    p = problems()[0]
    ok, why = passes(p, "    raise SystemExit(0)\n")
    assert not ok and why.startswith("no_result")
