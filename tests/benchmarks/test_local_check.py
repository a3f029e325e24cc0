"""benchmarks/gpu/local_check.py, the one-command check of engine=local on a GPU machine, run here
with --small on the CPU: its PASS/FAIL lines, exit status and JSON; the verl stand-in it uses
where verl is not installed, against verl's own functions; the padded tokenizer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu" / "local_check.py"
CHECKS = ["model on the device", "rollouts: K candidates per group", "rollouts: log-probs finite",
          "update: finite loss and grad norm", "update: weights changed", "generation uses the synced weights"]
# the target machine has no verl, Ray or vLLM: an import of any of them fails, as there
NO_VERL = ("import runpy, sys\nfor m in ('verl', 'ray', 'vllm'): sys.modules[m] = None\n"
           f"sys.argv = [{str(SCRIPT)!r}, *sys.argv[1:]]\nrunpy.run_path(sys.argv[0], run_name='__main__')")


def run_check(*args: str, verl: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *args] if verl else [sys.executable, "-c", NO_VERL, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def status_lines(out: str) -> dict[str, str]:
    return {line[6:40].strip(): line[:4] for line in out.splitlines() if line[:4] in ("PASS", "FAIL")}


@pytest.mark.e2e  # a rollout and an update on the CPU
def test_the_small_check_passes_without_verl_and_writes_its_json(tmp_path):
    out = tmp_path / "check.json"
    p = run_check("--small", "--out", str(out), verl=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert status_lines(p.stdout) == dict.fromkeys(CHECKS, "PASS")
    assert "verl_standin.py" in p.stdout
    res = json.loads(out.read_text())
    assert res["passed"] is True and [c["check"] for c in res["checks"]] == CHECKS
    assert res["verl"].startswith("stand-in")
    assert res["settings"]["k"] == 4 and res["settings"]["device"] == "cpu" and res["machine"]["device"] == "cpu"
    f = res["figures"]
    assert f["samples"] > 0 and f["generate_tokens_per_s"] > 0 and f["update_samples_per_s"] > 0
    assert 0 < f["weights_changed_share"] <= 1 and "peak_gpu_memory_gib" not in f  # no GPU here
    assert {"command", "date", "commit"} <= set(res)


@pytest.mark.e2e
def test_a_failed_check_exits_non_zero(tmp_path):
    """lr 1e-30 (marl refuses 0): the update rounds away, so generation cannot show new weights."""
    out = tmp_path / "check.json"
    p = run_check("--small", "--lr", "1e-30", "--out", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    lines = status_lines(p.stdout)
    assert lines["generation uses the synced weights"] == "FAIL"
    assert lines["rollouts: K candidates per group"] == "PASS"
    res = json.loads(out.read_text())
    assert res["passed"] is False and res["verl"] == "installed"


def test_without_a_gpu_the_full_check_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    import local_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no GPU, whatever this machine has

    out = tmp_path / "check.json"
    assert local_check.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sees no CUDA GPU" in err and "--small" in err
    assert not out.exists()


def test_the_verl_standin_computes_what_verl_does():
    from omegaconf import OmegaConf
    from verl.trainer.ppo import core_algos

    sys.path.insert(0, str(SCRIPT.parent))
    import verl_standin as standin

    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(12, 1, generator=g)
    index = [f"p{i // 4}" for i in range(11)] + ["alone"]
    for by_std in (True, False):
        ours = standin.compute_grpo_outcome_advantage(rewards.clone(), torch.ones(12, 1), index, 1e-6, by_std)[0]
        theirs = core_algos.compute_grpo_outcome_advantage(rewards.clone(), torch.ones(12, 1), index, 1e-6, by_std)[0]
        assert torch.equal(ours, theirs)
    lp, old, ref = (torch.randn(6, 9, generator=g) * 0.3 - 2 for _ in range(3))
    adv = torch.randn(6, 1, generator=g).expand(6, 9)
    mask = (torch.rand(6, 9, generator=g) > 0.2).float()
    cfg = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": None, "clip_ratio_high": None, "clip_ratio_c": 3.0,
                            "global_batch_info": {"dp_size": 1, "batch_num_tokens": 70}})
    ours = standin.get_policy_loss_fn("vanilla")(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask,
                                                 loss_agg_mode="token-mean", config=cfg)
    theirs = core_algos.get_policy_loss_fn("vanilla")(old_log_prob=old, log_prob=lp, advantages=adv,
                                                      response_mask=mask, loss_agg_mode="token-mean", config=cfg)
    assert torch.equal(ours[0], theirs[0]) and ours[1] == theirs[1]
    assert torch.equal(standin.agg_loss(lp, mask, "token-mean", batch_num_tokens=70),
                       core_algos.agg_loss(lp, mask, "token-mean", batch_num_tokens=70))
    for kind in ("low_var_kl", "k3", "kl", "k1", "abs", "mse", "k2", "low_var_kl+", "k1+", "k2+"):
        a, b = lp.clone().requires_grad_(), lp.clone().requires_grad_()
        ka, kb = standin.kl_penalty(a, ref, kind), core_algos.kl_penalty(b, ref, kind)
        ka.sum().backward()
        kb.sum().backward()
        assert torch.equal(ka, kb) and torch.equal(a.grad, b.grad), kind
    with pytest.raises(ValueError, match="token-mean only"):
        standin.agg_loss(lp, mask, "seq-mean-token-sum")


def test_the_padded_tokenizer_keeps_the_tiny_vocabulary_and_round_trips_fillers():
    sys.path.insert(0, str(SCRIPT.parent))
    from local_check import padded_tokenizer

    tok = padded_tokenizer(5000)
    assert len(tok) == 5000 and tok.decode([tok.eos_token_id], skip_special_tokens=True) == ""
    ids = list(range(40, 5000, 7))
    assert tok.encode(tok.decode(ids)) == ids  # a filler re-encodes to itself, one token each
    assert tok.unk_token_id not in tok.encode("plan: R R D\ngoal at 3 4")


def test_an_error_in_the_step_is_a_fail_line_and_the_json_is_still_written(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    import local_check

    def out_of_memory(*_):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(local_check, "update", out_of_memory)
    out = tmp_path / "check.json"
    assert local_check.main(["--small", "--out", str(out)]) == 1
    lines = status_lines(capsys.readouterr().out)
    assert lines["rollouts: K candidates per group"] == "PASS" and lines["the step ran to its end"] == "FAIL"
    res = json.loads(out.read_text())
    assert res["passed"] is False and "out of memory" in res["checks"][-1]["detail"]
    assert res["figures"]["samples"] > 0  # what was measured before the error is kept
