"""The local engine's parts on a tiny random Qwen3 (no SFT): request batching, what a Completion
holds, generation log-probs == recomputed log-probs (the PPO ratio's denominator), and
update_policy. The engine as a whole (policies, LoRA, save/load): test_local_engine.py."""
from __future__ import annotations

import asyncio
import copy
import math
import random

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

import envs
import roles
from marl.engine import OptimSpec, UpdateSpec
from marl.engine.local.batching import BatchingClient
from marl.engine.local.decode import Runner
from marl.engine.local.logprobs import response_logprobs
from marl.engine.local.policies import FullPolicy
from marl.engine.local.update import update_policy
from marl.engine.tokens import encode_pair
from marl.tiny import build_tokenizer, demonstrations
from marl.types import Completion, Sample, TrainSample

MAX_NEW = 12


@pytest.fixture(scope="module")
def task_and_harnesses():
    task = envs.make("planpath")
    return task, [roles.make_harness(task, "mas"), roles.make_harness(task, "single")]


@pytest.fixture(scope="module")
def pairs(task_and_harnesses):
    _, hs = task_and_harnesses
    return list(demonstrations(hs, range(120), 0.15, 0))


@pytest.fixture(scope="module")
def tok(pairs):
    return build_tokenizer([p + "\n" + r for p, r in pairs])


def tiny_model(tok, seed=0):
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.eos_token_id, tie_word_embeddings=True,
                      initializer_range=0.4)  # peaked logits: log-probs differ by token and position
    return Qwen3ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(tok)


@pytest.fixture(scope="module")
def prompts(pairs, tok):
    """Encoded prompts of different lengths (left padding matters)."""
    seen, out = set(), []
    for p, _ in pairs:
        ids = encode_pair(tok, p, "")[0]
        if len(ids) not in seen:
            seen.add(len(ids))
            out.append(ids)
    assert len(out) >= 4
    return out[:6]


def client_for(model, tok, max_new_tokens=MAX_NEW, **kw) -> BatchingClient:
    return BatchingClient(Runner(model, tok, max_new_tokens, **kw))


def gather(client, reqs):
    async def go():
        return await asyncio.gather(*[client.generate(p, t) for p, t in reqs])
    return asyncio.run(go())


# --- batching ----------------------------------------------------------------------------

def test_concurrent_requests_share_one_generate_call(model, tok, prompts):
    client = client_for(model, tok, max_new_tokens=MAX_NEW)
    reqs = [(prompts[i % len(prompts)], 1.0) for i in range(10)]
    outs = gather(client, reqs)
    assert client.runner.stats["calls"] == 1
    assert client.runner.stats["sequences"] == 10
    assert client.runner.stats["new_tokens"] == sum(len(c.token_ids) for c in outs)
    assert all(isinstance(c, Completion) for c in outs)


def test_requests_arriving_a_few_loop_turns_apart_share_one_call(model, tok, prompts):
    """Rollouts reach generate() after different amounts of work: the client waits until no new
    request arrives before serving the batch."""
    client = client_for(model, tok, max_new_tokens=4)

    async def late(i):
        for _ in range(i % 4):
            await asyncio.sleep(0)
        return await client.generate(prompts[i % len(prompts)], 1.0)

    async def go():
        return await asyncio.gather(*[late(i) for i in range(8)])

    outs = asyncio.run(go())
    assert len(outs) == 8 and client.runner.stats["calls"] == 1 and client.runner.stats["sequences"] == 8


def test_one_call_per_temperature_and_per_max_batch_chunk(model, tok, prompts):
    client = client_for(model, tok, max_new_tokens=4, max_batch=3)
    reqs = [(prompts[0], 1.0)] * 7 + [(prompts[1], 0.0)] * 2
    outs = gather(client, reqs)
    assert client.runner.stats["calls"] == math.ceil(7 / 3) + 1
    assert len(outs) == 9
    # greedy answers to one prompt are identical
    assert outs[7].token_ids == outs[8].token_ids


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_prefix_sharing_changes_nothing_but_the_work(model, tok, prompts, temperature):
    """4 groups of K = 3 requests with one prompt each: prefilling each prompt once gives the
    same tokens (same seed) and log-probs as running every request's prompt in full."""
    reqs = [(p, temperature) for p in prompts[:4] for _ in range(3)]
    outs, clients = {}, {}
    for share in (True, False):
        torch.manual_seed(3)
        clients[share] = client_for(model, tok, max_new_tokens=MAX_NEW, share_prefix=share)
        outs[share] = gather(clients[share], reqs)
    assert clients[True].runner.stats["prefilled_prompts"] == 4 and clients[False].runner.stats["prefilled_prompts"] == 0
    assert [c.token_ids for c in outs[True]] == [c.token_ids for c in outs[False]]
    for a, b in zip(outs[True], outs[False]):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
    if temperature > 0:
        assert len({tuple(c.token_ids) for c in outs[True]}) > 4  # the K copies were sampled apart


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_decoding_draws_the_tokens_hf_generate_draws(model, tok, prompts, temperature):
    """Same seed, same prompts: the decoding loop (rows leaving the batch as they end) gives
    HF `generate`'s tokens, row for row, and the log-probs of its logits."""
    reqs = [p for p in prompts[:4] for _ in range(3)]
    width = max(len(p) for p in reqs)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in reqs])  # (B, P) left-padded
    torch.manual_seed(7)
    greedy = temperature == 0
    ref = model.generate(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), do_sample=not greedy,
                         temperature=None if greedy else temperature, top_k=None, top_p=None,
                         max_new_tokens=MAX_NEW, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         output_logits=True, return_dict_in_generate=True)
    ref_lp = torch.log_softmax(torch.stack(ref.logits, 1) / (1.0 if greedy else temperature), -1)  # (B, T, V)
    torch.manual_seed(7)
    client = client_for(model, tok, max_new_tokens=MAX_NEW, share_prefix=False)
    outs = client.runner.generate_batch(reqs, temperature)
    for b, c in enumerate(outs):
        n = len(c.token_ids)
        assert c.token_ids == ref.sequences[b, width:width + n].tolist()
        assert n == MAX_NEW or c.token_ids[-1] == tok.eos_token_id
        want = ref_lp[b, torch.arange(n), ref.sequences[b, width:width + n]]
        assert torch.allclose(torch.tensor(c.logprobs), want, atol=1e-4)
    if not greedy:  # answers of different lengths: rows left the batch early
        assert len({len(c.token_ids) for c in outs}) > 1


def test_rows_leave_the_batch_when_they_end(model, tok, prompts):
    """Each forward after the prefill runs only the rows still decoding; with EOS masked until
    max_new_tokens (min_new_tokens) every row runs to the end."""
    rows = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: rows.append(kw["input_ids"].shape[0]), with_kwargs=True)
    try:
        torch.manual_seed(2)
        client = client_for(model, tok, max_new_tokens=MAX_NEW)
        outs = client.runner.generate_batch([p for p in prompts[:4] for _ in range(4)], 1.0)
        lengths = sorted(len(c.token_ids) for c in outs)
        assert rows[0] == 4 and rows[1:] == sorted(rows[1:], reverse=True)  # U prompts prefilled, then B rows
        assert rows[1:] == [sum(n > t for n in lengths) for t in range(1, lengths[-1])]
        assert rows[-1] < 16
        rows.clear()
        client.runner.min_new_tokens = MAX_NEW
        outs = client.runner.generate_batch([p for p in prompts[:4] for _ in range(4)], 1.0)
        assert all(len(c.token_ids) == MAX_NEW for c in outs) and rows[1:] == [16] * (MAX_NEW - 1)
    finally:
        hook.remove()


def test_generation_errors_reach_every_caller_and_spare_other_calls(model, tok, prompts):
    """A decoding call that fails (a token id outside the vocabulary) raises its own error in every
    request it served; a call at another temperature in the same batch, and later calls, work."""
    client = client_for(model, tok, max_new_tokens=4)
    bad = [len(tok) + 100]  # out of the vocabulary: the embedding lookup fails

    async def go(reqs):
        return await asyncio.gather(*[client.generate(p, t) for p, t in reqs], return_exceptions=True)

    outs = asyncio.run(go([(bad, 1.0)] * 3 + [(prompts[0], 0.0)] * 2))
    errors, good = outs[:3], outs[3:]
    assert all(isinstance(e, IndexError) and "index out of range" in str(e) for e in errors), errors
    assert len({id(e) for e in errors}) == 1  # the one failure, reported to each of its callers
    assert all(isinstance(c, Completion) and c.token_ids for c in good)
    again = asyncio.run(go([(prompts[1], 0.0)]))
    assert isinstance(again[0], Completion) and client.runner.stats["calls"] == 2  # the failed call is not counted


# --- what a completion holds ----------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.0, 1.0, 1.5])
def test_completion_tokens_text_and_logprobs(model, tok, prompts, temperature):
    torch.manual_seed(1)
    client = client_for(model, tok, max_new_tokens=MAX_NEW)
    reqs = [(prompts[i % len(prompts)], temperature) for i in range(16)]
    outs = gather(client, reqs)
    assert client.runner.stats["calls"] == 1
    eos = tok.eos_token_id
    for c in outs:
        assert 1 <= len(c.token_ids) <= MAX_NEW
        assert len(c.logprobs) == len(c.token_ids)
        assert c.token_ids[-1] == eos or len(c.token_ids) == MAX_NEW  # EOS kept, nothing after it
        assert eos not in c.token_ids[:-1]
        assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
        assert all(lp <= 0 for lp in c.logprobs)
    if temperature >= 1.0:
        assert any(c.token_ids[-1] == eos for c in outs), "sampling should end some answers with EOS"
        assert len({tuple(c.token_ids) for c in outs}) > len(prompts)

    # the log-probs kept from generation equal a fresh forward pass on prompt + response at the
    # same temperature (greedy: T = 1), batched with right padding
    lp, mask, _ = response_logprobs(model, [p for p, _ in reqs], [c.token_ids for c in outs],
                                    [temperature] * len(outs), tok.pad_token_id)
    assert lp.shape == (len(outs), max(len(c.token_ids) for c in outs))
    for b, c in enumerate(outs):
        n = len(c.token_ids)
        assert mask[b].sum().item() == n and (mask[b, n:] == 0).all()
        assert torch.allclose(lp[b, :n], torch.tensor(c.logprobs), atol=1e-4), (b, lp[b, :n], c.logprobs)
    # sanity: the log-probs are far from uniform, so a position or padding error would show
    kept = torch.tensor([x for c in outs for x in c.logprobs])
    assert kept.std() > 0.1 or temperature == 0.0
    if temperature == 0.0:  # greedy picks the argmax: the most likely token at each step
        assert (kept > -math.log(len(tok))).all()


def test_recompute_temperature_scaling(model, tok, prompts):
    """Per-sample temperatures in one batch: each row is scaled by its own temperature."""
    resp = [[5, 6, 7, tok.eos_token_id]] * 3
    ps = prompts[:3]
    mixed, _, _ = response_logprobs(model, ps, resp, [0.0, 1.0, 2.0], tok.pad_token_id)
    for b, t in enumerate([1.0, 1.0, 2.0]):
        alone, _, _ = response_logprobs(model, [ps[b]], [resp[b]], [t], tok.pad_token_id)
        assert torch.allclose(mixed[b], alone[0], atol=1e-5)
    hot, _, _ = response_logprobs(model, ps[2:3], resp[2:3], [1.0], tok.pad_token_id)
    assert not torch.allclose(mixed[2], hot[0], atol=1e-3)


@pytest.mark.parametrize("long_group", [False, True])
def test_shared_prefix_equals_full_sequences_in_value_and_gradient(tok, prompts, long_group):
    """Groups of K samples sharing a prompt (prompts of different lengths, responses of different
    lengths, shuffled): running each prompt once with its responses packed after it must give
    the same log-probs, entropies and gradients as running every full sequence. With one long
    group, the short ones share rows (the tree mask must keep groups apart)."""
    model = tiny_model(tok, seed=3)
    rng = random.Random(0)
    ps, rs = [], []
    for i, p in enumerate(prompts):
        for _ in range(3):  # K = 3
            ps.append(p)
            m = rng.randint(60, 80) if long_group and i == 0 else rng.randint(1, 6)
            rs.append([rng.randrange(3, len(tok)) for _ in range(m)] + [tok.eos_token_id])
    order = list(range(len(ps)))
    rng.shuffle(order)
    ps, rs = [ps[i] for i in order], [rs[i] for i in order]
    temps = [rng.choice([0.0, 0.7, 1.0]) for _ in ps]
    rows = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: rows.append(kw["input_ids"].shape[0]), with_kwargs=True)
    out = {}
    for share in (False, True):
        model.zero_grad()
        lp, mask, ent = response_logprobs(model, ps, rs, temps, tok.pad_token_id, with_entropy=True,
                                          share_prefix=share)
        (lp.sum() + ent.sum()).backward()
        out[share] = lp.detach(), mask, ent.detach(), [q.grad.clone() for q in model.parameters()]
    hook.remove()
    assert rows[0] == len(ps) and rows[1] < len(prompts) if long_group else rows[1] == len(prompts)
    assert torch.equal(out[True][1], out[False][1])
    assert torch.allclose(out[True][0], out[False][0], atol=1e-5)
    assert torch.allclose(out[True][2], out[False][2], atol=1e-5)
    for g_shared, g_full in zip(out[True][3], out[False][3]):  # float32 sums in another order
        assert (g_shared - g_full).norm() <= 1e-4 * g_full.norm() + 1e-6


def test_entropy_matches_distribution(model, tok, prompts):
    resp = [[5, 6, tok.eos_token_id], [7, tok.eos_token_id]]
    lp, mask, ent = response_logprobs(model, prompts[:2], resp, [1.0, 1.0], tok.pad_token_id, with_entropy=True)
    assert ent.shape == lp.shape and (ent[mask == 0] == 0).all()
    assert ((ent[mask > 0] > 0) & (ent[mask > 0] <= math.log(len(tok)) + 1e-5)).all()


# --- update_policy -------------------------------------------------------------------------

OPTIM = OptimSpec(lr=1e-3, weight_decay=0.0, schedule="cosine", warmup_steps=0, total_steps=10)
SPEC = UpdateSpec(mini_batch=64, micro_batch=8)
KL_SPEC = UpdateSpec(mini_batch=64, micro_batch=8, kl_coef=0.1, entropy_coef=0.01)


def policy_for(tok, seed, spec=SPEC):
    return FullPolicy("shared", tiny_model(tok, seed=seed), tok.pad_token_id, OPTIM, reference=spec.kl_coef > 0)


def samples_from(policy, tok, prompts, temperature=1.0, n=20, advantage=None):
    torch.manual_seed(2)
    reqs = [(prompts[i % len(prompts)], temperature) for i in range(n)]
    outs = gather(client_for(policy.module, tok), reqs)
    out = []
    for i, ((p, t), c) in enumerate(zip(reqs, outs)):
        s = Sample(problem_id=f"p{i % 3}", turn=0, role="plan", policy=policy.name, candidate=i,
                   prompt="", response=c.text, prompt_ids=p, response_ids=c.token_ids,
                   logprobs=c.logprobs, temperature=t, reward=0.0, local=0.0, team=0.0,
                   parse_ok=True, chosen=False, group_id=f"p{i % 3}")
        out.append(TrainSample(s, (1.0 if i % 2 == 0 else -1.0) if advantage is None else advantage))
    return out


def objective(policy, batch):
    """sum_b A_b * sum_t log p(token) / N: what the policy-gradient step increases."""
    with torch.no_grad():
        lp, mask, _ = response_logprobs(policy.module, [x.sample.prompt_ids for x in batch],
                                        [x.sample.response_ids for x in batch],
                                        [x.sample.temperature for x in batch], policy.pad_id)
    adv = torch.tensor([x.advantage for x in batch])
    return ((lp * mask).sum(-1) * adv).sum().item() / mask.sum().item()


@pytest.mark.parametrize("spec", [SPEC, KL_SPEC], ids=["pg", "kl+entropy"])
def test_update_policy_changes_weights_in_the_advantage_direction(tok, prompts, spec):
    policy = policy_for(tok, 3, spec)
    assert (policy.ref_model is not None) == (spec.kl_coef > 0)
    batch = samples_from(policy, tok, prompts)
    before = copy.deepcopy(policy.module.state_dict())
    j0 = objective(policy, batch)
    m = update_policy(policy, batch, spec, random.Random(0))
    after = policy.module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert m and all(math.isfinite(v) for v in m.values()), m
    for key in ("train/pg_loss", "train/clipfrac", "train/ppo_kl", "train/grad_norm", "train/lr"):
        assert key in m
    # one epoch, one mini-batch: every micro-batch sees the pre-update weights, ratio exactly 1
    assert m["train/ppo_kl"] == pytest.approx(0.0, abs=1e-6) and m["train/clipfrac"] == 0.0
    # at ratio 1 the pg loss is -(token-mean advantage) over the mini-batch
    n = sum(len(x.sample.response_ids) for x in batch)
    assert m["train/pg_loss"] == pytest.approx(-sum(x.advantage * len(x.sample.response_ids) for x in batch) / n,
                                               abs=1e-5)
    assert m["train/grad_norm"] > 0
    assert 0 < m["train/lr"] < OPTIM.lr  # cosine schedule stepped once
    if spec.kl_coef > 0:
        assert "train/kl" in m and "train/entropy" in m and m["train/entropy"] > 0
        assert all(torch.equal(p, before[k]) for k, p in policy.ref_model.state_dict().items())
    assert objective(policy, batch) > j0  # positive-advantage responses became likelier
    assert not policy.module.training


@pytest.mark.parametrize("spec", [SPEC, KL_SPEC], ids=["pg", "kl+entropy"])
def test_on_policy_update_reusing_the_training_forward_equals_recomputing_old_logprobs(tok, prompts, spec, monkeypatch):
    """One epoch, one mini-batch: `auto` takes the old log-probs from the training forward instead
    of a separate pass; the update (weights, metrics) is the one the separate pass gives."""
    import marl.engine.local.update as local_update

    results, old_passes = {}, []  # no-grad passes of the policy itself (the reference's are not counted)

    def counted(model, *args, **kw):
        if not torch.is_grad_enabled() and model is policy.module:
            old_passes.append(mode)
        return response_logprobs(model, *args, **kw)

    monkeypatch.setattr(local_update, "response_logprobs", counted)
    for mode in ("auto", "recompute"):
        s = UpdateSpec(**{**spec.__dict__, "old_logprob": mode})
        policy = policy_for(tok, 5, s)
        m = update_policy(policy, samples_from(policy, tok, prompts), s, random.Random(0))
        results[mode] = (m, policy.module.state_dict())
    (m_a, w_a), (m_r, w_r) = results["auto"], results["recompute"]
    assert "auto" not in old_passes and "recompute" in old_passes  # the separate pass was skipped
    for k in w_a:
        torch.testing.assert_close(w_a[k], w_r[k], atol=1e-6, rtol=1e-5)
    for k in ("train/pg_loss", "train/grad_norm", "train/ppo_kl", "train/clipfrac"):
        assert m_a[k] == pytest.approx(m_r[k], abs=1e-5), k


def test_several_mini_batches_recompute_old_logprobs_and_bad_mode_is_refused(tok, prompts):
    spec = UpdateSpec(mini_batch=5, micro_batch=5)  # 20 samples: 4 optimizer steps
    policy = policy_for(tok, 6, spec)
    m = update_policy(policy, samples_from(policy, tok, prompts), spec, random.Random(0))
    assert m["train/ppo_kl"] != 0.0  # later mini-batches see moved weights against the true old ones
    with pytest.raises(ValueError, match="old_logprob.*allowed: auto, recompute"):
        UpdateSpec(old_logprob="never")


def test_update_metrics_are_token_means_of_each_mini_batch_whatever_the_micro_batch_split(tok, prompts):
    """Micro-batches of 3 and of 64 samples: the same update, so the same metrics (clip fraction,
    KL estimate, entropy and KL terms as token means of each mini-batch, averaged over mini-batches)."""
    results = []
    for micro in (3, 64):
        spec = UpdateSpec(mini_batch=10, micro_batch=micro, ppo_epochs=2, kl_coef=0.1, entropy_coef=0.01)
        policy = policy_for(tok, 7, spec)
        policy.optimizer.param_groups[0]["lr"] = 0.05  # large steps: later mini-batches clip
        results.append(update_policy(policy, samples_from(policy, tok, prompts), spec, random.Random(0)))
    split, whole = results
    assert whole["train/clipfrac"] > 0  # something to weigh
    for k in ("train/pg_loss", "train/clipfrac", "train/ppo_kl", "train/entropy", "train/kl", "train/grad_norm"):
        assert split[k] == pytest.approx(whole[k], rel=1e-4, abs=1e-6), k


def test_update_policy_noop_with_zero_advantages(tok, prompts):
    policy = policy_for(tok, 4)
    batch = samples_from(policy, tok, prompts, n=8, advantage=0.0)
    before = copy.deepcopy(policy.module.state_dict())
    m = update_policy(policy, batch, SPEC, random.Random(0))
    assert m["train/grad_norm"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in policy.module.state_dict().items())
