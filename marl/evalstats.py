"""The statistics of marl.evaluate, as pure functions over per-problem outcomes.

P problems, S samples (episodes) per problem. A harness's per-problem success rate is the share of
its S episodes solved; the paired harness effect compares two harnesses on the same P problems.
"""
from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c succeeded: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sound near 0 and 1, unlike p +- 2se)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def success_interval(solved: list[int], samples: int) -> tuple[float, float]:
    """95% interval of the success rate from `solved[p]` episodes solved of `samples` per problem
    (P,): Wilson's for one sample each; else a normal interval over the problems' rates (the
    problems, not the correlated episodes of one problem, are the independent units)."""
    n = len(solved)
    if samples == 1:
        return wilson(sum(solved), n)
    rates = [c / samples for c in solved]
    mean = sum(rates) / max(n, 1)
    sd = math.sqrt(sum((r - mean) ** 2 for r in rates) / max(n - 1, 1))
    half = 1.96 * sd / math.sqrt(max(n, 1))
    return max(0.0, mean - half), min(1.0, mean + half)


def pass_at_ks(solved: list[int], samples: int) -> dict[str, float]:
    """{"pass@k": mean over problems} for k = 1, 2, 4, ... <= samples."""
    out, k = {}, 1
    while k <= samples:
        out[f"pass@{k}"] = sum(pass_at_k(samples, c, k) for c in solved) / max(len(solved), 1)
        k *= 2
    return out


def mcnemar_exact(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs (`wins` + `losses`) under H0 split
    Binomial(wins + losses, 1/2)."""
    m = wins + losses
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(wins, losses) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def paired_effect(base: list[float], other: list[float], seed: int,
                  resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, dict]:
    """`other` minus `base` on the same problems. base, other: per-problem success rates (P,).

    Returns (difference of the mean success rates, metrics): its 95% interval by the paired
    percentile bootstrap over problems (`resamples` draws of P problems with replacement, from
    `seed`); `wins` / `losses`: problems where `other`'s rate is higher / lower (with one sample:
    solved by one harness and not the other); and, where every rate is 0 or 1, the exact McNemar
    p-value of those discordant pairs."""
    a, b = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_effect needs two equal, non-empty lists of per-problem rates; got {a.shape}, {b.shape}")
    d = b - a                                                                       # (P,)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(resamples, d.size))                         # (resamples, P)
    means = d[idx].mean(axis=1)                                                     # (resamples,)
    lo, hi = np.quantile(means, [0.025, 0.975])
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    metrics = {"ci95": [float(lo), float(hi)], "problems": int(d.size), "wins": wins, "losses": losses,
               "interval": f"paired percentile bootstrap over problems ({resamples} resamples, seed {seed})",
               "mcnemar_p": mcnemar_exact(wins, losses) if binary else None}
    return float(d.mean()), metrics
