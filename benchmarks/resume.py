"""A kill at step 1 and its resume, against the run that was never interrupted.

    python benchmarks/resume.py [--out /tmp/resume-bench] [hydra overrides]

Runs `python -m marl.train` three times on the planning task (the cached tiny model, a short
run): once to the end; once killed with SIGKILL as soon as metrics.jsonl holds step 1 (after the
warm start's checkpoint, long before the first periodic one at train.checkpoint_every=20); then
`resume=<that run>` to the end. Reports the wall times (the figure: from the kill to the resumed
run's end; medians of `--repeats` rounds) and whether metrics.jsonl (less timing/ and system/ keys), eval.json and the traces
are the same as the uninterrupted run's. Saved to benchmarks/results/resume.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["+exp=planning", "logger=none", "threads=1", "train.steps=6", "train.problems_per_step=8",
         "train.eval_every=3", "eval.n_val=16", "eval.n_test=16"]


def train(run_dir: Path, *extra: str, kill_at_step: int | None = None) -> float:
    """Wall seconds of `python -m marl.train` into run_dir; with kill_at_step, SIGKILLed as soon
    as metrics.jsonl holds that step's training row."""
    cmd = [sys.executable, "-m", "marl.train", *SHORT, f"hydra.run.dir={run_dir}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_at_step is None:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
        return time.perf_counter() - t0
    metrics = run_dir / "metrics.jsonl"
    while proc.poll() is None:
        if metrics.exists() and any(json.loads(ln)["step"] >= kill_at_step and "train/reward" in ln
                                    for ln in metrics.read_text().splitlines() if ln.strip()):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return time.perf_counter() - t0
        time.sleep(0.05)
    raise SystemExit(f"the run ended (exit {proc.returncode}) before step {kill_at_step}: {proc.stderr.read()[-3000:]}")


def rows(run_dir: Path) -> list[dict]:
    drop = ("timing/", "system/")
    return [{k: v for k, v in json.loads(ln).items() if not k.startswith(drop)}
            for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def one_round(out: Path, overrides: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    whole, killed = out / "whole", out / "killed"
    t_whole = train(whole, *overrides)
    t_killed = train(killed, *overrides, kill_at_step=1)
    latest = (killed / "checkpoints" / "latest").read_text().strip()
    t_resume = train(out / "elsewhere", *overrides, f"resume={killed}")  # continues in killed/, whatever hydra.run.dir
    same = {"metrics": rows(whole) == rows(killed),
            "eval.json": (whole / "eval.json").read_text() == (killed / "eval.json").read_text(),
            "traces": sorted(f.name for f in (whole / "traces").iterdir())
            == sorted(f.name for f in (killed / "traces").iterdir())
            and all((whole / "traces" / f.name).read_bytes() == f.read_bytes() for f in (killed / "traces").iterdir()),
            "nothing in hydra.run.dir": not (out / "elsewhere").exists()}
    return {"uninterrupted_s": t_whole, "killed_after_s": t_killed, "resumed_from": latest, "kill_to_end_s": t_resume,
            "identical": same}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/marl-resume-bench")
    ap.add_argument("--repeats", type=int, default=3)
    args, overrides = ap.parse_known_args()
    rounds = [one_round(Path(args.out) / f"round{i}", overrides) for i in range(args.repeats)]
    same = {k: all(r["identical"][k] for r in rounds) for k in rounds[0]["identical"]}
    med = {k: statistics.median(r[k] for r in rounds) for k in ("uninterrupted_s", "killed_after_s", "kill_to_end_s")}
    latest = {r["resumed_from"] for r in rounds}
    result = {"settings": SHORT + overrides, "repeats": args.repeats, **med, "resumed_from": sorted(latest),
              "rounds": rounds, "identical": same}
    print(table([["uninterrupted run", med["uninterrupted_s"]], ["killed at step 1 after", med["killed_after_s"]],
                 [f"resume from {', '.join(sorted(latest))} to the end", med["kill_to_end_s"]]],
                ["run (median)", "wall s"]))
    print("identical to the uninterrupted run:", same)
    print("saved", save("resume", result))
    if not all(same.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
