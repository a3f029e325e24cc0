"""One cell of the paper's main table: a Hydra multirun job of conf/paper.yaml (started by
`python -m experiments.paper`, which sets its sweep).

A trained row (conf/row/*.yaml, `cell.trained`) trains with marl.train in the cell directory and
reports the checkpoint selected on validation, tested in the harness it was trained in
(`eval.json`). An untrained row evaluates the starting model (engine=local) or a served one
(engine=openai) with marl.evaluate in the row's harness on the same test problems. The cell
writes `cell.json` last (its presence means the cell is done): the test success, its interval,
and the compute it took (`compute`), beside the resolved `config.yaml` and the commit.

`paper.tests` ({env name: options}, set per task by `experiments.paper tests=`) names more test
sets of the cell's task family (e.g. livecodebench and codecontests for a code run trained on
apps, aime24/aime25/olympiadbench for a Polaris run): the same checkpoint (or starting model) is
tested on each in the same harness, one column of the table each (`cell.json`'s `tests`).

Reruns skip finished cells, resume a killed trained cell from its last checkpoint (and an
untrained one from its episode record), and refuse a cell directory holding another config.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from marl import runs
from marl.config import RunSettings, run_settings, save_run_settings
from marl.io import read_jsonl, write_json
from marl.metrics import memory_mb

CONF = Path(__file__).resolve().parents[2] / "conf"
ROOT = Path(__file__).resolve().parents[2]


def commit() -> str:
    """The code's git commit ("+dirty" with uncommitted changes), or "unknown" outside a checkout.
    Read once, when this module is imported (COMMIT): the multirun runs every cell with the code
    it imported then, whatever the checkout holds by the time a cell ends."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


COMMIT = commit()


def devices(s: RunSettings) -> tuple[str, float]:
    """(unit, how many) of what a cell occupies: GPUs (device=cuda: one; engine=verl: its GPUs per
    node x nodes) or CPU cores (the run's threads, or every core it may use)."""
    if s.engine.name == "verl" and not s.engine.options.on_cpu:
        return "GPU", float(s.engine.options.gpus(1))  # on GPUs the count does not depend on the policies
    if s.device.startswith("cuda"):
        return "GPU", 1.0
    return "CPU core", float(s.threads or len(os.sched_getaffinity(0)))


def peak_mb(rows: list[dict], end: dict[str, float]) -> float:
    """The cell's peak resident memory: the largest of marl.train's per-step peaks (each since the
    previous reset; the first since the cell began) and of the peak since its last step (`end`,
    memory_mb() when the cell ends: validation, final test, extra test sets). Where the high-water
    mark cannot be reset, the process's peak so far, which can be an earlier cell's."""
    if "system/step_peak_rss_mb" not in end:
        return end["system/peak_rss_mb"]
    return max([r["system/step_peak_rss_mb"] for r in rows if "system/step_peak_rss_mb" in r]
               + [end["system/step_peak_rss_mb"]])


def compute(s: RunSettings, cell: Path, wall: float, trained: bool, attempts: int, end: dict[str, float]) -> dict:
    """The cell's compute: wall time of the attempt that finished it, device-hours, tokens
    generated, training samples (from marl.train's metrics.jsonl; an untrained cell's from its
    evaluation record) and peak memory (peak_mb; `end`: memory_mb() when the cell ended)."""
    unit, n = devices(s)
    out = {"wall_s": wall, "attempts": attempts, "device": unit, "devices": n,
           "device_hours": n * wall / 3600, "commit": COMMIT}
    if trained:
        rows = read_jsonl(cell / "metrics.jsonl")
        out["train_tokens_generated"] = int(sum(r.get("train/response_tokens", 0) for r in rows))
        out["train_samples"] = int(sum(r.get("train/samples", 0) for r in rows))
    else:
        recs = [r for f in sorted(cell.glob("evaluate*.episodes.jsonl")) for r in read_jsonl(f)[1:]]  # every test set
        out["eval_tokens_generated"] = int(sum(r["completion_tokens"] for r in recs))
        out["train_samples"] = 0
        rows = []
    out["peak_rss_mb"] = peak_mb(rows, end)
    if attempts > 1:
        out["note"] = "wall time and device-hours of the last attempt only (the cell was resumed)"
    return out


def evaluate_untrained(c: dict, s: RunSettings, cell: Path, n: int | None, out: str) -> dict:
    """The starting (or served) model on the test split of c's env in the row's harness, via
    marl.evaluate; its results, refused while any episode ended in api_error."""
    from marl import evaluate as marl_evaluate
    from marl.config import evaluate_settings

    ev = {k: v for k, v in c.items() if k not in ("cell", "paper")}
    results = marl_evaluate.run(evaluate_settings({**ev, "harnesses": [s.task.harness], "splits": ["test"],
                                                   "n": n, "samples": 1, "temperature": s.eval.temperature,
                                                   "out": out, "overwrite": False}))
    if not results["complete"]:
        raise RuntimeError(f"{cell}: {results[s.task.harness]['test']['api_error']} episodes of {out} ended in "
                           "api_error; rerun the command to play them (the cell is not finished)")
    return results


def env_group(name: str, opts: dict | None = None) -> dict:
    """conf/env/<name>.yaml as Hydra composes it (its defaults first, e.g. planpath10 over
    planpath), with `opts` over it."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF / "env" / f"{name}.yaml"))
    out: dict = {}
    for base in raw.pop("defaults", []):
        if base != "_self_":
            out.update(env_group(base))
    return {**out, **raw, **(opts or {})}


def test_envs(c: dict, s: RunSettings) -> dict[str, dict]:
    """paper.tests as full env groups, each checked before any work: a conf/env file, a task of the
    cell's harness family (its policies play only that family's roles), options its env accepts,
    and a test split that is there and not empty."""
    import envs
    from marl.build import check_data
    from roles.base import harness_family

    own = harness_family(s.task.env)
    allowed = sorted(p.stem for p in (CONF / "env").glob("*.yaml"))
    out = {}
    for name, opts in (c["paper"].get("tests") or {}).items():
        if name not in allowed:
            raise ValueError(f"paper.tests.{name}: no such env; allowed: {', '.join(allowed)}")
        env = env_group(name, opts)
        fam = harness_family(env["name"])
        if fam is None or own is None or fam.name != own.name:
            raise ValueError(f"paper.tests.{name}: not a task of {s.task.env}'s family ({own.name if own else '?'}): "
                             "a cell's policies are tested only on tasks whose roles they play")
        kw = {k: v for k, v in env.items() if k != "name"}
        envs.check_options(env["name"], kw)
        check_data(envs.make(env["name"], **kw), {"test": 1}, {"test": f"paper.tests.{name}"})
        out[name] = env
    return out


def starting_model(s: RunSettings) -> str | None:
    """The directory the cell's untrained rows evaluate: model.path, or the tiny model built for the
    cell's task (found in cache_dir); None for a generate-only engine, which loads no weights."""
    from marl.build import model_path, task_settings
    from marl.engine import engine_class

    if not engine_class(s.engine.name).trains:
        return s.model.path
    task, env_kw, h_kw = task_settings(s)
    return model_path(s, task, h_kw, env_kw)


def run_tests(c: dict, s: RunSettings, cell: Path, trained: bool, envs: dict[str, dict]) -> dict:
    """The cell's model on each extra test set (whole test split, the row's harness): the checkpoint
    selected on validation (trained) or the starting model; {name: {success, n, ci95}}."""
    from marl import evaluate as marl_evaluate
    from marl.config import evaluate_settings

    out = {}
    for name, env in envs.items():
        dest = str(cell / f"evaluate_{name}.json")
        if trained:
            base = OmegaConf.to_container(OmegaConf.load(CONF / "evaluate.yaml"))
            results = marl_evaluate.run(evaluate_settings({
                **base, "run": str(cell), "env": env, "harnesses": [s.task.harness], "splits": ["test"], "n": None,
                "temperature": s.eval.temperature, "threads": s.threads, "out": dest}))
        else:  # the starting model of the cell's own task (the tiny model is built for a task), on `env`
            results = evaluate_untrained({**c, "env": env, "model": {**c["model"], "path": starting_model(s)}},
                                         s, cell, n=None, out=dest)
        if not results.get("complete", True):
            raise RuntimeError(f"{cell}: the {name} test has api_error episodes; rerun the command to play them")
        r = results[s.task.harness]["test"]
        out[name] = {"success": r["success"], "n": r["n"], "ci95": r.get("ci95")}
    return out


def run_cell(c: dict, cell: Path, hydra_files: runs.HydraFiles | None = None) -> dict:
    """Train or evaluate one cell in `cell` (a resolved conf/paper.yaml job config `c`)."""
    from marl import train as marl_train

    s = run_settings(c)
    spec = c["cell"]
    if (cell / "cell.json").exists():
        _check_same(cell, s)
        print(f"[paper] {cell}: finished before, skipped")
        return json.loads((cell / "cell.json").read_text())
    _check_same(cell, s)
    tests = test_envs(c, s)
    attempts = 1 + sum(1 for _ in cell.glob("attempt_*"))
    cell.mkdir(parents=True, exist_ok=True)
    (cell / f"attempt_{attempts}").touch()  # counted by a resumed attempt's compute note
    memory_mb()  # resets the resident high-water mark: the cell's peak is its own, not an earlier cell's
    t0 = time.perf_counter()
    if spec["trained"]:
        if not (cell / "eval.json").exists() or "final" not in json.loads((cell / "eval.json").read_text()):
            marl_train.run(s.resumed(cell) if runs.holds_a_run(cell) else s, cell, hydra_files)
        test = json.loads((cell / "eval.json").read_text())[s.task.harness]["test"]
    else:
        if not (cell / "config.yaml").exists():
            save_run_settings(s, cell)  # the exact resolved config, as marl.train writes it
        test = evaluate_untrained(c, s, cell, s.eval.n_test, str(cell / "evaluate.json"))[s.task.harness]["test"]
    more = run_tests(c, s, cell, spec["trained"], tests)
    wall = time.perf_counter() - t0
    result = {"row": spec["row"], "label": spec["label"], "trained": spec["trained"], "task": c["paper"]["task"],
              "env": c["paper"].get("env", s.task.env), "model": s.model.name, "seed": s.seed, "harness": s.task.harness,
              "success": test["success"], "n": test["n"], "ci95": test.get("ci95"), "tests": more,
              "compute": compute(s, cell, wall, spec["trained"], attempts, memory_mb())}
    write_json(cell / "cell.json", result)  # written last: its presence means the cell is complete
    return result


def _check_same(cell: Path, s: RunSettings) -> None:
    """Refuse a cell directory of another config, its extra test sets included (marl.train's keys
    do not hold them): a finished cell is never silently left without a requested column."""
    runs.refuse_other_config(cell, s, "set out= to another directory or remove that one")
    if (cell / "config.yaml").exists():
        saved = (runs.saved_config(cell).get("paper") or {}).get("tests")
        if saved != (s.config.get("paper") or {}).get("tests"):
            raise ValueError(f"{cell} holds a cell tested on paper.tests={saved}, not "
                             f"{(s.config.get('paper') or {}).get('tests')}; set out= to another directory or "
                             "remove that one")


@hydra.main(version_base=None, config_path=str(CONF), config_name="paper")
def main(cfg: DictConfig) -> None:
    c = OmegaConf.to_container(cfg, resolve=True)
    choices = HydraConfig.get().runtime.choices
    c["paper"]["task"] = choices["exp"]
    # the env as chosen (conf/env/<choice>.yaml): planpath10 is `name: planpath` with size 10, and
    # only the choice tells the paper's test set from the tiny one
    c["paper"]["env"] = choices.get("env") or c["env"]["name"]
    run_cell(c, Path(HydraConfig.get().runtime.output_dir), runs.HydraFiles.current(cfg))


if __name__ == "__main__":
    main()
