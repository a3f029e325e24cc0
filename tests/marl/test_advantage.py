"""marl.advantage.group_advantages against a brute-force reference, its error paths, and the
registration of AT-GRPO in verl's estimator registry (in-process and via the entry point)."""
import importlib
import math
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch

from marl.advantage import group_advantages
from marl.grouping import at_grpo_key

EPS = 1e-6


def reference(rewards: list[float], groups: list[str], eps: float = EPS, by_std: bool = True) -> list[float]:
    """Per group: (r - mean) / (unbiased std + eps), with plain loops; equal rewards give 0."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    out = [0.0] * len(rewards)
    for idx in members.values():
        rs = [rewards[i] for i in idx]
        if max(rs) == min(rs):
            continue  # all equal: exactly zero
        n = len(rs)
        mean = sum(rs) / n
        std = math.sqrt(sum((r - mean) ** 2 for r in rs) / (n - 1))
        for i in idx:
            out[i] = (rewards[i] - mean) / (std + eps) if by_std else rewards[i] - mean
    return out


def random_batch(seed: int, flat_groups: int = 0):
    """Random rewards under random (problem, turn, role) keys, every group at least 2 members,
    members of a group scattered over the batch. `flat_groups` groups get one repeated reward."""
    rng = random.Random(seed)
    n_groups = rng.randint(3, 9)
    keys = [at_grpo_key(f"p{rng.randrange(4)}x{g}", rng.randrange(4), rng.choice(["tool", "plan"]))
            for g in range(n_groups)]
    rewards, groups = [], []
    for j, key in enumerate(keys):
        size = rng.randint(2, 7)
        if j < flat_groups:
            value = rng.choice([0.0, 1.0, -0.5, rng.uniform(-3, 3)])
            rs = [value] * size
        else:
            rs = [rng.choice([rng.uniform(-2, 2), float(rng.randint(0, 2))]) for _ in range(size)]
            if max(rs) == min(rs):
                rs[0] += 1.0
        rewards += rs
        groups += [key] * size
    order = list(range(len(rewards)))
    rng.shuffle(order)
    return [rewards[i] for i in order], [groups[i] for i in order], keys[:flat_groups]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("estimator", ["at_grpo", "grpo"])
def test_matches_brute_force_reference(seed, estimator):
    rewards, groups, _ = random_batch(seed)
    adv, metrics = group_advantages(torch.tensor(rewards), groups, estimator)
    ref = reference([float(torch.tensor(r, dtype=torch.float32)) for r in rewards], groups)
    assert adv.shape == (len(rewards),)
    assert torch.allclose(adv, torch.tensor(ref, dtype=adv.dtype), atol=1e-4, rtol=1e-4), (adv, ref)
    assert metrics["adv/n_groups"] == len(set(groups))
    assert metrics["adv/zero_std_frac"] == 0.0
    assert metrics["adv/mean"] == pytest.approx(adv.mean().item())
    assert metrics["adv/abs_mean"] == pytest.approx(adv.abs().mean().item())
    # normalised within each group: mean 0, unbiased std ~1
    for g in set(groups):
        a = adv[[i for i, x in enumerate(groups) if x == g]]
        assert abs(a.mean().item()) < 1e-4
        assert a.std().item() == pytest.approx(1.0, abs=1e-3)


def test_without_std_normalisation_is_centering_only():
    rewards, groups, _ = random_batch(11)
    adv, _ = group_advantages(torch.tensor(rewards), groups, "at_grpo", norm_by_std=False)
    ref = reference(rewards, groups, by_std=False)
    assert torch.allclose(adv, torch.tensor(ref, dtype=adv.dtype), atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_equal_reward_groups_give_exactly_zero_and_are_counted(seed):
    rewards, groups, flat_keys = random_batch(100 + seed, flat_groups=2)
    adv, metrics = group_advantages(torch.tensor(rewards, dtype=torch.float64), groups, "at_grpo")
    flat = [i for i, g in enumerate(groups) if g in flat_keys]
    assert flat and all(adv[i].item() == 0.0 for i in flat), [(rewards[i], adv[i].item()) for i in flat]
    assert any(adv[i].item() != 0.0 for i in range(len(groups)) if i not in flat)
    assert metrics["adv/zero_std_frac"] == pytest.approx(2 / len(set(groups)))
    ref = reference(rewards, groups)
    assert torch.allclose(adv.double(), torch.tensor(ref, dtype=torch.float64), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("n", [2, 3, 5, 6, 7, 8])
@pytest.mark.parametrize("value", [0.1, 0.7, 1.3, 1 / 3, 0.201, 2.8967128562259186, 1.0 + 0.5 * 3 / 7])
def test_equal_rewards_zero_despite_float32_mean_rounding(n, value):
    """verl's float32 group mean of n equal values can miss them by an ulp; divided by eps that
    was an advantage of ~0.1, with one sign for the whole group. Must be exactly zero."""
    adv, metrics = group_advantages(torch.tensor([value] * n), ["p|t0|plan"] * n, "at_grpo")
    assert adv.tolist() == [0.0] * n
    assert metrics["adv/zero_std_frac"] == 1.0


def test_zero_std_frac_counts_groups_not_samples():
    rewards = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]  # group a flat (4 members), group b not (2)
    groups = ["a|t0|plan"] * 4 + ["b|t0|plan"] * 2
    adv, m = group_advantages(torch.tensor(rewards), groups, "at_grpo")
    assert m["adv/zero_std_frac"] == 0.5
    assert adv[:4].tolist() == [0.0] * 4
    assert adv[4] < 0 < adv[5]


def test_unknown_estimator_lists_allowed():
    with pytest.raises(ValueError) as e:
        group_advantages(torch.tensor([0.0, 1.0]), ["a|t0|r", "a|t0|r"], "gae")
    msg = str(e.value)
    assert "gae" in msg and "at_grpo" in msg and "grpo" in msg


@pytest.mark.parametrize("rewards, groups", [
    (torch.zeros(3), ["a|t0|r"] * 2),
    (torch.zeros(2), ["a|t0|r"] * 3),
    (torch.zeros(2, 1), ["a|t0|r"] * 2),
    (torch.zeros(()), ["a|t0|r"]),
])
def test_shape_mismatch_errors(rewards, groups):
    with pytest.raises(ValueError, match="rewards must be"):
        group_advantages(rewards, groups, "at_grpo")


@pytest.mark.parametrize("bad", ["train:3", "p|t0", "p|t0|plan|x"])
def test_at_grpo_rejects_keys_without_turn_and_role(bad):
    with pytest.raises(ValueError, match="at_grpo"):
        group_advantages(torch.tensor([0.0, 1.0]), [bad, bad], "at_grpo")


def test_grpo_accepts_bare_problem_ids():
    adv, m = group_advantages(torch.tensor([0.0, 1.0, 2.0, 2.0]), ["train:1", "train:1", "train:2", "train:2"],
                              "grpo")
    assert adv[0] < 0 < adv[1] and adv[2] == adv[3] == 0.0
    assert m["adv/zero_std_frac"] == 0.5


def test_registered_in_process_and_reimport_is_harmless():
    from verl.trainer.ppo import core_algos

    from marl import advantage, verl_plugin
    fn = core_algos.get_adv_estimator_fn("at_grpo")
    assert fn is verl_plugin.compute_at_grpo_advantage
    importlib.reload(verl_plugin)  # registers again: the registry must take the same name twice
    importlib.reload(advantage)
    assert core_algos.get_adv_estimator_fn("at_grpo") is not None
    # ... but it still refuses a different function under a taken name
    with pytest.raises(ValueError):
        core_algos.register_adv_est("at_grpo")(lambda **kw: None)


def test_verl_plugin_entry_point_registers_at_grpo():
    """A fresh interpreter that imports only verl finds at_grpo: the `verl.plugins` entry point
    imports marl.verl_plugin. Importing marl.advantage afterwards (twice) does not raise."""
    code = textwrap.dedent("""
        import importlib, importlib.metadata as md, sys
        eps = md.entry_points(group="verl.plugins")
        assert any(e.name == "at_grpo" and e.value == "marl.verl_plugin" for e in eps), list(eps)
        assert "marl.verl_plugin" not in sys.modules
        import verl
        assert "marl.verl_plugin" in sys.modules, "entry point not loaded by import verl"
        from verl.trainer.ppo.core_algos import get_adv_estimator_fn
        fn = get_adv_estimator_fn("at_grpo")
        import torch, numpy as np
        adv, _ = fn(token_level_rewards=torch.tensor([[0.0], [1.0]]), response_mask=torch.ones(2, 1),
                    index=np.array(["p|t0|plan", "p|t0|plan"], dtype=object))
        assert adv[0, 0] < 0 < adv[1, 0], adv
        import marl.advantage
        importlib.reload(marl.advantage)
        import marl.advantage
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")


def verl_at_grpo(rewards: list[float], groups: list[str], T: int, algo_config):
    """verl's own `compute_advantage` path: a DataProto with token-level rewards on the last
    response token of a random-length response, `uid` = the group keys."""
    import numpy as np
    from verl.protocol import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    g = torch.Generator().manual_seed(len(rewards))
    lengths = torch.randint(1, T + 1, (len(rewards),), generator=g)  # (B,)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()  # (B, T)
    token_rewards = torch.zeros(len(rewards), T)  # (B, T)
    token_rewards[torch.arange(len(rewards)), lengths - 1] = torch.tensor(rewards)
    data = DataProto.from_dict(tensors={"token_level_rewards": token_rewards, "response_mask": mask},
                               non_tensors={"uid": np.array(groups, dtype=object)})
    out = compute_advantage(data, "at_grpo", config=algo_config)
    adv = out.batch["advantages"]  # (B, T)
    assert torch.equal(adv * (1 - mask), torch.zeros_like(adv)), "advantage outside the response"
    return adv[torch.arange(len(rewards)), 0]  # (B,) one value per row on its response


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("by_std", [True, False])
def test_verl_compute_advantage_equals_group_advantages(seed, by_std):
    """Through verl's trainer function (which passes only `config`), AT-GRPO equals
    marl.advantage on random groups, flat ones included, and under a shuffle of the rows."""
    from verl.trainer.config import AlgoConfig

    rewards, groups, flat_keys = random_batch(300 + seed, flat_groups=1)
    cfg = AlgoConfig(adv_estimator="at_grpo", norm_adv_by_std_in_grpo=by_std)
    ours, _ = group_advantages(torch.tensor(rewards), groups, "at_grpo", norm_by_std=by_std)
    theirs = verl_at_grpo(rewards, groups, T=5, algo_config=cfg)
    assert torch.allclose(theirs, ours, atol=1e-6), (theirs, ours)
    assert all(theirs[i].item() == 0.0 for i, g in enumerate(groups) if g in flat_keys)
    perm = random.Random(seed).sample(range(len(rewards)), len(rewards))
    shuffled = verl_at_grpo([rewards[i] for i in perm], [groups[i] for i in perm], T=5, algo_config=cfg)
    assert torch.allclose(shuffled, ours[perm], atol=1e-6)


def test_verl_plugin_reads_norm_and_epsilon_from_config():
    """The config verl passes wins over the keyword defaults: without std normalisation the
    advantages are centred rewards; a config epsilon is used."""
    import numpy as np

    from marl.verl_plugin import compute_at_grpo_advantage
    r = torch.tensor([[0.0], [2.0]])
    idx = np.array(["p|t0|plan"] * 2, dtype=object)
    centred, _ = compute_at_grpo_advantage(r, torch.ones(2, 1), idx, config={"norm_adv_by_std_in_grpo": False})
    assert centred.squeeze(-1).tolist() == [-1.0, 1.0]
    big_eps, _ = compute_at_grpo_advantage(r, torch.ones(2, 1), idx, config={"epsilon": 1.0})
    std = math.sqrt(2.0)  # unbiased std of (0, 2)
    assert big_eps.squeeze(-1).tolist() == pytest.approx([-1 / (std + 1), 1 / (std + 1)])
