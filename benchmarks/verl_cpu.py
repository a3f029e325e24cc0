"""`engine=verl` on the CPU end to end: the default planning run per policy kind, against `engine=local`.

    python benchmarks/verl_cpu.py [--kinds shared per_role lora] [--repeats 1] [--out /tmp/verl-cpu] [overrides]

Per policy kind: the wall time of `python -m marl.train +exp=planning engine=verl
engine.rollout_backend=cpu policy=<kind>` (the cached tiny model; every other setting the
default), the same command with `engine=local` (the baseline, run in the same invocation), and
how much of the verl run is its engine's start-up (Ray, one Ray job per policy, verl's FSDP
workers, the CPU token servers and the first weight push), timed by building that engine alone
in a fresh process. Also each run's test success in the team harness. Medians of `--repeats`.
Saved to benchmarks/results/verl_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VERL = ["engine=verl", "engine.rollout_backend=cpu"]
STARTUP = """
import sys, time
sys.path.insert(0, {bench!r})
from common import build, config
t0 = time.perf_counter()
built, _ = build(config({overrides!r}))
print(time.perf_counter() - t0)
built.engine.close()
"""


def train(run_dir: Path, overrides: list[str]) -> tuple[float, float]:
    """(wall seconds, test success of the team harness) of one `marl.train` run."""
    cmd = [sys.executable, "-m", "marl.train", "+exp=planning", "logger=none", f"hydra.run.dir={run_dir}", *overrides]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    return wall, json.loads((run_dir / "eval.json").read_text())["mas"]["test"]["success"]


def startup(overrides: list[str]) -> float:
    """Seconds to build the run's engine (model path resolved from the cache first, not timed)."""
    code = STARTUP.format(bench=str(Path(__file__).resolve().parent), overrides=list(overrides))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"engine start-up failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kinds", nargs="+", default=["shared", "per_role", "lora"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="/tmp/verl-cpu-bench")
    a, extra = ap.parse_known_args()
    rows, record = [], {"command": " ".join(sys.argv), "kinds": {}}
    for kind in a.kinds:
        runs = {"local": [], "verl": [], "startup": []}
        for rep in range(a.repeats):
            for name, eng in (("local", []), ("verl", VERL)):
                d = Path(a.out) / f"{kind}-{name}-{rep}"
                subprocess.run(["rm", "-rf", str(d)], check=True)
                runs[name].append(train(d, [*eng, f"policy={kind}", *extra]))
            runs["startup"].append(startup([*VERL, f"policy={kind}", *extra]))
        med = {k: statistics.median(w for w, _ in runs[k]) for k in ("local", "verl")}
        up = statistics.median(runs["startup"])
        record["kinds"][kind] = {**{k: [{"wall_s": w, "test_success_mas": s} for w, s in runs[k]]
                                    for k in ("local", "verl")}, "verl_startup_s": runs["startup"]}
        rows.append([kind, med["local"], med["verl"], med["verl"] / med["local"], up, up / med["verl"],
                     runs["local"][0][1], runs["verl"][0][1]])
    header = ["policy", "local wall s", "verl(cpu) wall s", "verl/local", "verl start-up s", "start-up share",
              "test mas local", "test mas verl"]
    print(table(rows, header))
    print("saved", save("verl_cpu", {**record, "table": [dict(zip(header, r)) for r in rows]}))


if __name__ == "__main__":
    main()
