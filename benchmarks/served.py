"""engine=openai through a real server: `transformers serve` (tests/served.py) serving the default
tiny planning model on this machine's CPU, evaluated on Plan-Path's test split in both harnesses.

    python benchmarks/served.py [--concurrency 1 8 32] [--repeats 3] [--n 100]

For the server generating one request at a time (its default) and with `--continuous-batching`
(requests decoded together), per `engine.max_concurrency`: requests per second and episodes per second over the evaluation's
wall time (marl.eval_record: the union of the episodes' spans), the most requests the server held
at once (its own log), and whether the episodes equal engine=local's (the baseline, evaluated in
the same invocation; its episodes per second alongside). Medians of `--repeats`. The server and
the evaluation share the machine's cores (one torch thread each). Saved to
benchmarks/results/served.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]  # the repository's roles before tests/roles
sys.path.append(str(ROOT / "tests"))  # tests/served.py
from common import CONF, save, table  # noqa: E402
from openai_server import Server, max_in_flight  # noqa: E402


MODES = {"one request at a time": (), "continuous batching": ("--continuous-batching",)}


def evaluate(out: Path, overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir

    from marl import evaluate as marl_evaluate
    from marl.config import evaluate_settings

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("evaluate_model", overrides=["+exp=planning", "threads=1", f"out={out}", *overrides])
    return marl_evaluate.run(evaluate_settings(cfg))


def episodes(out: Path) -> dict:
    rows = [json.loads(x) for x in out.with_name(out.stem + ".episodes.jsonl").read_text().splitlines()[1:]]
    return {(r["harness"], r["problem"]): (r["outcome"], [(s["prompt"], s["response"]) for s in r["steps"]])
            for r in rows}


def rates(results: dict) -> tuple[float, float]:
    """(requests/s, episodes/s) over both harnesses' evaluation wall time."""
    hs = [results[h]["test"] for h in ("single", "mas")]
    wall = sum(r["wall_s"] for r in hs)
    return sum(r["requests"] for r in hs) / wall, sum(r["n"] for r in hs) / wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=100)
    a = ap.parse_args()
    from marl.build import model_path, task_settings
    from common import config

    s = config([])
    task, env_kw, h_kw = task_settings(s)
    model = model_path(s, task, h_kw, env_kw)  # the default tiny planning model (cached)
    n = [f"n={a.n}"]
    rows, out = [], {"n": a.n, "repeats": a.repeats, "model": model, "runs": {}}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        local_eps = []
        for i in range(a.repeats):
            r = evaluate(d / f"local{i}.json", [f"model.path={model}", *n])
            local_eps.append(rates(r)[1])
        base = episodes(d / "local0.json")
        out["local_episodes_per_s"] = statistics.median(local_eps)
        for mode, args in MODES.items():
            srv = Server(d / f"serve-{len(out['runs'])}.log", args=args)
            try:
                for c in a.concurrency:
                    req, eps, held, same = [], [], [], []
                    for i in range(a.repeats):
                        start = srv.log_size()
                        f = d / f"{len(out['runs'])}-c{c}-{i}.json"
                        t0 = time.perf_counter()
                        r = evaluate(f, ["engine=openai", f"engine.base_url={srv.url}", f"engine.model={model}",
                                         f"engine.max_concurrency={c}", *n])
                        print(f"[served] {mode}, concurrency {c}, run {i}: {time.perf_counter() - t0:.1f} s",
                              file=sys.stderr)
                        x = rates(r)
                        req.append(x[0])
                        eps.append(x[1])
                        held.append(max_in_flight(srv.log.read_text(errors="replace")[start:]))
                        got = episodes(f)
                        same.append(sum(got[k] != base[k] for k in base))
                    out["runs"][f"{mode}, {c}"] = {
                        "requests_per_s": statistics.median(req), "episodes_per_s": statistics.median(eps),
                        "max_in_flight": max(held), "episodes_differing_from_local": max(same),
                        "episodes": len(base), "all": {"requests_per_s": req, "episodes_per_s": eps}}
                    rows.append([mode, c, statistics.median(req), statistics.median(eps), max(held), max(same),
                                 statistics.median(eps) / out["local_episodes_per_s"]])
            finally:
                srv.stop()
    print(table(rows, ["server", "max_concurrency", "requests/s", "episodes/s", "most in flight at the server",
                       "episodes differing from local", "episodes/s vs engine=local"]))
    print(f"engine=local (baseline, same invocation): {out['local_episodes_per_s']:.3g} episodes/s")
    print(f"saved {save('served', out)}")


if __name__ == "__main__":
    main()
