"""The train/deploy mismatch table from experiments.mismatch's cells, beside the paper's numbers.

    python -m experiments.paper.mismatch_table <out dir>   # also run by `experiments.paper table=mismatch`

Reads `<out>/mismatch/<task>/<arch>/seed<S>/cell.json` (one experiments.mismatch run per task);
writes `<out>/table_mismatch.md`, `.csv` and `.png` (one heatmap per task). Each row is
experiments.mismatch.aggregate's (mean over seeds, 95% interval, each seed's value). The paper ran
this experiment on Plan-Path with Qwen3-1.7B (paper_numbers.yaml, `mismatch`): its value stands
beside ours only for that model on that test set; other cells stand alone, the tiny model's
labelled as its analogue. The paper's conclusions are checked on every task's means.
"""
from __future__ import annotations

import sys
from pathlib import Path

from experiments.mismatch import aggregate as mm
from experiments.paper.table import PAPER, column_label, paper_column, verdict_lines
from marl import runs
from marl.io import atomic_write_text

TEAM_ARCHS = ("mas_shared", "mas_per_role", "mas_lora")


def cell_source(cell: Path, c: dict) -> tuple[str, str]:
    """(env, model) of a mismatch cell: its cell.json's, or its run's config.yaml for a cell
    written before cell.json recorded them."""
    if "env" in c and "model" in c:
        return c["env"], c["model"]
    cfg = runs.saved_config(cell)
    return cfg["env"]["name"], cfg["model"]["name"]


def paper_value(arch: str, deploy: str, env: str, model: str) -> float | list[float] | None:
    """The paper's mismatch value (a fraction, or a [lo, hi] range) where `model` on `env` is the
    paper's experiment; None otherwise."""
    if paper_column(env) != PAPER["mismatch"]["column"]:
        return None
    v = next((p["value"] for p in PAPER["mismatch"].get(model, []) if (p["arch"], p["deploy"]) == (arch, deploy)), None)
    return None if v is None else [x / 100 for x in v] if isinstance(v, list) else v / 100


def task_rows(task_dir: Path) -> list[dict]:
    """experiments.mismatch.aggregate.table's rows for one task, with the task, the column and the
    paper's value added (new dicts: the aggregate's rows are not rewritten)."""
    paths = sorted(task_dir.glob("*/seed*/cell.json"))
    cells = mm.load_cells(task_dir)
    sources = {cell_source(p.parent, c) for p, c in zip(paths, cells)}
    if len(sources) != 1:
        raise ValueError(f"{task_dir}: cells of several (env, model) pairs {sorted(sources)}; one task directory "
                         "holds one experiment")
    (env, model), = sources
    label = column_label(env, paper_column(env), model)
    return [{"task": task_dir.name, "column": label, "env": env, "model": model, **r,
             "paper": paper_value(r["arch"], r["deploy"], env, model)} for r in mm.table(cells)]


def patterns(rows: list[dict]) -> list[dict]:
    """Each of the paper's mismatch conclusions on every task's means: on how many tasks it could be
    tested (every cell it needs was run) and held, and where it failed."""
    def check(pid: str, task: str) -> bool | None:
        g = {(r["arch"], r["deploy"]): r["mean"] for r in rows if r["task"] == task}.get
        if pid == "team_trained_best_in_team":
            pairs = [(g((a, "mas")), g((a, "single"))) for a in TEAM_ARCHS]
            pairs = [(t, s) for t, s in pairs if None not in (t, s)]
            return all(t > s for t, s in pairs) if pairs else None
        if pid == "single_trained_below_team_trained":
            a, b = g(("single", "mas")), g(("mas_per_role", "mas"))
            return None if None in (a, b) else a < b
        if pid == "swapped_roles_collapse":
            a, b = g(("mas_per_role", "mas_swapped")), g(("mas_per_role", "mas"))
            return None if None in (a, b) else a < b
        raise ValueError(f"unknown pattern {pid!r}")

    tasks = sorted({r["task"] for r in rows})
    out = []
    for p in PAPER["mismatch"]["patterns"]:
        tested = {t: v for t in tasks if (v := check(p["id"], t)) is not None}
        out.append({"id": p["id"], "claim": p["claim"], "tasks": len(tested), "holds": sum(tested.values()),
                    "fails_on": [t for t, v in tested.items() if not v]})
    return out


def _paper_text(v) -> str:
    if v is None:
        return ""
    return f"{v[0]:.1%}-{v[1]:.1%}" if isinstance(v, list) else f"{v:.1%}"


def markdown(rows: list[dict], pats: list[dict]) -> str:
    lines = ["| test set | trained | deployed | ours: mean [95% CI] (each seed) | paper |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['column']} | {mm.ARCHS.get(r['arch'], r['arch'])} | {mm.DEPLOYS.get(r['deploy'], r['deploy'])} | "
                     f"{r['mean']:.1%} [{r['ci_lo']:.0%}, {r['ci_hi']:.0%}] ({r['per_seed']}) | {_paper_text(r['paper'])} |")
    lines += ["", f"Test success; the paper's value ({PAPER['mismatch']['source']}) only where the model and test "
              "set are the paper's. A range is the paper's across its runs.", "",
              *verdict_lines(pats, "the paper's conclusion", "a cell it needs was not run")]
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig = Figure(figsize=(7.5 * len(tasks), 5))
    for ax, task in zip(fig.subplots(1, len(tasks), squeeze=False)[0], tasks):
        mine = [r for r in rows if r["task"] == task]
        mm.draw_heatmap(fig, ax, mine, mine[0]["column"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def aggregate(out: Path) -> list[dict]:
    out = Path(out)
    task_dirs = sorted(d for d in (out / "mismatch").glob("*") if any(d.glob("*/seed*/cell.json")))
    if not task_dirs:
        raise ValueError(f"no finished mismatch cells (mismatch/<task>/<arch>/seed<S>/cell.json) under {out}")
    rows = [r for d in task_dirs for r in task_rows(d)]
    mm.write_csv([{**r, "paper": _paper_text(r["paper"])} for r in rows], out / "table_mismatch.csv")
    md = markdown(rows, patterns(rows))
    atomic_write_text(out / "table_mismatch.md", md)
    figure(rows, out / "table_mismatch.png")
    print(md + f"wrote {out}/table_mismatch.md, table_mismatch.csv, table_mismatch.png")
    return rows


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m experiments.paper.mismatch_table <out dir>")
    aggregate(Path(sys.argv[1]))
