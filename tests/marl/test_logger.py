"""metrics.jsonl: rows appended per step, non-finite values kept visible, and the rewind a
resumed run does (drop the rows logged after its checkpoint), which a kill cannot corrupt."""
from __future__ import annotations

import json
import os

import pytest

from marl.logger import JsonlLogger


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_append_and_non_finite_values_stay_visible(tmp_path):
    log = JsonlLogger(tmp_path / "m" / "metrics.jsonl")
    log.log({"train/reward": 0.5}, step=1)
    log.log({"train/reward": float("nan"), "train/kl": float("inf")}, step=2)
    assert rows(log.path) == [{"step": 1, "train/reward": 0.5}, {"step": 2, "train/reward": "nan", "train/kl": "inf"}]
    again = JsonlLogger(log.path)  # a resumed run continues the same file
    again.log({"train/reward": 1.0}, step=3)
    assert [r["step"] for r in rows(log.path)] == [1, 2, 3]


def test_rewind_drops_only_rows_after_the_step(tmp_path):
    log = JsonlLogger(tmp_path / "metrics.jsonl")
    for step in (0, 1, 2, 2, 3):  # step 2 twice: validation row and the step's row
        log.log({"x": step}, step=step)
    log.rewind(2)
    assert [r["step"] for r in rows(log.path)] == [0, 1, 2, 2]
    log.rewind(0)
    assert rows(log.path) == [{"step": 0, "x": 0}]
    JsonlLogger(tmp_path / "none.jsonl").rewind(5)  # nothing logged yet: nothing to do
    assert not (tmp_path / "none.jsonl").exists()


def test_a_rewind_killed_before_its_rename_changes_nothing(tmp_path, monkeypatch):
    log = JsonlLogger(tmp_path / "metrics.jsonl")
    for step in range(4):
        log.log({"x": step}, step=step)
    before = log.path.read_text()

    def killed(src, dst):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        log.rewind(1)
    assert log.path.read_text() == before
