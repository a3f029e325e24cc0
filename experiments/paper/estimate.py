"""The compute of a full main table, estimated from a short run of it (a few training steps per cell).

    python -m experiments.paper model=qwen3_1.7b engine=verl ... seeds=[0] train.steps=5 out=<short>
    python -m experiments.paper.estimate <short> --steps 200 [--seeds 3]
    python -m experiments.paper.estimate <short> --steps planning=60,code=100,... [--seeds 3]

A trained cell's wall time is split by its marl.train metrics.jsonl into
    fixed      = wall - sum(timing/step) - the warm start's evaluation   (build, final test, saves)
    per step   = median over steps of timing/step - timing/eval         (rollout, advantage, update, sync)
    per eval   = median of the validations' timing/eval
and extrapolated to `steps`: fixed + warm-start eval + steps x per step + evals(steps) x per eval,
where evals(steps) counts the validations marl.train runs (every train.eval_every and the last).
Tokens generated and training samples scale with the median step's. An untrained cell costs what
it cost (one evaluation, whatever the steps). `--seeds S` multiplies the trained cells' estimate by
S / (the seeds the short run has). Writes `<short>/estimate_main.md`.

What it cannot see: a policy's responses change length as it trains (the short run's first steps
stand for all), and checkpoint saves beyond the short run's are not counted (marl saves every
train.checkpoint_every steps; on a large model a save is seconds to minutes).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from experiments.paper.table import LABELS, ROWS, load_cells
from marl import runs
from marl.io import atomic_write_text, read_jsonl


def n_evals(steps: int, every: int) -> int:
    """How many validations marl.train runs in `steps` steps: at every `every`-th and at the last."""
    return steps // every + (steps % every != 0)


def extrapolate(cell: dict, cell_dir: Path, steps: int) -> dict:
    """One trained cell's estimate at `steps` steps from its short run (module docstring)."""
    if cell["compute"].get("attempts", 1) > 1:  # its wall time is the last attempt's, its metrics all of them
        raise ValueError(f"{cell_dir}: a resumed cell ({cell['compute']['attempts']} attempts) cannot be split into "
                         "fixed and per-step time; rerun the short run in a fresh out= directory")
    rows = read_jsonl(cell_dir / "metrics.jsonl")
    stepped = [r for r in rows if "timing/step" in r]
    if not stepped:
        raise ValueError(f"{cell_dir}: no finished training step in metrics.jsonl; the short run needs at least one")
    warm = sum(r["timing/eval"] for r in rows if r.get("step", -1) == 0 and "timing/eval" in r)
    train_s = [r["timing/step"] - r.get("timing/eval", 0.0) for r in stepped]
    evals = [r["timing/eval"] for r in stepped if "timing/eval" in r]
    wall = cell["compute"]["wall_s"]
    fixed = wall - sum(r["timing/step"] for r in stepped) - warm
    per_step, per_eval = statistics.median(train_s), statistics.median(evals) if evals else 0.0
    every = runs.saved_config(cell_dir)["train"]["eval_every"]
    est = fixed + warm + steps * per_step + n_evals(steps, every) * per_eval
    scale = cell["compute"]["devices"] / 3600
    per = lambda key: statistics.median(r.get(key, 0) for r in stepped)  # noqa: E731
    return {"row": cell["row"], "task": cell["task"], "seed": cell["seed"], "short_steps": len(stepped),
            "wall_s": wall, "fixed_s": fixed + warm, "per_step_s": per_step, "per_eval_s": per_eval,
            "steps": steps, "est_wall_s": est, "est_device_hours": est * scale, "device": cell["compute"]["device"],
            "est_tokens": round(steps * per("train/response_tokens")), "est_samples": round(steps * per("train/samples"))}


def estimate(short: Path, steps: int | dict[str, int], seeds: int | None = None) -> tuple[list[dict], dict]:
    """Per-cell estimates of the short run `short` at `steps` (one number, or one per task) and the
    totals for `seeds` seeds of the trained rows (default: as many as the short run has)."""
    short = Path(short)
    cells = load_cells(short)
    if not cells:
        raise ValueError(f"no finished cells (cells/<row>/<task>/seed<S>/cell.json) under {short}")
    out = []
    for c in cells:
        cell_dir = short / "cells" / c["row"] / c["task"] / f"seed{c['seed']}"
        if not c["trained"]:
            out.append({"row": c["row"], "task": c["task"], "seed": c["seed"], "est_wall_s": c["compute"]["wall_s"],
                        "est_device_hours": c["compute"]["device_hours"], "device": c["compute"]["device"]})
            continue
        n = steps if isinstance(steps, int) else steps.get(c["task"])
        if n is None:
            raise ValueError(f"--steps names no step count for task {c['task']!r} (given: {', '.join(steps)})")
        out.append(extrapolate(c, cell_dir, n))
    run_seeds = len({c["seed"] for c in cells if c["trained"]}) or 1
    factor = (seeds or run_seeds) / run_seeds
    trained = [e for e in out if "steps" in e]
    untrained = [e for e in out if "steps" not in e]
    total = {"seeds": seeds or run_seeds, "devices": sorted({e["device"] for e in out}),
             "wall_s": factor * sum(e["est_wall_s"] for e in trained) + sum(e["est_wall_s"] for e in untrained),
             "device_hours": factor * sum(e["est_device_hours"] for e in trained)
             + sum(e["est_device_hours"] for e in untrained)}
    return out, total


def markdown(est: list[dict], total: dict, short: Path) -> str:
    lines = [f"Estimated from the short run in `{short}` (`python -m experiments.paper.estimate`).", "",
             "| row | task | seed | short run: steps, wall | fixed | per step | per validation | steps | "
             "estimated wall | estimated device-hours | tokens generated | training samples |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {r: i for i, r in enumerate(ROWS)}
    for e in sorted(est, key=lambda e: (order.get(e["row"], 99), e["task"], e["seed"])):
        label = LABELS.get(e["row"], e["row"])
        if "steps" not in e:
            lines.append(f"| {label} | {e['task']} | {e['seed']} | untrained: one evaluation | | | | | "
                         f"{e['est_wall_s']:.0f} s | {e['est_device_hours']:.3f} {e['device']} | | |")
            continue
        lines.append(f"| {label} | {e['task']} | {e['seed']} | {e['short_steps']}, {e['wall_s']:.0f} s | "
                     f"{e['fixed_s']:.0f} s | {e['per_step_s']:.1f} s | {e['per_eval_s']:.1f} s | {e['steps']} | "
                     f"{e['est_wall_s'] / 60:.1f} min | {e['est_device_hours']:.3f} {e['device']} | "
                     f"{e['est_tokens']} | {e['est_samples']} |")
    lines.append(f"\nTotal for {total['seeds']} seed(s) of the trained rows: {total['wall_s'] / 3600:.2f} h of cell "
                 f"wall time, {total['device_hours']:.2f} {'/'.join(total['devices'])}-hours.")
    return "\n".join(lines) + "\n"


def parse_steps(text: str) -> int | dict[str, int]:
    try:
        if "=" not in text:
            return int(text)
        return {k: int(v) for k, v in (kv.split("=") for kv in text.split(","))}
    except ValueError:
        raise SystemExit(f"--steps {text}: allowed: one step count (200) or one per task (planning=60,code=100)")


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.paper.estimate", description=__doc__.split("\n")[0])
    p.add_argument("short", type=Path, help="the out= of a short experiments.paper run")
    p.add_argument("--steps", required=True, help="the full run's train.steps: 200, or planning=60,code=100,...")
    p.add_argument("--seeds", type=int, default=None, help="seeds of the full table (default: the short run's)")
    a = p.parse_args(argv)
    try:
        est, total = estimate(a.short, parse_steps(a.steps), a.seeds)
    except ValueError as e:
        raise SystemExit(f"experiments.paper.estimate: {e}")
    md = markdown(est, total, a.short)
    atomic_write_text(a.short / "estimate_main.md", md)
    print(md + f"wrote {a.short / 'estimate_main.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
