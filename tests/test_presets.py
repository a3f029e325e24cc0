"""conf/preset/: the paper's settings in one place, used by every Qwen3 model config; the tiny
model's departures from them."""
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"


def resolved(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)


@pytest.mark.parametrize("model, exp, temperature", [("qwen3_1.7b", "sokoban", 1.5), ("qwen3_8b", "planning", 1.5),
                                                     ("qwen3_1.7b", "code", 1.0), ("qwen3_8b", "math", 1.0)])
def test_the_qwen_models_train_with_the_papers_settings(model, exp, temperature):
    c = resolved(f"+exp={exp}", f"model={model}")
    a, t = c["algo"], c["train"]
    assert (a["k"], a["alpha"], a["clip"], a["kl_coef"], a["entropy_coef"]) == (4, 1.0, 0.2, 0.0, 0.0)
    assert (t["lr"], t["schedule"], t["warmup_steps"], t["steps"]) == (5e-6, "cosine", 10, 200)
    assert t["temperature"] == temperature
    assert c["eval"]["val_temperature"] == (0.6 if exp == "math" else 0.0)  # the paper: greedy, or 0.6
    assert c["harness"]["max_turns"] == (5 if exp == "code" else 4)


def test_every_setting_of_the_paper_preset_cites_its_source():
    lines = (CONF / "preset" / "paper.yaml").read_text().splitlines()
    settings = [ln for ln in lines if ln.startswith("  ") and not ln.strip().startswith("#") and ":" in ln
                and not ln.rstrip().endswith(":") and "per_model" not in ln]
    body = yaml.safe_load("\n".join(lines))
    assert len(settings) >= 10 and set(body) == {"algo", "train", "eval", "per_model"}
    uncited = [ln for ln in settings if "paper" not in ln.split("#", 1)[-1] and "qwen:" not in ln
               and ln.split(":")[0].strip() not in ("temperature", "val_temperature", "val_samples")]
    assert uncited == []


def test_the_tiny_preset_departs_where_it_says_and_a_command_line_value_still_wins():
    c = resolved("+exp=planning")
    assert (c["train"]["lr"], c["train"]["steps"], c["train"]["mini_batch"]) == (3e-4, 60, 128)
    assert resolved("+exp=code")["train"]["steps"] == 100
    assert resolved("+exp=planning", "model=qwen3_1.7b", "train.lr=1e-5", "algo.k=8")["train"]["lr"] == 1e-5
    assert resolved("+exp=planning", "preset=paper")["train"]["lr"] == 5e-6  # the tiny model with the paper's settings
