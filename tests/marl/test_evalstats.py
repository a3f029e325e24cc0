"""marl.evalstats: the paired harness effect and its tests, on outcomes worked out by hand."""
import math

import pytest

from marl.evalstats import mcnemar_exact, paired_effect, pass_at_ks, success_interval, wilson


def test_mcnemar_exact_is_the_two_sided_binomial_tail_of_the_discordant_pairs():
    # 10 wins, 2 losses: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0  # capped at 1
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)


def test_paired_effect_counts_the_problems_each_harness_alone_solves():
    base = [1, 1, 0, 0, 0, 1, 0, 0]
    other = [1, 0, 1, 1, 1, 1, 0, 1]
    diff, m = paired_effect(base, other, seed=0)
    assert diff == pytest.approx(3 / 8)  # 6 solved against 3
    assert (m["wins"], m["losses"], m["problems"]) == (4, 1, 8)
    assert m["mcnemar_p"] == pytest.approx(mcnemar_exact(4, 1))
    lo, hi = m["ci95"]
    assert lo <= diff <= hi and lo < hi
    assert paired_effect(base, other, seed=0) == (diff, m)  # the bootstrap draws only from its seed


def test_paired_interval_is_narrower_than_an_unpaired_one_when_the_harnesses_agree():
    # the same 40 problems, one harness solving 4 more: pairing removes the problems' own variance
    base = [1] * 20 + [0] * 20
    other = [1] * 24 + [0] * 16
    diff, m = paired_effect(base, other, seed=0)
    assert diff == pytest.approx(0.1)
    lo, hi = m["ci95"]
    a, b = wilson(20, 40), wilson(24, 40)
    assert hi - lo < (b[1] - b[0] + a[1] - a[0]) / 2
    assert lo >= 0.0  # only wins: no resample can go below zero


def test_identical_harnesses_have_no_effect_and_rates_skip_mcnemar():
    diff, m = paired_effect([0, 1, 1], [0, 1, 1], seed=0)
    assert diff == 0 and m["ci95"] == [0.0, 0.0] and m["mcnemar_p"] == 1.0
    _, m = paired_effect([0.5, 1.0], [0.25, 1.0], seed=0)  # sampled: per-problem rates
    assert m["mcnemar_p"] is None and (m["wins"], m["losses"]) == (0, 1)
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_effect([1, 0], [1], seed=0)


def test_success_interval_and_pass_at_k_from_per_problem_counts():
    assert success_interval([1, 0, 1, 1], 1) == wilson(3, 4)
    lo, hi = success_interval([2, 0, 1, 2], 2)  # rates 1, 0, .5, 1: mean .625
    sd = math.sqrt((0.375 ** 2 + 0.625 ** 2 + 0.125 ** 2 + 0.375 ** 2) / 3)
    assert lo == pytest.approx(0.625 - 1.96 * sd / 2) and hi == 1.0  # capped at 1
    assert pass_at_ks([2, 0, 1, 2], 2) == {"pass@1": pytest.approx(0.625), "pass@2": pytest.approx(0.75)}
