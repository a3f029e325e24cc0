"""marl samples -> verl's training batch (marl.engine.verl.batch): every row is its sample's own
prompt and response, padding rows to the data-parallel multiple are zero-mask rows that leave
verl's loss unchanged, no group spans two policies, and verl's no-padding conversion accepts it."""
from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo import core_algos

from marl.engine.verl.batch import PAD_UID, check_one_policy_per_group, rows, to_batch, worker_input
from marl.grouping import at_grpo_key
from marl.types import Sample, TrainSample

PAD = 0


def samples(n: int, seed: int = 0, policy: str = "plan", k: int = 3) -> list[TrainSample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = [rng.randrange(1, 50) for _ in range(rng.randint(1, 9))]
        r = [rng.randrange(1, 50) for _ in range(rng.randint(1, 6))]
        key = at_grpo_key(f"train:{i // k}", 0, policy)
        s = Sample(problem_id=f"train:{i // k}", turn=0, role=policy, policy=policy, candidate=i % k, prompt="",
                   response="", prompt_ids=p, response_ids=r, logprobs=[-rng.random() for _ in r],
                   temperature=1.0, reward=0.0, local=0.0, team=0.0, parse_ok=True, chosen=False, group_id=key)
        out.append(TrainSample(s, rng.uniform(-2, 2)))
    return out


@pytest.mark.parametrize("n, dp", [(7, 1), (7, 4), (8, 4), (5, 8), (1, 2)])
def test_round_trip_and_padding_rows(n, dp):
    xs = samples(n, seed=n * 10 + dp)
    b = to_batch(xs, dp, PAD)
    B = len(b)
    assert B % dp == 0 and n <= B < n + dp
    got = rows(b)
    for x, (p, r) in zip(xs, got):
        assert (p, r) == (x.sample.prompt_ids, x.sample.response_ids)
    nt = b.non_tensor_batch
    for i, x in enumerate(xs):
        L = len(x.sample.response_ids)
        assert b.batch["response_mask"][i].tolist() == [1.0] * L + [0.0] * (b.batch["responses"].shape[1] - L)
        assert b.batch["rollout_log_probs"][i, :L].tolist() == pytest.approx(x.sample.logprobs)
        assert b.batch["advantages"][i, :L].tolist() == pytest.approx([x.advantage] * L)
        assert (nt["uid"][i], nt["problem_id"][i], nt["turn"][i], nt["role"][i], nt["policy"][i], nt["candidate"][i]) == (
            x.sample.group_id, x.sample.problem_id, x.sample.turn, x.sample.role, x.sample.policy, x.sample.candidate)
    for i in range(n, B):  # padding: one prompt and one response token, nothing to learn from
        assert got[i] == ([PAD], [PAD]) and nt["is_pad"][i] and nt["uid"][i].startswith(PAD_UID)
        assert b.batch["response_mask"][i].sum() == 0 and b.batch["advantages"][i].abs().sum() == 0
    assert len(set(nt["uid"][n:])) == B - n  # padding rows never form a group, with real rows or each other
    # position ids count real tokens from 0 in every row
    for i in range(B):
        m = b.batch["attention_mask"][i].bool()
        assert b.batch["position_ids"][i][m].tolist() == list(range(int(m.sum())))


def pg_loss(batch, logprob):
    """verl's vanilla PPO loss with token-mean aggregation over the batch's response mask."""
    mask = batch.batch["response_mask"]
    cfg = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": None, "clip_ratio_high": None, "clip_ratio_c": 3.0,
                            "global_batch_info": {"dp_size": 1, "batch_num_tokens": int(mask.sum())}})
    loss, _ = core_algos.get_policy_loss_fn("vanilla")(
        old_log_prob=batch.batch["rollout_log_probs"], log_prob=logprob, advantages=batch.batch["advantages"],
        response_mask=mask, loss_agg_mode="token-mean", config=cfg)
    return loss


def test_padding_rows_contribute_zero_loss_and_gradient():
    xs = samples(6, seed=3)
    plain, padded = to_batch(xs, 1, PAD), to_batch(xs, 4, PAD)
    assert len(plain) == 6 and len(padded) == 8
    R = padded.batch["responses"].shape[1]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(8, R, generator=g) * 0.3  # a current policy a little away from the rollout's
    lp_plain = (plain.batch["rollout_log_probs"] + noise[:6, :plain.batch["responses"].shape[1]]).requires_grad_()
    lp_padded = (padded.batch["rollout_log_probs"] + noise).requires_grad_()
    with torch.no_grad():
        lp_padded[:6, :lp_plain.shape[1]] = lp_plain
    a, b = pg_loss(plain, lp_plain), pg_loss(padded, lp_padded)
    assert a.item() != 0.0 and b.item() == pytest.approx(a.item(), rel=1e-6)
    b.backward()
    assert lp_padded.grad[6:].abs().sum() == 0
    assert lp_padded.grad[:6].abs().sum() > 0


def test_no_group_spans_two_policies():
    xs = samples(3, policy="plan")
    other = samples(3, policy="tool")
    bad = TrainSample(Sample(**{**other[0].sample.__dict__, "group_id": xs[0].sample.group_id}), 0.5)
    check_one_policy_per_group(xs + other)  # distinct groups: fine
    with pytest.raises(ValueError, match="spans policies 'plan' and 'tool'"):
        check_one_policy_per_group(xs + [bad])
    with pytest.raises(ValueError, match="spans policies"):
        to_batch(xs + [bad], 1, PAD)


def test_refuses_mixed_temperatures_greedy_samples_and_empty_batches():
    xs = samples(2)
    hot = TrainSample(Sample(**{**xs[1].sample.__dict__, "temperature": 1.5}), xs[1].advantage)
    with pytest.raises(ValueError, match="temperature"):
        to_batch([xs[0], hot], 1, PAD)
    greedy = [TrainSample(Sample(**{**x.sample.__dict__, "temperature": 0.0}), x.advantage) for x in xs]
    with pytest.raises(ValueError, match="greedy"):
        to_batch(greedy, 1, PAD)
    with pytest.raises(ValueError, match="at least one"):
        to_batch([], 1, PAD)


def test_worker_input_is_verls_unpadded_form_of_the_same_rows():
    xs = samples(5, seed=9)
    b = to_batch(xs, 2, PAD)
    td = worker_input(b, temperature=1.0, global_batch_size=len(b))
    ids = td["input_ids"]
    assert ids.is_nested and len(ids.unbind()) == len(b)
    for (p, r), row in zip(rows(b), ids.unbind()):
        assert row.tolist() == p + r
    assert td["loss_mask"].sum() == sum(len(x.sample.response_ids) for x in xs)
    from verl.utils import tensordict_utils as tu
    assert tu.get_non_tensor_data(td, "temperature", None) == 1.0


class FakeWorkerGroup:
    """verl's ActorRolloutRefWorker group, imitated on the CPU where it matters to marl: each
    log-prob call returns, on the unpadded (jagged) sequence, a value at every position t that
    depends on the token at t + 1 (a causal LM's next-token log-prob layout), so a batch laid out
    wrongly reads back wrong values. Records what it was sent."""

    def __init__(self):
        self.calls = []

    def _log_probs(self, td, scale: float):
        from verl.utils import tensordict_utils as tu
        ids = td["input_ids"]
        vals = [torch.cat([-scale * row[1:].float(), torch.zeros(1)]) for row in ids.unbind()]  # value at t: token t+1
        return tu.get_tensordict({"log_probs": torch.nested.as_nested_tensor(vals, layout=torch.jagged)})

    def compute_log_prob(self, td):
        from verl.utils import tensordict_utils as tu
        lora_ref = tu.get_non_tensor_data(td, "no_lora_adapter", False)
        self.calls.append(("ref_lora" if lora_ref else "actor", td))
        return self._log_probs(td, 0.02 if lora_ref else 0.01)

    def compute_ref_log_prob(self, td):
        self.calls.append(("ref", td))
        return self._log_probs(td, 0.02)

    def update_actor(self, td):
        from verl.utils import tensordict_utils as tu
        self.calls.append(("update", td))
        return tu.get_tensordict({"loss": torch.zeros(1)},
                                 non_tensor_dict={"metrics": {"actor/pg_loss": [0.5, 1.5], "grad_norm": 2.0,  # verl's names
                                                              "lr": 1e-6, "kl_loss": 0.25, "perf/mfu": 0.1}})


@pytest.mark.parametrize("lora", [False, True])
def test_train_rows_reads_log_probs_back_onto_the_right_tokens(lora):
    """The host's update on the CPU against a stand-in worker group: old (and reference)
    log-probs land on their own response tokens (padding rows included), the update gets verl's
    keys and batch sizes, and verl's metrics come back under marl's names."""
    from verl.utils import tensordict_utils as tu

    from marl.engine.verl.policy import train_rows
    xs = samples(7, seed=4)
    b = to_batch(xs, 4, PAD)
    wg = FakeWorkerGroup()
    m = train_rows(wg, b, mini_batch=4, epochs=1, seed=3, entropy=False, reference=True, lora=lora)
    mask = b.batch["response_mask"]
    assert torch.allclose(b.batch["old_log_probs"] * mask, -0.01 * b.batch["responses"].float() * mask)
    assert torch.allclose(b.batch["ref_log_prob"] * mask, -0.02 * b.batch["responses"].float() * mask)
    assert [c[0] for c in wg.calls] == ["actor", "ref_lora" if lora else "ref", "update"]
    upd = wg.calls[-1][1]
    for key in ("old_log_probs", "ref_log_prob", "advantages", "loss_mask", "input_ids", "position_ids"):
        assert key in upd.keys(), key
    assert (tu.get_non_tensor_data(upd, "global_batch_size", None), tu.get_non_tensor_data(upd, "mini_batch_size", None),
            tu.get_non_tensor_data(upd, "temperature", None), tu.get_non_tensor_data(upd, "compute_loss", None)) == (4, 4, 1.0, True)
    assert m["train/pg_loss"] == 1.0 and m["train/grad_norm"] == 2.0 and m["train/lr"] == 1e-6 and m["train/kl"] == 0.25
    assert m["train/verl/perf/mfu"] == 0.1
    gap = (-0.01 * b.batch["responses"].float() - b.batch["rollout_log_probs"])[mask.bool()].abs().mean()
    assert m["train/rollout_logprob_gap"] == pytest.approx(float(gap))
