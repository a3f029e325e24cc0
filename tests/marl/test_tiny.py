"""The tiny model's build: sequence packing for SFT gives exactly the loss of the sequences taken
one by one (attention never crosses a packed boundary), the cache key ignores build speed, and
the warm-start demonstrations cover every harness and mix oracle and naive targets as asked."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen3Config, Qwen3ForCausalLM

from marl import tiny
from marl.tiny import cache_key, demonstrations, pack

PAD = 0


def model(seed=0):
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=20, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=64,
                      pad_token_id=PAD, eos_token_id=1, bos_token_id=1, tie_word_embeddings=True,
                      initializer_range=0.4)
    return Qwen3ForCausalLM(cfg).eval()


def random_pairs(n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p, r = torch.randint(2, 9, (2,), generator=g).tolist()
        out.append((torch.randint(2, 20, (p,), generator=g).tolist(), torch.randint(2, 20, (r,), generator=g).tolist()))
    return out


def one_by_one_loss(m, data):
    """Summed response-token cross-entropy, each sequence in a batch of its own."""
    total = 0.0
    for p, r in data:
        logits = m(input_ids=torch.tensor([p + r])).logits[0]  # (L, V)
        total += F.cross_entropy(logits[len(p) - 1:-1], torch.tensor(r), reduction="sum").item()
    return total


@pytest.mark.parametrize("width", [17, 24, 64])
def test_packed_loss_equals_one_by_one(width):
    m, data = model(), random_pairs(12, seed=width)
    ids, labels, pos = pack(data, width, PAD)
    assert ids.shape[1] <= width and ids.shape[0] < len(data)  # several sequences share a row
    assert (labels != -100).sum().item() == sum(len(r) for _, r in data)  # every target, once
    with torch.no_grad():
        logits = m(input_ids=ids, position_ids=pos, use_cache=False).logits  # (rows, W, V)
    packed = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                             reduction="sum").item()
    assert packed == pytest.approx(one_by_one_loss(m, data), rel=1e-5)


def test_pack_rejects_a_sequence_longer_than_a_row():
    with pytest.raises(ValueError, match="does not fit a row of 4"):
        pack([([2, 3, 4], [5, 6])], 4, PAD)


def test_cache_key_ignores_threads_only():
    spec = {"seed": 0, "sft": {"steps": 10, "threads": 1}}
    assert cache_key(spec) == cache_key({**spec, "sft": {"steps": 10, "threads": 2}})
    assert cache_key(spec) != cache_key({**spec, "sft": {"steps": 11, "threads": 1}})


@pytest.mark.parametrize("what, value", [("torch", "2.12.0+cpu"), ("transformers", "5.9.0"), ("cpu_kernels", "AVX2")])
def test_cache_key_changes_with_the_numerics_of_another_machine(monkeypatch, what, value):
    """A cache built under another torch, transformers or CPU kernel path (AVX2 vs AVX-512) has
    other numbers: its key differs, so it is rebuilt rather than silently reused."""
    spec = {"model": {"hidden_size": 8}, "sft": {"steps": 10}}
    here = tiny.numerics()
    assert here["cpu_kernels"] == torch.backends.cpu.get_cpu_capability() and here["torch"] == torch.__version__
    key = cache_key(spec)
    monkeypatch.setattr(tiny, "numerics", lambda: {**here, what: value})
    assert cache_key(spec) != key


@pytest.mark.parametrize("task_name", __import__("envs").registered())
def test_demonstrations_cover_every_harness_and_stop_at_dead_ends(task_name):
    """Warm-start data of every task: targets parse, both harnesses and all roles appear, and an
    episode that reaches a dead end (a naive Sokoban push into a corner) ends there, not in a crash."""
    import envs
    from roles import harness_names, make_harness

    task = envs.make(task_name)
    hs = [make_harness(task, n) for n in harness_names(task_name)]
    pairs = list(demonstrations(hs, range(300), noise=0.15, seed=0, oracle_frac=0.5))
    def cue(r):  # the line a role's prompt ends with
        known = {"plan": "plan:", "coder": "program:", "tester": "tests:", "reasoner": "answer:"}
        # a planning tool agent's prompt ends with its tool's name; the maths tool agent's with "program:"
        return known.get(r.name) or (f"{r.tool}:" if hasattr(r, "tool") else "program:")

    assert {p.rsplit("\n", 1)[-1] for p, _ in pairs} == {cue(r) for h in hs for r in h.roles}
    parsers = {cue(r): r.parse for h in hs for r in h.roles}
    assert all(parsers[p.rsplit("\n", 1)[-1]](t).ok for p, t in pairs)


def test_demonstrations_mix_oracle_and_naive_targets_in_proportion():
    """oracle_frac=1 gives only oracle targets; 0 only naive ones; 0.5 about half of each where
    the two differ."""
    import envs
    from roles import make_harness

    task = envs.make("planpath")
    hs = [make_harness(task, "mas"), make_harness(task, "single")]

    def shares(frac):
        oracle = naive = 0
        by_prompt = {}
        for h in hs:
            for i in range(40):  # replay each harness's demonstrations to classify targets
                state = h.reset(h.task.instance("train", i))
                for name in h.role_names:
                    by_prompt[h.prompt(state, name)] = (h.role(name).demo(state), h.role(name).naive(state))
        for p, r in demonstrations(hs, range(40), 0.0, 0, oracle_frac=frac):
            if p in by_prompt and by_prompt[p][0] != by_prompt[p][1]:
                oracle += r == by_prompt[p][0]
                naive += r == by_prompt[p][1]
        return oracle, naive

    o1, n1 = shares(1.0)
    o0, n0 = shares(0.0)
    oh, nh = shares(0.5)
    assert n1 == 0 and o1 > 20 and o0 == 0 and n0 > 20
    assert 0.3 < oh / (oh + nh) < 0.7
