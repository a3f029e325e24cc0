"""Every W&B sweep file's command composes into a valid marl.train config at every grid point,
and its offline Hydra multirun expands to exactly the same grid."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from experiments import sweeps
from marl.config import run_settings

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def test_there_is_a_sweep_per_axis():
    swept = {k for n in sweeps.names() for k in sweeps.load(n)["parameters"]}
    assert {"harness", "policy", "algo.k", "algo.alpha", "harness.max_turns", "train.temperature"} <= swept


@pytest.mark.parametrize("name", sweeps.names())
def test_every_grid_point_composes_into_a_valid_config(name):
    sweep = sweeps.load(name)
    assert sweep["command"][:4] == ["${env}", "${interpreter}", "-m", "marl.train"]
    assert "${args_no_hyphens}" in sweep["command"]  # W&B passes key=value, Hydra's syntax
    points = sweeps.grid(sweep)
    n_expected = 1
    for p in sweep["parameters"].values():
        n_expected *= len(p["values"])
    assert len(points) == n_expected
    with initialize_config_dir(config_dir=CONF, version_base=None):
        for overrides in points:
            cfg = compose("config", overrides=overrides)
            run_settings(cfg)
            assert cfg.logger.group == f"sweep-{name}"  # one W&B group per sweep
            for o in overrides:
                key, value = o.split("=", 1)
                if key.startswith("+") or key == "logger.mode":
                    continue
                got = OmegaConf.select(cfg, key)
                got = got.name if hasattr(got, "name") and not isinstance(got, (int, float, str)) else got
                assert str(got) == value, (key, got, value)


@pytest.mark.parametrize("name", sweeps.names())
def test_offline_multirun_is_the_same_grid(name):
    args = sweeps.multirun_args(name)
    assert args[0] == "-m" and "logger.mode=offline" in args and not any(a == "logger.mode=online" for a in args)
    parsed = OverridesParser.create().parse_overrides([a for a in args[1:] if not a.startswith("hydra.")])
    swept = {o.key_or_group: [str(v) for v in o.sweep_iterator()] for o in parsed if o.is_sweep_override()}
    sweep = sweeps.load(name)
    assert swept == {k: [str(v) for v in p["values"]] for k, p in sweep["parameters"].items()}


def test_unknown_sweep_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: .*k"):
        sweeps.load("nope")


@pytest.mark.parametrize("name", sweeps.names())
def test_every_arm_of_a_sweep_starts_from_one_warm_start(name, monkeypatch):
    """No sweep's axis shapes the tiny model's build (marl.tiny: harness.max_turns is RL-time, the
    harness and policy are not part of it), so the sweep compares the setting, not warm starts.
    Before: the arms of `turns` had a warm start each."""
    from marl import tiny
    from marl.build import model_path, task_settings

    monkeypatch.setattr(tiny, "ensure_built", lambda harnesses, spec, cache_dir, log: tiny.cache_key(spec))
    keys = set()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        for overrides in sweeps.grid(sweeps.load(name)):
            s = run_settings(compose("config", overrides=[*overrides, "cache_dir=/nonexistent/cache"]))
            task, env_kw, h_kw = task_settings(s)
            keys.add(model_path(s, task, h_kw, env_kw, log=lambda *a: None))
    assert len(keys) == 1, keys
