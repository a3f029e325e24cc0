"""marl.loss.ppo_loss: micro-batch invariance of the gradient, the value at ratio 1, clipping,
and the KL and entropy terms."""
import pytest
import torch

from marl.loss import ppo_loss

VOCAB, DIM = 7, 5


class LinearPolicy(torch.nn.Module):
    """logits = W x for each response position; log p of the response's own tokens."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(DIM, VOCAB)

    def logprobs(self, feats: list[torch.Tensor], tokens: list[torch.Tensor]):
        """feats[b]: (L_b, DIM), tokens[b]: (L_b,). Returns logprob, entropy, mask, all (B, T)
        right-padded to this batch's own longest response."""
        T = max(len(t) for t in tokens)
        mask = torch.zeros(len(tokens), T)
        rows_lp, rows_ent = [], []
        for b, (x, y) in enumerate(zip(feats, tokens)):
            logp = torch.log_softmax(self.proj(x), dim=-1)  # (L_b, V)
            pad = T - len(y)
            rows_lp.append(torch.nn.functional.pad(logp.gather(-1, y[:, None]).squeeze(-1), (0, pad)))
            rows_ent.append(torch.nn.functional.pad(-(logp.exp() * logp).sum(-1), (0, pad)))
            mask[b, :len(y)] = 1
        return torch.stack(rows_lp), torch.stack(rows_ent), mask


def make_batch(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 9, (n,), generator=g).tolist()
    feats = [torch.randn(L, DIM, generator=g) for L in lengths]
    tokens = [torch.randint(0, VOCAB, (L,), generator=g) for L in lengths]
    adv = torch.randn(n, generator=g)
    # behaviour policy: the current one, shifted per token, so some ratios leave [0.8, 1.2]
    shifts = [0.4 * torch.randn(L, generator=g) for L in lengths]
    return feats, tokens, adv, shifts


def grads_for_split(split, *, kl=False, ent=False, seed=0):
    torch.manual_seed(123)
    pol = LinearPolicy()
    feats, tokens, adv, shifts = make_batch(seed)
    n_tokens = sum(len(t) for t in tokens)
    i = 0
    total = 0.0
    clipfracs = []
    for size in split:
        sl = slice(i, i + size)
        i += size
        lp, entropy, mask = pol.logprobs(feats[sl], tokens[sl])
        T = lp.shape[1]
        old = lp.detach() + torch.stack([torch.nn.functional.pad(s, (0, T - len(s))) for s in shifts[sl]]) * mask
        ref = (lp.detach() - 0.3 * mask) if kl else None
        loss, m = ppo_loss(lp, old, adv[sl], mask, n_tokens, clip=0.2,
                           entropy=entropy if ent else None, entropy_coef=0.01 if ent else 0.0,
                           ref_logprob=ref, kl_coef=0.1 if kl else 0.0)
        loss.backward()
        total += loss.item()
        clipfracs.append(m["train/clipfrac"])
    assert i == len(tokens)
    return [p.grad.clone() for p in pol.parameters()], total, clipfracs


@pytest.mark.parametrize("terms", [{}, {"kl": True}, {"ent": True}, {"kl": True, "ent": True}],
                         ids=["pg", "kl", "entropy", "kl+entropy"])
def test_gradient_independent_of_micro_batch_split(terms):
    full, full_loss, clipfracs = grads_for_split([12], **terms)
    assert 0 < clipfracs[0] < 1, "the test batch should clip some tokens and not others"
    assert all(g.abs().sum() > 0 for g in full)
    for split in ([4, 4, 4], [5, 7], [1] * 12, [11, 1]):
        grads, loss, _ = grads_for_split(split, **terms)
        for a, b in zip(full, grads):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), (split, (a - b).abs().max())
        assert loss == pytest.approx(full_loss, abs=1e-6)


def test_per_micro_batch_normalisation_would_differ():
    """Sanity of the test above: normalising each micro-batch by its own token count (the bug
    it guards against) gives different gradients for this batch."""
    torch.manual_seed(123)
    pol = LinearPolicy()
    feats, tokens, adv, _ = make_batch(0)
    for split in ([12], [5, 7]):
        pol.zero_grad()
        i = 0
        for size in split:
            sl = slice(i, i + size)
            i += size
            lp, _, mask = pol.logprobs(feats[sl], tokens[sl])
            loss, _ = ppo_loss(lp, lp.detach(), adv[sl], mask, int(mask.sum()))
            loss.backward()
        if split == [12]:
            ref = pol.proj.weight.grad.clone()
    assert not torch.allclose(ref, pol.proj.weight.grad, atol=1e-4)


def test_ratio_one_loss_is_minus_token_mean_advantage():
    feats, tokens, adv, _ = make_batch(3)
    pol = LinearPolicy()
    lp, _, mask = pol.logprobs(feats, tokens)
    lengths = [len(t) for t in tokens]
    n = sum(lengths)
    loss, m = ppo_loss(lp, lp.detach(), adv, mask, n)
    expected = -sum(a * L for a, L in zip(adv.tolist(), lengths)) / n
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert m["train/pg_loss"] == pytest.approx(expected, abs=1e-6)
    assert m["train/clipfrac"] == 0.0 and m["train/ppo_kl"] == pytest.approx(0.0, abs=1e-7)
    # a micro-batch's share: the same sums over the mini-batch token count
    part, _ = ppo_loss(lp[:5], lp[:5].detach(), adv[:5], mask[:5], n)
    assert part.item() == pytest.approx(-sum(a * L for a, L in zip(adv[:5].tolist(), lengths[:5])) / n, abs=1e-6)
    # padding positions do not count, whatever the values there
    junk = lp.detach() + (1 - mask) * 5.0
    loss2, _ = ppo_loss(lp + (1 - mask) * 3.0, junk, adv, mask, n)
    assert loss2.item() == pytest.approx(expected, abs=1e-6)


def test_clipping_gradients():
    """d loss / d logprob per token: -A * r / N inside the trust region; zero where the clipped
    term is the pessimistic one (A > 0 and r > 1.2, A < 0 and r < 0.8); PPO keeps the gradient
    where leaving the region makes the objective worse (A > 0 and r < 0.8, A < 0 and r > 1.2)."""
    ratios = torch.tensor([[1.5, 1.25, 0.7, 0.5, 1.0, 1.1, 0.9]])
    n = ratios.shape[1]
    mask = torch.ones_like(ratios)
    old = torch.full_like(ratios, -1.0)
    for a, zero_where in [(1.0, ratios > 1.2), (-1.0, ratios < 0.8)]:
        lp = (old + ratios.log()).clone().requires_grad_(True)
        loss, m = ppo_loss(lp, old, torch.tensor([a]), mask, n, clip=0.2)
        loss.backward()
        g = lp.grad
        expected = torch.where(zero_where, torch.zeros_like(ratios), -a * ratios / n)
        assert torch.allclose(g, expected, atol=1e-6), (a, g, expected)
        assert (g[zero_where] == 0).all() and (g[~zero_where] != 0).all()
        assert m["train/clipfrac"] == pytest.approx(zero_where.float().mean().item())
        # loss value: -A * clip(r) where clipped, else -A * r
        value = torch.where(zero_where, ratios.clamp(0.8, 1.2), ratios)
        assert loss.item() == pytest.approx((-a * value).mean().item(), abs=1e-6)


def test_clip_parameter_is_used():
    ratios = torch.tensor([[1.3]])
    old = torch.zeros_like(ratios)
    for clip, zero in [(0.2, True), (0.5, False)]:
        lp = (old + ratios.log()).clone().requires_grad_(True)
        loss, _ = ppo_loss(lp, old, torch.tensor([1.0]), torch.ones_like(ratios), 1, clip=clip)
        loss.backward()
        assert (lp.grad.abs().sum() == 0) == zero


def test_entropy_term_needs_entropies():
    lp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="entrop"):
        ppo_loss(lp, lp, torch.ones(2), torch.ones(2, 3), 6, entropy_coef=0.01)


def test_kl_term_needs_reference():
    lp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="reference"):
        ppo_loss(lp, lp, torch.ones(2), torch.ones(2, 3), 6, kl_coef=0.1)


def test_entropy_bonus_lowers_loss_and_rewards_entropy():
    g = torch.Generator().manual_seed(5)
    lp = -torch.rand(3, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float)
    adv = torch.tensor([0.5, -1.0, 2.0])
    n = int(mask.sum())
    ent = (torch.rand(3, 4, generator=g) + 0.1).requires_grad_(True)
    base, _ = ppo_loss(lp, lp, adv, mask, n)
    loss, m = ppo_loss(lp, lp, adv, mask, n, entropy=ent, entropy_coef=0.05)
    mean_ent = (ent.detach() * mask).sum() / n
    assert loss.item() == pytest.approx(base.item() - 0.05 * mean_ent.item(), abs=1e-6)
    assert loss.item() < base.item()
    assert m["train/entropy"] == pytest.approx(mean_ent.item(), abs=1e-6)
    loss.backward()
    # descending the loss raises entropy on response tokens; padding gets no gradient
    assert torch.allclose(ent.grad, -0.05 * mask / n)
    # coefficient 0 ignores the entropies entirely
    same, m0 = ppo_loss(lp, lp, adv, mask, n, entropy=ent, entropy_coef=0.0)
    assert same.item() == pytest.approx(base.item()) and "train/entropy" not in m0


@pytest.mark.parametrize("kl_type", ["low_var_kl", "k1", "k2"])
def test_kl_penalty_raises_loss_and_pulls_towards_reference(kl_type):
    g = torch.Generator().manual_seed(6)
    ref = -torch.rand(3, 4, generator=g) - 0.5
    delta = torch.tensor([[0.3, -0.4, 0.2, 0.0], [0.5, -0.1, 0.0, 0.0], [-0.3, 0.3, 0.1, -0.2]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float)
    n = int(mask.sum())
    adv = torch.zeros(3)
    lp = (ref + delta).requires_grad_(True)
    base, _ = ppo_loss(lp, lp.detach(), adv, mask, n)
    loss, m = ppo_loss(lp, lp.detach(), adv, mask, n, ref_logprob=ref, kl_coef=0.1, kl_type=kl_type)
    assert m["train/kl"] != 0.0
    if kl_type != "k1":  # k1 is signed; k2 and k3 are >= 0
        assert loss.item() > base.item() and m["train/kl"] > 0
    assert loss.item() == pytest.approx(base.item() + 0.1 * m["train/kl"], abs=1e-6)
    loss.backward()
    on = (mask > 0) & (delta != 0)
    # gradient descent moves each token's log-prob towards the reference's
    if kl_type != "k1":
        assert (torch.sign(lp.grad[on]) == torch.sign(delta[on])).all(), lp.grad
    assert (lp.grad[mask == 0] == 0).all()
    # at the reference the penalty vanishes
    at_ref, m_ref = ppo_loss(ref, ref, adv, mask, n, ref_logprob=ref, kl_coef=0.1, kl_type=kl_type)
    assert m_ref["train/kl"] == pytest.approx(0.0, abs=1e-7) and at_ref.item() == pytest.approx(0.0, abs=1e-7)
