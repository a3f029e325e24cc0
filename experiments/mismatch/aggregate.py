"""Aggregate the mismatch experiment's cells into results.csv, results.md and heatmap.png.

    python -m experiments.mismatch.aggregate <out dir>     # also runs at the end of the multirun

Rows are the trained architecture (plus the shared warm start, i.e. no RL), columns the deploy
setting. A cell's figure is the mean over seeds of the test success; its 95% interval is the
t-interval over seeds (training seeds are the independent units: it carries the run-to-run
variance of RL, which one seed's binomial interval hides). With one seed the interval is that
seed's Wilson interval. results.csv also has one row per seed.
"""
from __future__ import annotations

import csv
import json
import io
import math
import statistics
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from marl.evalstats import wilson
from marl.io import atomic_write_text

ARCHS = {"warm_start": "warm start (no RL)", "single": "trained single", "mas_shared": "trained team, shared",
         "mas_per_role": "trained team, per-role", "mas_lora": "trained team, LoRA per role"}
DEPLOYS = {"single": "deploy single", "mas": "deploy team", "mas_swapped": "deploy team, roles swapped"}
# Two-sided 95% quantiles of Student's t by degrees of freedom (1..10); beyond, 2.0 is within 5%.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def load_cells(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("*/seed*/cell.json"))]


def summarize(values: list[float], n: int) -> dict:
    """Mean over seeds with a 95% interval (t over seeds; Wilson when there is one seed)."""
    mean = statistics.fmean(values)
    if len(values) == 1:
        lo, hi = wilson(values[0] * n, n)
    else:
        half = T95.get(len(values) - 1, 2.0) * statistics.stdev(values) / math.sqrt(len(values))
        lo, hi = max(0.0, mean - half), min(1.0, mean + half)
    pooled = wilson(sum(values) * n, n * len(values))
    return {"mean": mean, "ci_lo": lo, "ci_hi": hi, "seeds": len(values),
            "pooled_ci_lo": pooled[0], "pooled_ci_hi": pooled[1]}


def table(cells: list[dict]) -> list[dict]:
    """One row per (arch, deploy) present: mean, CI, the per-seed values."""
    by: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for c in cells:
        for d, r in c["deploy"].items():
            by.setdefault((c["arch"], d), []).append((c["seed"], r["success"]))
    # Every cell starts from the same cached warm start and tests it greedily on the same problems,
    # so its figures agree across cells: count each distinct value once (one model, Wilson CI).
    for d in sorted({d for c in cells for d in c["warm_start"]}):
        values = sorted({c["warm_start"][d] for c in cells if d in c["warm_start"]})
        by[("warm_start", d)] = list(enumerate(values))
    n = cells[0]["n"] if cells else 0
    rows = []
    for (arch, deploy), vals in by.items():
        seeds = sorted(vals)
        rows.append({"arch": arch, "deploy": deploy, **summarize([v for _, v in seeds], n), "n": n,
                     "per_seed": " ".join(f"{v:.2f}" for _, v in seeds)})
    arch_order, deploy_order = {a: i for i, a in enumerate(ARCHS)}, {d: i for i, d in enumerate(DEPLOYS)}
    return sorted(rows, key=lambda r: (arch_order.get(r["arch"], 99), deploy_order.get(r["deploy"], 99),
                                       r["arch"], r["deploy"]))


def write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def markdown(rows: list[dict]) -> str:
    lines = ["| trained | deployed | success (mean over seeds) | 95% CI | seeds | per seed |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {ARCHS.get(r['arch'], r['arch'])} | {DEPLOYS.get(r['deploy'], r['deploy'])} | "
                     f"{r['mean']:.1%} | {r['ci_lo']:.0%}-{r['ci_hi']:.0%} | {r['seeds']} | {r['per_seed']} |")
    return "\n".join(lines) + "\n"


def heatmap(rows: list[dict], path: Path, title: str = "") -> None:
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (a notebook's) alone

    archs = [a for a in ARCHS if any(r["arch"] == a for r in rows)]
    deploys = [d for d in DEPLOYS if any(r["deploy"] == d for r in rows)]
    fig = Figure(figsize=(2.0 * len(deploys) + 3.5, 0.9 * len(archs) + 1.6))
    draw_heatmap(fig, fig.subplots(), rows, title or "train harness x deploy harness (mean over seeds, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def draw_heatmap(fig, ax, rows: list[dict], title: str) -> None:
    """One (trained arch x deploy) heatmap of `rows` (table()'s) on `ax`, with its colour bar."""
    import numpy as np

    archs = [a for a in ARCHS if any(r["arch"] == a for r in rows)]
    deploys = [d for d in DEPLOYS if any(r["deploy"] == d for r in rows)]
    grid = np.full((len(archs), len(deploys)), np.nan)  # (archs, deploys) mean success
    text = [["n/a"] * len(deploys) for _ in archs]
    for r in rows:
        if r["arch"] in archs and r["deploy"] in deploys:
            i, j = archs.index(r["arch"]), deploys.index(r["deploy"])
            grid[i, j] = r["mean"]
            text[i][j] = f"{r['mean']:.0%}\n[{r['ci_lo']:.0%}, {r['ci_hi']:.0%}]"
    im = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(deploys)), [DEPLOYS[d].replace(", ", ",\n") for d in deploys], fontsize=9)
    ax.set_yticks(range(len(archs)), [ARCHS[a] for a in archs])
    for i in range(len(archs)):
        for j in range(len(deploys)):
            colour = "grey" if np.isnan(grid[i, j]) else "white" if grid[i, j] < 0.6 else "black"
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=9, color=colour)
    fig.colorbar(im, ax=ax, label="test success")
    ax.set_title(title, fontsize=10)


def aggregate(out: Path) -> list[dict]:
    out = Path(out)
    cells = load_cells(out)
    if not cells:
        raise ValueError(f"no finished cells (<arch>/seed<S>/cell.json) under {out}")
    rows = table(cells)
    write_csv(rows, out / "results.csv")
    md = markdown(rows)
    atomic_write_text(out / "results.md", md)
    heatmap(rows, out / "heatmap.png", title=f"{out.name}: test success, mean over seeds [95% CI]")
    print(md + f"wrote {out}/results.csv, results.md, heatmap.png")
    return rows


class Aggregate(Callback):
    """Hydra callback: aggregate once every job of the multirun has finished."""

    def on_multirun_end(self, config, **kwargs) -> None:
        aggregate(Path(config.hydra.sweep.dir))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m experiments.mismatch.aggregate <out dir>")
    aggregate(Path(sys.argv[1]))
