"""experiments.paper: its own settings, the multiruns it starts, the table beside the paper's numbers
and the patterns checked on it; one small end-to-end table (e2e tier)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.paper import __main__ as paper
from experiments.paper.table import PAPER, markdown, patterns, table

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv, msg", [
    (["table=appendix"], r"table=appendix; allowed: main, mismatch"),
    (["tasks=[planning,chess]"], r"tasks=\['planning', 'chess'\]; allowed: a non-empty list of code, math, planning"),
    (["tasks=planning"], r"tasks=planning; allowed: a non-empty list"),
    (["rows=[single,best]"], r"rows=\['single', 'best'\]; allowed: a non-empty list of mas, mas_per_role"),
    (["seeds=[0,-1]"], r"seeds=\[0, -1\]; allowed: a non-empty list of integers >= 0"),
    (["seeds=[]"], r"seeds=\[\]; allowed"),
    (["--cfg", "job"], r"--cfg; allowed: key=value settings only"),
])
def test_its_own_settings_are_refused_naming_what_is_allowed(argv, msg):
    with pytest.raises(SystemExit, match=msg):
        paper.parse(argv)


def test_help_prints_the_usage_and_starts_nothing(capsys):
    assert paper.main(["tasks=[planning]", "--help"]) == 0
    assert "python -m experiments.paper table=mismatch" in capsys.readouterr().out


def test_untrained_rows_run_once_and_trained_rows_for_every_seed():
    own, rest = paper.parse(["tasks=[planning,sudoku]", "seeds=[3,4]", "train.steps=5"])
    assert rest == ["train.steps=5"] and own["table"] == "main"
    untrained, trained = paper.main_commands(own, rest)
    assert untrained[3:] == ["row=single,mas", "exp=planning,sudoku", "seed=3", "train.steps=5"]
    assert trained[3:] == ["row=single_grpo,mas_shared,mas_per_role", "exp=planning,sudoku", "seed=3,4", "train.steps=5"]
    assert untrained[2] == trained[2] == "experiments.paper.cell"


def test_a_served_model_runs_the_untrained_rows_only():
    served = ["engine=openai", "engine.base_url=http://h:1/v1", "engine.model=m"]
    own, rest = paper.parse(served)
    [cmd] = paper.main_commands(own, rest)
    assert "row=mas,single" in cmd and cmd[-3:] == served
    own, rest = paper.parse(["rows=[single,mas_shared]", *served])
    with pytest.raises(SystemExit, match=r"only the untrained rows \(mas, single\) evaluate a served model"):
        paper.main_commands(own, rest)


def test_the_mismatch_table_is_the_mismatch_experiment_per_task(tmp_path):
    own, rest = paper.parse(["table=mismatch", f"out={tmp_path}", "seeds=[0,1]"])
    [cmd] = paper.mismatch_commands(own, rest)
    assert cmd[2:] == ["experiments.mismatch", "exp=planning", "seed=0,1", f"mismatch.out='{tmp_path}/mismatch/planning'"]
    own, rest = paper.parse(["table=mismatch", "out=/tmp/a,b", "envs={planning: planpath10}"])
    [cmd] = paper.mismatch_commands(own, rest)  # quoted: a comma in a path is not a sweep; the task's env applies
    assert cmd[5:] == ["mismatch.out='/tmp/a,b/mismatch/planning'", "env=planpath10"]
    own, rest = paper.parse(["out=/tmp/a,b"])
    assert all(c[-1] == "paper.out='/tmp/a,b'" for c in paper.main_commands(own, rest))


def cell(row, env, seed, success, model="qwen3_1.7b"):
    return {"row": row, "env": env, "seed": seed, "success": success, "n": 100, "model": model, "task": env,
            "compute": {"wall_s": 10.0, "device_hours": 0.01, "device": "GPU"}}


def test_the_table_puts_the_papers_number_beside_a_matching_cell_only():
    cells = [cell("mas_shared", "planpath10", 0, 0.9), cell("mas_shared", "planpath10", 1, 0.94),
             cell("mas_shared", "planpath", 0, 0.5, model="tiny"),
             {**cell("mas_shared", "polaris", 0, 0.5), "tests": {"olympiadbench": {"success": 0.4, "n": 100}}}]
    rows = {(r["row"], r["env"], r["model"]): r for r in table(cells)}
    plan = rows["mas_shared", "planpath10", "qwen3_1.7b"]
    assert plan["column"] == "Plan-Path" and plan["paper"] == pytest.approx(0.96) and plan["seeds"] == 2
    assert plan["mean"] == pytest.approx(0.92) and plan["ci_lo"] < 0.92 < plan["ci_hi"] and plan["per_seed"] == "0.90 0.94"
    tiny = rows["mas_shared", "planpath", "tiny"]
    assert tiny["column"] == "planpath (tiny analogue)" and tiny["paper"] is None
    olym = rows["mas_shared", "olympiadbench", "qwen3_1.7b"]
    assert olym["paper_disputed"] and "paper 39.6%*" in markdown(table(cells), [])
    assert PAPER["main"]["qwen3_8b"]["mas_per_role"]["sokoban"] == 98.0


def test_the_papers_patterns_are_checked_on_our_means():
    cells = [cell(r, "sudoku", 0, v, "tiny") for r, v in (("single", 0.2), ("mas", 0.5), ("mas_shared", 0.9),
                                                           ("mas_per_role", 0.8), ("single_grpo", 0.95))]
    cells += [cell(r, "planpath", 0, v, "tiny") for r, v in (("single", 0.5), ("mas", 0.4), ("mas_shared", 0.6),
                                                             ("single_grpo", 0.55))]
    verdict = {p["id"]: p for p in patterns(table(cells))}
    order = verdict["planning_order"]  # sudoku holds; planpath does not (the team prompted is below one agent)
    assert (order["holds"], order["tasks"], order["fails_on"]) == (1, 2, ["planpath"])
    rl = verdict["team_beats_single_rl"]  # planpath holds; sudoku does not (GRPO alone 95% > the team's 90%)
    assert (rl["holds"], rl["tasks"], rl["fails_on"]) == (1, 2, ["sudoku"])
    assert verdict["prompt_only_team"]["fails_on"] == ["planpath"]
    md = markdown(table(cells), patterns(table(cells)))
    assert "| 1 of 2 tasks (not on planpath) |" in md


@pytest.mark.e2e
def test_a_small_main_table_runs_resumes_and_refuses_another_config(tmp_path):
    small = ["logger=none", "model.sft.steps=30", "model.sft.instances=300", "train.steps=2", "train.problems_per_step=3",
             "train.eval_every=2", "eval.n_val=4", "eval.n_test=4", "algo.k=2", "threads=1",
             f"cache_dir={tmp_path / 'cache'}"]
    cmd = [sys.executable, "-m", "experiments.paper", "tasks=[planning]", "seeds=[0,1]",
           "rows=[single,mas,mas_shared]", f"out={tmp_path / 'out'}", *small]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "out"
    done = sorted(str(c.relative_to(out / "cells").parent) for c in out.glob("cells/*/*/seed*/cell.json"))
    assert done == ["mas/planning/seed0", "mas_shared/planning/seed0", "mas_shared/planning/seed1",
                    "single/planning/seed0"]  # the untrained rows once
    c = json.loads((out / "cells/mas_shared/planning/seed1/cell.json").read_text())
    assert c["compute"]["train_samples"] > 0 and c["compute"]["device"] == "CPU core" and c["compute"]["commit"]
    assert (out / "cells/single/planning/seed0/config.yaml").exists() and (out / "table_main.png").exists()
    md = (out / "table_main.md").read_text()
    assert "| MAS + AT-GRPO, shared | " in md and "planpath (tiny analogue)" in md and "(0." in md
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count("finished before, skipped") == 4, again.stdout[-2000:]
    other = subprocess.run([*cmd, "train.lr=0.5"], cwd=ROOT, capture_output=True, text=True)
    assert other.returncode != 0 and "holds a cell trained with another config (differs in: train.lr)" in other.stderr


def test_the_readme_block_is_the_table_and_is_regenerated_in_place(tmp_path):
    from experiments.paper.table import update_readme

    out = tmp_path / "results"
    out.mkdir()
    (out / "table_main.md").write_text("| row | x |\n|---|---|\n| single agent | 50.0% |\n")
    (out / "compute_main.md").write_text("| a |\n\nTotal: 1 cells, 0.1 min of cell wall time, 0.001 device-hours.\n\n"
                                          "Peak RSS: a note after the total.\n")
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\n## Results\n\nhand-written text\n")
    update_readme(readme, out)
    first = readme.read_text()
    assert "| single agent | 50.0% |" in first and "Total: 1 cells" in first and first.startswith("# title")
    (out / "table_main.md").write_text("| row | x |\n|---|---|\n| single agent | 60.0% |\n")
    update_readme(readme, out)
    second = readme.read_text()
    assert "60.0%" in second and "50.0%" not in second and second.count("generated; do not edit") == 1
    assert "hand-written text" in second and "mismatch" not in second
    (out / "table_mismatch.md").write_text("| test set | trained |\n|---|---|\n| planpath (tiny analogue) | x |\n")
    update_readme(readme, out)
    third = readme.read_text()
    assert "| planpath (tiny analogue) | x |" in third and third.count("generated; do not edit") == 1


def test_a_tiny_cell_of_a_paper_task_is_labelled_an_analogue():
    from experiments.paper.table import column_label

    assert column_label("sokoban", "sokoban", "tiny") == "sokoban (tiny analogue)"
    assert column_label("sokoban", "sokoban", "qwen3_8b") == "Sokoban"
    assert column_label("planpath", None, "qwen3_8b") == "planpath"  # the 5x5 grid is not the paper's 10x10


def test_the_figure_draws_a_cell_solved_every_time(tmp_path):
    from experiments.paper.table import figure

    rows = table([cell("mas_shared", "planpath", 0, 1.0, "tiny"), cell("single", "planpath", 0, 0.0, "tiny")])
    assert rows[1]["ci_hi"] <= 1.0 and rows[1]["mean"] == 1.0
    figure(rows, tmp_path / "t.png")  # a Wilson bound a rounding error below 1.0 used to fail matplotlib
    assert (tmp_path / "t.png").stat().st_size > 0


def test_each_task_gets_its_own_env_and_test_sets_in_its_own_multirun():
    own, rest = paper.parse(["tasks=[planning,sudoku,code]", "seeds=[0]", "rows=[mas,mas_per_role]",
                             "envs={planning: planpath10, code: {name: apps, data_dir: /d/apps}}",
                             "tests={code: {livecodebench: {data_dir: /d/lcb}, codecontests: {data_dir: /d/cc}}}"])
    cmds = [c[3:] for c in paper.main_commands(own, rest)]
    assert cmds == [
        ["row=mas", "exp=sudoku", "seed=0"],
        ["row=mas", "exp=planning", "seed=0", "env=planpath10"],
        ["row=mas", "exp=code", "seed=0", "env=apps", "env.data_dir='/d/apps'",
         "paper.tests={livecodebench:{data_dir:'/d/lcb'},codecontests:{data_dir:'/d/cc'}}"],
        ["row=mas_per_role", "exp=sudoku", "seed=0"],
        ["row=mas_per_role", "exp=planning", "seed=0", "env=planpath10"],
        ["row=mas_per_role", "exp=code", "seed=0", "env=apps", "env.data_dir='/d/apps'",
         "paper.tests={livecodebench:{data_dir:'/d/lcb'},codecontests:{data_dir:'/d/cc'}}"]]


@pytest.mark.parametrize("argv, msg", [
    (["tasks=[planning,sudoku]", "env=planpath10"], r"env= applies to every task of the table; with several tasks"),
    (["envs={math: polaris}"], r"envs=\{'math': 'polaris'\}; allowed: a mapping from tasks run \(planning\)"),
    (["tasks=[code]", "envs={code: apss}"], r"envs.code=apss; allowed: an env name \(aime24, aime25, apps,"),
    (["tasks=[math]", "tests={math: [aime24]}"], r"tests.math=\['aime24'\]; allowed: \{<env name>: \{data_dir"),
    (["tasks=[math]", "tests={math: {aime2024: {data_dir: x}}}"], r"tests.math=.*allowed"),
    (["tasks=[math]", "paper.tests={aime24: {data_dir: x}}"], r"paper.tests= would test every task on the same sets"),
    (["table=mismatch", "tests={planning: {sokoban: {}}}"], r"tests= is for table=main"),
])
def test_per_task_envs_and_tests_are_refused_naming_what_is_allowed(argv, msg):
    argv = argv if any(a.startswith("tasks=") for a in argv) else ["tasks=[planning]", *argv]
    with pytest.raises(SystemExit, match=msg):
        paper.parse(argv)


def test_a_trained_row_stands_beside_the_paper_only_where_it_trained_as_the_paper_did():
    """AIME24 after Polaris is the paper's cell; AIME24 after the generated maths task is not. The
    untrained rows are the same model on the same set either way."""
    def trained_on(env, row="mas_per_role"):
        return {**cell(row, env, 0, 0.5), "tests": {"aime24": {"success": 0.2, "n": 30}}}
    aime = lambda cs: next(r for r in table(cs) if r["env"] == "aime24")  # noqa: E731
    assert aime([trained_on("polaris")])["paper"] == pytest.approx(0.133)
    assert aime([trained_on("math")])["paper"] is None
    assert aime([trained_on("math", row="mas")])["paper"] == pytest.approx(0.133)


def test_each_extra_test_set_is_a_column_of_its_own():
    polaris = {**cell("mas_per_role", "polaris", 0, 0.5), "tests": {"aime24": {"success": 0.2, "n": 30},
                                                                    "olympiadbench": {"success": 0.4, "n": 675}}}
    rows = {r["column"]: r for r in table([polaris, {**polaris, "seed": 1, "tests": {"aime24": {"success": 0.3, "n": 30}}}])}
    assert set(rows) == {"polaris", "AIME24", "OlympiadBench"}
    assert rows["AIME24"]["per_seed"] == "0.20 0.30" and rows["AIME24"]["paper"] == pytest.approx(0.133)
    assert rows["OlympiadBench"]["seeds"] == 1 and rows["AIME24"]["trained_on"] == "polaris"
    assert rows["polaris"]["wall_s"] == 20.0 and rows["AIME24"]["wall_s"] == 0  # a cell's compute counts once


@pytest.mark.e2e
def test_a_cell_is_tested_on_its_extra_test_sets(tmp_path):
    from eval_sets import maths_files

    small = ["logger=none", "model.sft.steps=30", "model.sft.instances=300", "train.steps=2", "train.problems_per_step=3",
             "train.eval_every=2", "eval.n_val=4", "eval.n_test=4", "algo.k=2", "threads=1",
             f"cache_dir={tmp_path / 'cache'}"]
    a24, a25 = maths_files(tmp_path / "a24", 3), maths_files(tmp_path / "a25", 2)
    cmd = [sys.executable, "-m", "experiments.paper", "tasks=[math]", "seeds=[0]", "rows=[mas,mas_shared]",
           f"out={tmp_path / 'out'}", f"tests={{math: {{aime24: {{data_dir: {a24}}}, aime25: {{data_dir: {a25}}}}}}}",
           *small]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    for row in ("mas", "mas_shared"):
        c = json.loads((tmp_path / f"out/cells/{row}/math/seed0/cell.json").read_text())
        assert {k: v["n"] for k, v in c["tests"].items()} == {"aime24": 3, "aime25": 2}
        assert (tmp_path / f"out/cells/{row}/math/seed0/evaluate_aime24.episodes.jsonl").exists()
    md = (tmp_path / "out/table_main.md").read_text()
    assert "aime24 (tiny analogue)" in md and "aime25 (tiny analogue)" in md and "math (tiny analogue)" in md
    bad = subprocess.run([*cmd[:4], "rows=[mas]", f"out={tmp_path / 'bad'}", "tests={math: {sudoku: {}}}", *small],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "paper.tests.sudoku: not a task of math's family" in bad.stderr


def test_a_cells_peak_memory_is_its_own_not_an_earlier_cells_of_the_multirun(tmp_path, monkeypatch):
    """Cells of a multirun share a process: the cell resets the resident high-water mark when it
    begins, so 1 GB an earlier cell held and freed is not this cell's peak."""
    import numpy as np
    from hydra import compose, initialize_config_dir

    from experiments.paper import cell as paper_cell
    from marl.metrics import memory_mb

    if "system/step_peak_rss_mb" not in memory_mb():
        pytest.skip("this container does not allow resetting the high-water mark")

    def evaluate(c, s, cell, n, out):  # the cell's own work: 100 MB touched, then freed
        a = np.ones(100 * 2**20 // 8)
        del a
        return {s.task.harness: {"test": {"success": 0.5, "n": 4}}}

    monkeypatch.setattr(paper_cell, "evaluate_untrained", evaluate)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("paper", overrides=["row=single", "exp=planning", f"cache_dir={tmp_path / 'cache'}"])
    from omegaconf import OmegaConf
    c = OmegaConf.to_container(cfg, resolve=True)
    c["paper"].update(task="planning", env="planpath")
    earlier = np.ones(1024 * 2**20 // 8)  # an earlier cell's peak, not reset after it
    del earlier
    result = paper_cell.run_cell(c, tmp_path / "cell")
    assert memory_mb()["system/peak_rss_mb"] - result["compute"]["peak_rss_mb"] > 600
    assert result["compute"]["peak_rss_mb"] >= memory_mb()["system/rss_mb"] + 80  # it saw its own 100 MB


def test_the_cell_peak_is_the_largest_step_or_end_peak_or_the_process_peak_where_none_resets():
    from experiments.paper.cell import peak_mb

    rows = [{"system/step_peak_rss_mb": 900.0, "system/peak_rss_mb": 1600.0}, {"system/peak_rss_mb": 1600.0},
            {"system/step_peak_rss_mb": 950.0, "system/peak_rss_mb": 1600.0}]
    assert peak_mb(rows, {"system/step_peak_rss_mb": 700.0, "system/peak_rss_mb": 1600.0}) == 950.0
    assert peak_mb(rows, {"system/step_peak_rss_mb": 990.0, "system/peak_rss_mb": 1600.0}) == 990.0
    assert peak_mb([], {"system/peak_rss_mb": 1600.0}) == 1600.0


def test_the_compute_total_keeps_gpu_hours_and_cpu_core_hours_apart():
    from experiments.paper.table import compute_markdown

    def c(row, device, hours):
        return {"row": row, "task": "planning", "seed": 0, "compute": {
            "wall_s": 60.0, "device_hours": hours, "device": device, "train_samples": 0, "peak_rss_mb": 1.0,
            "commit": "abc"}}

    total = compute_markdown([c("single", "CPU core", 0.5), c("mas_shared", "GPU", 2.0), c("mas", "GPU", 1.0)])
    assert "Total: 3 cells, 3.0 min of cell wall time, 0.500 CPU core-hours + 3.000 GPU-hours." in total


def test_the_table_and_estimate_commands_refuse_a_directory_without_cells(tmp_path):
    from experiments.paper import estimate, table as paper_table

    with pytest.raises(SystemExit, match=r"experiments.paper.table: no finished cells .* under "):
        paper_table.main([str(tmp_path)])
    with pytest.raises(SystemExit, match=r"experiments.paper.estimate: no finished cells .* under "):
        estimate.main([str(tmp_path), "--steps", "200"])
