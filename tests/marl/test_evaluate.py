"""marl.evaluate's pure parts: pass@k, the confidence interval; and the role -> policy routing."""
import itertools
import random

import pytest

from marl.evaluate import pass_at_k, wilson
from marl.routing import Routing, policy_ids


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


def test_routing_default_swap_and_explicit():
    team = ["tool", "plan"]
    for kind in ("per_role", "lora"):  # a policy per role: each plays its own
        default = Routing.default(kind, team, team)
        assert default.as_dict() == {"tool": "tool", "plan": "plan"}
        assert default.swapped(policy_ids(kind, team)).as_dict() == {"tool": "plan", "plan": "tool"}
        # a harness without the tool role: the plan agent's policy plays it, and swapping hands it the tool's
        single = Routing.default(kind, team, ["plan"])
        assert single.as_dict() == {"plan": "plan"} and single.swapped(("tool", "plan")).as_dict() == {"plan": "tool"}
    assert Routing.default("per_role", ["tool", "plan"], ["tool", "plan"]).override(
        {"tool": "plan"}, ("tool", "plan")).as_dict() == {"tool": "plan", "plan": "plan"}
    # a trained single agent's policy ("plan") plays the tool role it never had
    assert Routing.default("per_role", ["plan"], team).as_dict() == {"tool": "plan", "plan": "plan"}
    # one shared policy plays every role
    assert Routing.default("shared", ["plan"], team).as_dict() == {"tool": "shared", "plan": "shared"}
    assert policy_ids("shared", team) == ("shared",) and policy_ids("lora", team) == ("tool", "plan")


def test_routing_is_immutable_and_errors_name_what_exists():
    r = Routing.default("shared", ["tool", "plan"], ["tool", "plan"])
    with pytest.raises(TypeError):
        r.roles["tool"] = "other"
    with pytest.raises(ValueError, match="two per-role policies, the run has \\['shared'\\]"):
        r.swapped(("shared",))
    with pytest.raises(ValueError, match="roles.coder: no such role here; roles: \\['plan'\\]"):
        Routing({"plan": "plan"}).override({"coder": "plan"}, ("plan",))
    with pytest.raises(ValueError, match="roles.plan=critic: no such policy in the run; policies: \\['tool', 'plan'\\]"):
        Routing({"tool": "tool", "plan": "plan"}).override({"plan": "critic"}, ("tool", "plan"))
