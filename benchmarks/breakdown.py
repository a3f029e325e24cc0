"""Time breakdown of a training step, from the `timing/...` metrics every run logs.

    python benchmarks/breakdown.py <run dir> [<run dir> ...]

Per key, the median over the run's training steps (evaluation: over the steps that evaluated),
and its share of the median step. `timing/update` includes `timing/old_logprob` (recomputing
the pre-update log-probs); `timing/rollout` = `timing/generate` + `timing/env_and_tools`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, save, table  # noqa: E402

KEYS = ["timing/generate", "timing/env_and_tools", "timing/rollout", "timing/advantage", "timing/old_logprob",
        "timing/update", "timing/log", "timing/eval", "timing/step"]


def breakdown(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "timing/step" in r]
    return {k: median([r[k] for r in rows if k in r]) for k in KEYS if any(k in r for r in rows)}


def main():
    out = {}
    for d in sys.argv[1:]:
        out[d] = b = breakdown(Path(d))
        step = b["timing/step"]
        print(f"{d}: median over {len(b)} keys")
        print(table([[k, v, f"{100 * v / step:.0f}%"] for k, v in b.items()], ["key", "seconds (median)", "of step"]))
    print(f"wrote {save('breakdown', out)}")


if __name__ == "__main__":
    main()
