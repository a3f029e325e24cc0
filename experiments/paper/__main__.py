"""The paper's tables, one command each:

    python -m experiments.paper                                  # table=main on the tiny CPU default
    python -m experiments.paper table=main tasks=[planning,sudoku] seeds=[0] rows=[single,mas_per_role]
    python -m experiments.paper model=qwen3_1.7b device=cuda env=planpath10 tasks=[planning] ...
    python -m experiments.paper engine=openai engine.base_url=<url> engine.model=<name> model=qwen3_1.7b
    python -m experiments.paper table=mismatch seeds=[0,1,2]     # the train/deploy table (experiments.mismatch)

`table=main`: rows (conf/row/) x tasks (conf/exp/) x seeds, each cell a job of a Hydra multirun
of conf/paper.yaml (experiments/paper/cell.py) in `<out>/cells/<row>/<task>/seed<S>/`; the table
(experiments/paper/table.py) is written into `<out>` when the cells are done. Untrained rows are
greedy evaluations of one starting model, the same for every seed: they run with the first seed
only. With a generate-only engine (engine=openai) only untrained rows can run. `table=mismatch`
runs experiments.mismatch on each task into `<out>/mismatch/<task>`. Every other argument is a
marl.train override passed to every cell. Reruns skip finished cells and resume killed ones.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
OWN = ("table", "tasks", "seeds", "rows", "out", "envs", "tests")
TABLES = ("main", "mismatch")


def names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """(this command's own settings, the marl.train overrides), each own setting checked."""
    own = {"table": "main", "tasks": None, "seeds": [0, 1, 2], "rows": None, "out": None, "envs": {}, "tests": {}}
    rest = []
    for a in argv:
        if a.startswith("-"):  # the cells' multiruns take overrides only; a Hydra flag would reach every cell
            raise SystemExit(f"experiments.paper: {a}; allowed: key=value settings only (this command's own: "
                             f"{', '.join(OWN)}; any marl.train override), or -h/--help")
        key, eq, value = a.partition("=")
        if eq and key in OWN:
            own[key] = yaml.safe_load(value)
        else:
            rest.append(a)
    if own["out"] is not None:
        own["out"] = str(Path(own["out"]).resolve())  # the multiruns run in the repository root
    if own["table"] not in TABLES:
        raise SystemExit(f"experiments.paper: table={own['table']}; allowed: {', '.join(TABLES)}")
    own["tasks"] = own["tasks"] or (["planning"] if own["table"] == "mismatch" else
                                    ["planning", "sokoban", "sudoku", "code", "math"])
    for key, allowed in (("tasks", names("exp")), ("rows", names("row"))):
        v = own[key]
        if v is not None and (not isinstance(v, list) or not v or any(x not in allowed for x in v)):
            raise SystemExit(f"experiments.paper: {key}={v}; allowed: a non-empty list of {', '.join(allowed)}")
    check_task_maps(own, rest)
    seeds = own["seeds"]
    if not isinstance(seeds, list) or not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0
                                                       for s in seeds):
        raise SystemExit(f"experiments.paper: seeds={seeds}; allowed: a non-empty list of integers >= 0, e.g. [0,1,2]")
    return own, rest


def untrained(row: str) -> bool:
    return not yaml.safe_load((CONF / "row" / f"{row}.yaml").read_text())["cell"]["trained"]


def check_task_maps(own: dict, rest: list[str]) -> None:
    """envs= (task -> env name, or {name, options}) and tests= (task -> {env name: options}):
    per-task data sets, checked against the tasks run and conf/env/."""
    envs = names("env")
    for key in ("envs", "tests"):
        m = own[key]
        if not isinstance(m, dict) or any(t not in own["tasks"] for t in m):
            raise SystemExit(f"experiments.paper: {key}={m}; allowed: a mapping from tasks run "
                             f"({', '.join(own['tasks'])}) to " + ("an env name or {name: <env>, <option>: ...}"
                                                                   if key == "envs" else "{<env name>: {<option>: ...}}"))
    for task, spec in own["envs"].items():
        name = spec if isinstance(spec, str) else spec.get("name") if isinstance(spec, dict) else None
        if name not in envs:
            raise SystemExit(f"experiments.paper: envs.{task}={spec}; allowed: an env name ({', '.join(envs)}) or "
                             "{name: <env>, data_dir: ...}")
    for task, sets in own["tests"].items():
        bad = [n for n in (sets or {}) if n not in envs] if isinstance(sets, dict) else [sets]
        if bad or not sets or any(v is not None and not isinstance(v, dict) for v in sets.values()):
            raise SystemExit(f"experiments.paper: tests.{task}={sets}; allowed: {{<env name>: {{data_dir: ...}}}} with "
                             f"env names of conf/env/ ({', '.join(envs)})")
    if any(a.lstrip("+").startswith("paper.tests") for a in rest):
        raise SystemExit("experiments.paper: paper.tests= would test every task on the same sets; name each "
                         "task's in tests={code: {livecodebench: {data_dir: <dir>}}}")
    if own["table"] == "mismatch" and own["tests"]:
        raise SystemExit("experiments.paper: tests= is for table=main; the mismatch table tests each cell in "
                         "its own task's test split")
    if len(own["tasks"]) > 1 and any(a.startswith(("env=", "env.", "+env.")) for a in rest):
        raise SystemExit("experiments.paper: env= applies to every task of the table; with several tasks name each "
                         "task's env in envs={planning: planpath10, code: {name: apps, data_dir: <dir>}}")


def hydra_value(v) -> str:
    """`v` as a Hydra override's value (a flow mapping or list, strings quoted)."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, str):
        return "'" + v.replace("'", "\\'") + "'"
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def task_overrides(own: dict, task: str) -> list[str]:
    """The overrides that give `task` its env (envs=) and its extra test sets (tests=)."""
    out = []
    spec = own["envs"].get(task)
    if spec is not None:
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        out += [f"env={spec.pop('name')}", *(f"env.{k}={hydra_value(v)}" for k, v in spec.items())]
    if own["tests"].get(task):
        out.append(f"paper.tests={hydra_value(own['tests'][task])}")
    return out


def main_commands(own: dict, rest: list[str]) -> list[list[str]]:
    """The multiruns of table=main: untrained rows with the first seed, trained rows with every seed."""
    generate_only = any(a.startswith("engine=") and a != "engine=local" and a != "engine=verl" for a in rest)
    rows = own["rows"] or ([r for r in names("row") if untrained(r)] if generate_only else
                           ["single", "single_grpo", "mas", "mas_shared", "mas_per_role"])
    if generate_only and not all(untrained(r) for r in rows):
        raise SystemExit(f"experiments.paper: rows={rows} with a generate-only engine: only the untrained rows "
                         f"({', '.join(r for r in names('row') if untrained(r))}) evaluate a served model; the trained "
                         "rows need engine=local or engine=verl")
    out = [f"paper.out={hydra_value(own['out'])}"] if own["out"] else []  # quoted: a comma would sweep
    cmds = []
    # tasks without their own env or test sets share one multirun; each other task runs its own
    plain = [t for t in own["tasks"] if not task_overrides(own, t)]
    task_groups = ([(plain, [])] if plain else []) + [([t], task_overrides(own, t)) for t in own["tasks"]
                                                       if t not in plain]
    for group, seeds in (([r for r in rows if untrained(r)], own["seeds"][:1]),
                         ([r for r in rows if not untrained(r)], own["seeds"])):
        for tasks, extra in task_groups if group else []:
            cmds.append([sys.executable, "-m", "experiments.paper.cell", f"row={','.join(group)}",
                         f"exp={','.join(tasks)}", f"seed={','.join(map(str, seeds))}", *out, *extra, *rest])
    return cmds


def out_dir(own: dict, rest: list[str]) -> Path:
    """Where the table goes: out=, else conf/paper.yaml's default runs/paper/<model> (the model=
    override's name, tiny by default), relative to the repository as the multiruns see it."""
    model = next((a.partition("=")[2] for a in rest if a.startswith("model=")), "tiny")
    return Path(own["out"]) if own["out"] else ROOT / "runs" / "paper" / model


def mismatch_commands(own: dict, rest: list[str]) -> list[list[str]]:
    base = out_dir(own, rest) / "mismatch"
    return [[sys.executable, "-m", "experiments.mismatch", f"exp={task}", f"seed={','.join(map(str, own['seeds']))}",
             f"mismatch.out={hydra_value(str(base / task))}", *task_overrides(own, task), *rest]
            for task in own["tasks"]]


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip() + "\n\nThe overrides: python -m marl.train --help.")
        return 0
    own, rest = parse(argv)
    cmds = main_commands(own, rest) if own["table"] == "main" else mismatch_commands(own, rest)
    for cmd in cmds:
        print("[paper] " + " ".join(cmd[1:]), flush=True)
        code = subprocess.call(cmd, cwd=ROOT)
        if code:
            return code
    if own["table"] == "mismatch":  # the per-task results beside the paper's, in one table
        from experiments.paper import mismatch_table
        mismatch_table.aggregate(out_dir(own, rest))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
