"""marl/build.py: a file-backed task's data is opened, parsed and sized before the model loads
(issue 27: an n_test larger than the test set used to fail after the warm-start validation)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import envs
from envs.data_files import DataError
from marl import build
from marl.config import run_settings

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _maths_run(tmp_path, *overrides):
    """The README's maths command (two 30-problem AIME sets) on fixture files, on the tiny model."""
    for name in ("aime24", "aime25"):
        _jsonl(tmp_path / name / "test.jsonl",
               ({"problem": f"{name}: compute {i}.", "answer": str(i)} for i in range(30)))
    _jsonl(tmp_path / "polaris" / "p.jsonl", ({"problem": f"What is {i}+1?", "answer": str(i + 1)} for i in range(200)))
    sets = f"{{aime24:{{data_dir:{tmp_path / 'aime24'}}},aime25:{{data_dir:{tmp_path / 'aime25'}}}}}"
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("config", overrides=["+exp=math", "env=polaris", f"env.data_dir={tmp_path / 'polaris'}",
                                           f"env.test_sets={sets}", "eval.n_val=1", *overrides])
    return run_settings(cfg)


@pytest.fixture
def no_model(monkeypatch):
    """Loading or building a model is a failure here: the refusal must come first."""
    def load(*a, **k):
        raise AssertionError("the model was built or loaded before the data was checked")
    monkeypatch.setattr(build, "model_path", load)
    monkeypatch.setattr(build, "make_engine", load)


def test_n_test_larger_than_the_test_sets_is_refused_before_the_model_loads(tmp_path, no_model):
    s = _maths_run(tmp_path)
    assert s.eval.n_test == 100  # the default
    with pytest.raises(ValueError, match=r"^eval.n_test=100 but the test split of polaris has 60 problems "
                                         r"\(env.test_sets.aime24.data_dir=.*aime24 \(test.jsonl: 30 rows\); "
                                         r"env.test_sets.aime25.data_dir=.*; set eval.n_test to at most 60$"):
        build.build_run(s)


def test_a_malformed_data_file_is_refused_before_the_model_loads(tmp_path, no_model):
    s = _maths_run(tmp_path, "eval.n_test=60")
    _jsonl(tmp_path / "aime25" / "test.jsonl", ['{"problem": "Compute 1.", "answer": "1"}', "not json"])
    with pytest.raises(DataError, match=r"aime25/test.jsonl line 2: not valid JSON"):
        build.build_run(s)


def test_a_run_whose_data_fits_goes_on_to_the_model(tmp_path, no_model):
    s = _maths_run(tmp_path, "eval.n_test=60")
    with pytest.raises(AssertionError, match="model was built or loaded"):
        build.build_run(s)
    assert build.check_data(envs.make("planpath"), {"train": 1, "val": 10**9, "test": 10**9}) is None  # generated
