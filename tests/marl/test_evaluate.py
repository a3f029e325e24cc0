"""marl.evaluate's pure parts: pass@k, the confidence interval, the policy-to-role mapping."""
import itertools
import random

import pytest

from marl.evaluate import pass_at_k, role_mapping, wilson


@pytest.mark.parametrize("n, c, k", [(4, 0, 1), (4, 1, 1), (4, 2, 2), (5, 3, 2), (6, 1, 4), (8, 8, 8), (3, 2, 3)])
def test_pass_at_k_equals_brute_force_over_subsets(n, c, k):
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="at least 4 samples"):
        pass_at_k(2, 1, 4)


def test_wilson_interval_holds_the_estimate_and_covers_at_the_nominal_rate():
    rng = random.Random(0)
    for s, n in [(0, 10), (10, 10), (37, 100), (1, 3)]:
        lo, hi = wilson(s, n)
        assert 0.0 <= lo <= s / n <= hi <= 1.0
    p, n, hits = 0.3, 100, 0
    for _ in range(400):
        lo, hi = wilson(sum(rng.random() < p for _ in range(n)), n)
        hits += lo <= p <= hi
    assert 0.90 <= hits / 400 <= 0.99  # ~95% coverage


def test_role_mapping_default_swap_and_explicit():
    default = {"tool": "tool", "plan": "plan"}
    assert role_mapping(default, ["tool", "plan"], False, {}) == default
    assert role_mapping(default, ["tool", "plan"], True, {}) == {"tool": "plan", "plan": "tool"}
    assert role_mapping(default, ["tool", "plan"], False, {"tool": "plan"}) == {"tool": "plan", "plan": "plan"}
    # a single-agent policy plays every role of the team
    assert role_mapping({"tool": "shared", "plan": "shared"}, ["shared"], False, {}) == {"tool": "shared", "plan": "shared"}


def test_role_mapping_errors_name_what_exists():
    with pytest.raises(ValueError, match="two per-role policies"):
        role_mapping({"tool": "shared", "plan": "shared"}, ["shared"], True, {})
    with pytest.raises(ValueError, match="no such role.*plan"):
        role_mapping({"plan": "plan"}, ["plan"], False, {"coder": "plan"})
    with pytest.raises(ValueError, match="no such policy.*tool"):
        role_mapping({"tool": "tool", "plan": "plan"}, ["tool", "plan"], False, {"plan": "critic"})
