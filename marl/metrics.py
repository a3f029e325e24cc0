"""The trainer's metric rows, namespaced: `train/`, `role/<name>/`, `eval/<harness>/<split>/`,
`timing/`, `system/` (the advantage's own `adv/` come from marl.advantage)."""
from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import torch

_PEAK_MB = [0.0]  # the process's peak so far: resetting the high-water mark resets ru_maxrss too


def memory_mb() -> dict[str, float]:
    """Resident memory: the process's peak so far (it can only rise), the current one, and the
    peak since the previous call (`step_peak`: Linux lets a process reset its high-water mark, so
    a leak shows as a trend in it, while one large step stays one point)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out = {}
    status = Path("/proc/self/status")
    if status.exists():
        kb = {k: int(v.split()[0]) for k, v in (l.split(":", 1) for l in status.read_text().splitlines())
              if k in ("VmRSS", "VmHWM")}
        out["system/rss_mb"] = kb["VmRSS"] / 1024
        try:
            Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM (and ru_maxrss) to the current RSS
            out["system/step_peak_rss_mb"] = peak = kb["VmHWM"] / 1024
        except OSError:  # not allowed here (some containers): ru_maxrss still holds the overall peak
            pass
    _PEAK_MB[0] = max(_PEAK_MB[0], peak)
    out["system/peak_rss_mb"] = _PEAK_MB[0]
    return out


def rollout_metrics(samples, episodes, role_names: list[str]) -> dict[str, float]:
    """train/ and role/<name>/ figures of one step's rollouts."""
    out = {"train/success": float(np.mean([e.solved for e in episodes])),
           # float32, as the advantage sees them; a step of no samples (every episode ended on its
           # first prompt, over the budget): 0, as role/ has
           "train/reward": float(torch.tensor([s.reward for s in samples]).mean()) if samples else 0.0,
           "train/parse_fail_rate": float(np.mean([not s.parse_ok for s in samples])) if samples else 0.0,
           "train/mean_turns": float(np.mean([e.turns for e in episodes])),
           "train/samples": float(len(samples)),
           "train/response_tokens": float(sum(len(s.response_ids) for s in samples)),
           # episodes that ended on a prompt over the engine's budget (marl.rollout), by whose prompt it was
           "train/prompt_overflow": float(sum(e.overflow is not None for e in episodes))}
    for role in role_names:
        rs = [s for s in samples if s.role == role]
        out[f"role/{role}/reward"] = float(np.mean([s.reward for s in rs])) if rs else 0.0
        out[f"role/{role}/parse_fail_rate"] = float(np.mean([not s.parse_ok for s in rs])) if rs else 0.0
        out[f"role/{role}/prompt_overflow"] = float(sum(e.overflow is not None and e.overflow.role == role
                                                        for e in episodes))
    return out


def merge_updates(per_policy: dict[str, dict[str, float]], shared: bool) -> dict[str, float]:
    """One row from each policy's update metrics: timings add up over policies; the rest is kept
    as it is for one shared policy, and per policy (`role/<id>/...`) otherwise."""
    out: dict[str, float] = {}
    for name, m in per_policy.items():
        for k, v in m.items():
            if k.startswith("timing/"):
                out[k] = out.get(k, 0.0) + v
            else:
                out[k if shared else f"role/{name}/" + k.split("/", 1)[1]] = v
    return out


def eval_metrics(results: dict, split: str) -> dict[str, float]:
    """{harness: summary} -> eval/<harness>/<split>/<key>."""
    return {f"eval/{h}/{split}/{k}": v for h, r in results.items() for k, v in r.items()}
