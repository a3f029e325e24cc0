"""The main table from the finished cells of experiments.paper, beside the paper's numbers.

    python -m experiments.paper.table <out dir>     # also run by the multirun's end (Hydra callback)

Reads `<out>/cells/<row>/<task>/seed<S>/cell.json`; writes `<out>/table_main.md`, `.csv`, a
figure (`table_main.png`) and `compute_main.md`. Each cell: the mean over seeds with a 95%
interval (t over seeds; Wilson with one seed) and the seeds' values in brackets. Where the model
and test set are the paper's (paper_numbers.yaml), the paper's value stands beside ours;
otherwise ours stand alone, labelled as the tiny analogue. The paper's qualitative patterns are
checked on our means.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from experiments.mismatch.aggregate import summarize, write_csv
from marl.io import atomic_write_text

PAPER = yaml.safe_load((Path(__file__).with_name("paper_numbers.yaml")).read_text())
ROWS = ("single", "single_grpo", "mas", "mas_shared", "mas_per_role")
LABELS = {"single": "single agent", "single_grpo": "single agent + GRPO", "mas": "MAS, prompt only",
          "mas_shared": "MAS + AT-GRPO, shared", "mas_per_role": "MAS + AT-GRPO, per role"}
PLANNING = ("planpath", "planpath10", "sokoban", "sudoku", "sudoku9")


def load_cells(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("cells/*/*/seed*/cell.json"))]


def paper_column(env: str) -> str | None:
    """The paper's column that `env` is (paper_numbers.yaml), or None (a tiny analogue)."""
    return next((k for k, c in PAPER["columns"].items() if env in c["envs"]), None)


def column_label(env: str, col: str | None, model: str) -> str:
    """The paper's test set where the model is one of the paper's too; otherwise the env, and for
    the tiny model "(tiny analogue)": the same task, not a number comparable with the paper's."""
    if col and model in PAPER["main"]:
        return PAPER["columns"][col]["label"]
    return f"{env} (tiny analogue)" if model == "tiny" else env


def tested(c: dict) -> list[dict]:
    """One result per test set a cell was tested on: its own env's, then paper.tests' (`tests`), each
    {env, seed, success, n, model, compute (None for the extra sets: the cell's compute counts once)}."""
    own = {"env": c["env"], "trained_on": c["env"], "seed": c["seed"], "success": c["success"], "n": c["n"],
           "model": c["model"], "compute": c["compute"]}
    return [own] + [{**own, "env": env, "success": r["success"], "n": r["n"], "compute": None}
                    for env, r in (c.get("tests") or {}).items()]


UNTRAINED = ("single", "mas")


def comparable(col: str, model: str, row: str, results: list[dict]) -> bool:
    """Whether our cells of `row` on the paper's column `col` stand beside the paper's: an untrained
    row always (the same model on the same test set); a trained row only if it trained where the
    paper's did (paper_numbers.yaml, columns.<col>.trained_on), e.g. AIME24 after Polaris."""
    want = PAPER["columns"][col].get("trained_on")
    want = want.get(model) if isinstance(want, dict) else want
    return row in UNTRAINED or want is None or all(r["trained_on"] == want for r in results)


def table(cells: list[dict]) -> list[dict]:
    """One row per (row, column): our mean and interval over seeds, the paper's value if comparable.
    A column is a test set: a cell's own env, or one of its extra test sets."""
    by: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        for r in tested(c):
            by.setdefault((c["row"], r["env"]), []).append(r)
    out = []
    for (row, env), cs in by.items():
        cs = sorted(cs, key=lambda c: c["seed"])
        s = summarize([c["success"] for c in cs], cs[0]["n"])
        col, model = paper_column(env), cs[0]["model"]
        paper = PAPER["main"].get(model, {}).get(row, {}).get(col) if col and comparable(col, model, row, cs) else None
        disputed = {"model": model, "row": row, "column": col} in PAPER["main"]["disputed"]
        computes = [c["compute"] for c in cs if c["compute"]]
        out.append({"row": row, "label": LABELS.get(row, row), "env": env, "trained_on": cs[0]["trained_on"],
                    "model": model, "column": column_label(env, col, model),
                    "mean": s["mean"], "ci_lo": s["ci_lo"], "ci_hi": s["ci_hi"], "seeds": s["seeds"],
                    "per_seed": " ".join(f"{c['success']:.2f}" for c in cs),
                    "paper": paper / 100 if paper is not None else None, "paper_disputed": disputed,
                    "wall_s": sum(m["wall_s"] for m in computes),
                    "device_hours": sum(m["device_hours"] for m in computes),
                    "device": computes[0]["device"] if computes else ""})
    order = {r: i for i, r in enumerate(ROWS)}
    return sorted(out, key=lambda r: (order.get(r["row"], 99), r["env"]))


def patterns(rows: list[dict]) -> list[dict]:
    """Each of the paper's patterns (paper_numbers.yaml) checked on our means: on how many of the
    tasks where every row it needs was run it holds, and where it does not."""
    mean = {(r["row"], r["env"]): r["mean"] for r in rows}
    envs = sorted({r["env"] for r in rows})

    def check(pid: str, env: str) -> bool | None:
        g = lambda row: mean.get((row, env))  # noqa: E731
        team = max([x for x in (g("mas_shared"), g("mas_per_role")) if x is not None], default=None)
        if pid == "planning_order":
            if env not in PLANNING or None in (team, g("mas"), g("single")):
                return None
            return team > g("mas") > g("single")
        if pid == "team_beats_single_rl":
            return None if None in (team, g("single_grpo")) else team > g("single_grpo")
        if pid == "prompt_only_team":
            return None if None in (g("mas"), g("single")) else g("mas") >= g("single")
        raise ValueError(f"unknown pattern {pid!r}")

    out = []
    for p in PAPER["patterns"]:
        verdicts = {env: check(p["id"], env) for env in envs}
        tested = {e: v for e, v in verdicts.items() if v is not None}
        out.append({"id": p["id"], "claim": p["claim"], "tasks": len(tested), "holds": sum(tested.values()),
                    "fails_on": [e for e, v in tested.items() if not v]})
    return out


def markdown(rows: list[dict], pats: list[dict]) -> str:
    cols = list(dict.fromkeys(r["column"] for r in rows))
    cell = {(r["row"], r["column"]): r for r in rows}
    lines = ["| row | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row in [r for r in ROWS if any(x["row"] == r for x in rows)]:
        out = []
        for col in cols:
            r = cell.get((row, col))
            if r is None:
                out.append("")
                continue
            text = f"{r['mean']:.1%} [{r['ci_lo']:.0%}, {r['ci_hi']:.0%}] ({r['per_seed']})"
            if r["paper"] is not None:
                text += f"; paper {r['paper']:.1%}" + ("*" if r["paper_disputed"] else "")
            out.append(text)
        lines.append(f"| {LABELS[row]} | " + " | ".join(out) + " |")
    lines += ["", "Mean test success over seeds [95% interval] (each seed's); a paper value where the model and "
              "test set are the paper's (* disagrees with the paper's own printed delta).", "",
              *verdict_lines(pats, "the paper's pattern", "a row it needs was not run")]
    return "\n".join(lines) + "\n"


def verdict_lines(pats: list[dict], claim: str, untestable: str) -> list[str]:
    """A markdown table of the paper's claims checked on ours: on how many tasks each holds, and
    where not (`untestable` when no task had what it needs)."""
    lines = [f"| {claim} | holds on ours |", "|---|---|"]
    for p in pats:
        verdict = (f"{p['holds']} of {p['tasks']} tasks" + (f" (not on {', '.join(p['fails_on'])})" if p["fails_on"] else "")
                   if p["tasks"] else f"not testable: {untestable}")
        lines.append(f"| {p['claim']} | {verdict} |")
    return lines


def compute_markdown(cells: list[dict]) -> str:
    lines = ["| row | task | seed | wall | device-hours | tokens generated | training samples | peak RSS MB | commit |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: (ROWS.index(c["row"]) if c["row"] in ROWS else 99, c["task"], c["seed"])):
        m = c["compute"]
        tokens = m.get("train_tokens_generated", m.get("eval_tokens_generated", 0))
        lines.append(f"| {LABELS.get(c['row'], c['row'])} | {c['task']} | {c['seed']} | {m['wall_s']:.0f} s | "
                     f"{m['device_hours']:.4f} {m['device']} | {tokens} | {m['train_samples']} | "
                     f"{(m['peak_rss_mb'] or 0):.0f} | {m['commit'][:10]} |")
    total = sum(c["compute"]["wall_s"] for c in cells)
    units = sorted({c["compute"]["device"] for c in cells})  # GPU-hours and CPU core-hours are not added up
    hours = " + ".join(f"{sum(c['compute']['device_hours'] for c in cells if c['compute']['device'] == u):.3f} {u}-hours"
                       for u in units)
    lines.append(f"\nTotal: {len(cells)} cells, {total / 60:.1f} min of cell wall time, {hours}.")
    lines.append("\nPeak RSS: the process's resident peak while the cell ran. The cells of one multirun share a "
                 "process, so it includes memory an earlier cell left allocated.")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    cols = list(dict.fromkeys(r["column"] for r in rows))
    present = [r for r in ROWS if any(x["row"] == r for x in rows)]
    fig = Figure(figsize=(2.2 * len(cols) + 2, 4))
    ax = fig.subplots()
    width = 0.8 / max(len(present), 1)
    for i, row in enumerate(present):
        xs, ys, err = [], [], [[], []]
        for j, col in enumerate(cols):
            r = next((x for x in rows if x["row"] == row and x["column"] == col), None)
            if r:
                xs.append(j + i * width)
                ys.append(r["mean"])
                # clamped: a Wilson bound at 0 or 1 can sit a rounding error inside the mean
                err[0].append(max(0.0, r["mean"] - r["ci_lo"]))
                err[1].append(max(0.0, r["ci_hi"] - r["mean"]))
        ax.bar(xs, ys, width, yerr=np.array(err), label=LABELS[row], capsize=2)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], cols, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test success (mean over seeds, 95% CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def aggregate(out: Path) -> list[dict]:
    out = Path(out)
    cells = load_cells(out)
    if not cells:
        raise ValueError(f"no finished cells (cells/<row>/<task>/seed<S>/cell.json) under {out}")
    rows = table(cells)
    write_csv(rows, out / "table_main.csv")
    md = markdown(rows, patterns(rows))
    atomic_write_text(out / "table_main.md", md)
    atomic_write_text(out / "compute_main.md", compute_markdown(cells))
    figure(rows, out / "table_main.png")
    print(md + f"wrote {out}/table_main.md, table_main.csv, table_main.png, compute_main.md")
    return rows


BEGIN, END = "<!-- experiments.paper: {} (generated; do not edit) -->", "<!-- end of experiments.paper: {} -->"


def update_readme(readme: Path, out: Path) -> None:
    """Put `<out>`'s table_main.md, its compute total and, where it was run, table_mismatch.md into
    `readme` between the markers naming `out` (added at the end of the file the first time): the
    README's results are the tables', never written by hand."""
    readme, out = Path(readme), Path(out)
    name = str(out)
    compute = next(l for l in (out / "compute_main.md").read_text().splitlines() if l.startswith("Total:"))
    parts = [f"From `{name}` (`python -m experiments.paper.table {name} --readme README.md`).",
             (out / "table_main.md").read_text().strip(), compute]
    if (out / "table_mismatch.md").exists():
        parts += ["The train/deploy mismatch table (`table=mismatch`, `table_mismatch.md`):",
                  (out / "table_mismatch.md").read_text().strip()]
    block = "\n\n".join([BEGIN.format(name), *parts, END.format(name)])
    text = readme.read_text()
    begin, end = BEGIN.format(name), END.format(name)
    if begin in text:
        if end not in text:
            raise ValueError(f"{readme}: the marker {begin!r} has no {end!r} after it; restore it before regenerating")
        i, j = text.index(begin), text.index(end) + len(end)
        text = text[:i] + block + text[j:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(readme, text)


class Aggregate(Callback):
    """Hydra callback: the table once every job of the multirun has finished."""

    def on_multirun_end(self, config, **kwargs) -> None:
        aggregate(Path(config.hydra.sweep.dir))


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m experiments.paper.table", description="the main table of <out>'s cells")
    p.add_argument("out", type=Path, help="the out= of an experiments.paper run")
    p.add_argument("--readme", type=Path, help="also put the table into this README between its markers")
    a = p.parse_args(argv)
    try:
        aggregate(a.out)
        if a.readme:
            update_readme(a.readme, a.out)
    except ValueError as e:
        raise SystemExit(f"experiments.paper.table: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
