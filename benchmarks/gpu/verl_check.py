"""engine=verl end to end on one GPU node: policy=shared, per_role and lora, a few steps each on a
randomly initialised Qwen3-1.7B-architecture model (the project's tiny tokenizer: nothing is
downloaded). One pass/fail line per check, and throughput.

    bash benchmarks/gpu/verl_check.sh [n_gpus]       # after: pip install torch==2.11.0 && pip install -e ".[gpu]"

Checks per policy kind, from the run's own outputs (metrics.jsonl, eval.json):
- start: the run finishes (replicas start, the rollout workers reach them, eval.json is written);
- generate: every step rolled out samples through the replicas;
- update: every policy's update gave a finite loss and a non-zero gradient norm;
- weight push: the sync after each update took place (timing/sync recorded, > 0);
- log-prob agreement: mean |vLLM log-prob - FSDP log-prob| on the sampled tokens before the
  first update is below LOGPROB_GAP (bf16 rounding; a mismatched weight push is orders larger).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
LOGPROB_GAP = 0.05
QWEN3_1_7B = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1000000.0,
                  tie_word_embeddings=True)


def build_model(out: Path) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    import envs
    import roles
    from marl.tiny import build_tokenizer, demonstrations
    task = envs.make("planpath")
    hs = [roles.make_harness(task, n) for n in ("mas", "single")]
    tok = build_tokenizer([p + "\n" + r for p, r in demonstrations(hs, range(400), 0.15, 0)])
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.eos_token_id, architectures=["Qwen3ForCausalLM"], **QWEN3_1_7B)
    Qwen3ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)


def check(name: str, ok: bool, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name:<32} {detail}", flush=True)
    return ok


def run_kind(kind: str, model: Path, gpus: int, steps: int, work: Path) -> bool:
    run_dir = work / kind
    cmd = [sys.executable, "-m", "marl.train", "+exp=planning", "engine=verl", f"policy={kind}",
           f"model.path={model}", "++model.dtype=bfloat16", f"engine.n_gpus_per_node={gpus}", f"train.steps={steps}",
           "train.problems_per_step=16", f"train.eval_every={steps}", "eval.n_val=16", "eval.n_test=16",
           "eval.warm_start=false", "logger=none", f"hydra.run.dir={run_dir}", f"cache_dir={work / 'cache'}"]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    (work / f"{kind}.log").write_text(proc.stdout + proc.stderr)
    ok = check(f"{kind}: start and finish", proc.returncode == 0 and (run_dir / "eval.json").exists(),
               f"exit {proc.returncode}, {wall:.0f} s (log: {work / (kind + '.log')})")
    if not ok:
        print(proc.stderr[-2000:])
        return False
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps_rows = [r for r in rows if "train/samples" in r]
    ok &= check(f"{kind}: generate", len(steps_rows) == steps and all(r["train/samples"] > 0 for r in steps_rows),
                f"{[int(r['train/samples']) for r in steps_rows]} samples per step")
    losses = {k: v for r in steps_rows for k, v in r.items() if k.endswith("pg_loss")}
    norms = [v for r in steps_rows for k, v in r.items() if k.endswith("grad_norm")]
    ok &= check(f"{kind}: update", bool(losses) and all(math.isfinite(v) for v in losses.values())
                and bool(norms) and all(v > 0 for v in norms), f"grad norms {[round(v, 3) for v in norms]}")
    ok &= check(f"{kind}: weight push", all(r.get("timing/sync", 0) > 0 for r in steps_rows),
                f"sync s {[round(r.get('timing/sync', 0), 2) for r in steps_rows]}")
    gaps = [v for k, v in steps_rows[0].items() if k.endswith("rollout_logprob_gap")]
    ok &= check(f"{kind}: log-prob agreement", bool(gaps) and max(gaps) < LOGPROB_GAP,
                f"mean |vLLM - FSDP| {[round(g, 4) for g in gaps]} (< {LOGPROB_GAP})")
    tokens = sum(r["train/response_tokens"] for r in steps_rows)
    gen_s = sum(r["timing/generate"] for r in steps_rows)
    step_s = sorted(r["timing/step"] for r in steps_rows)[len(steps_rows) // 2]
    print(f"      {kind}: {tokens / max(gen_s, 1e-9):.0f} generated tokens/s, median step {step_s:.1f} s", flush=True)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=0, help="0: every visible GPU")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--kinds", default="shared,per_role,lora")
    a = ap.parse_args()
    import torch
    print(f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA GPU'} x "
          f"{torch.cuda.device_count()}; torch {torch.__version__}", flush=True)
    gpus = a.gpus or torch.cuda.device_count()
    work = Path(tempfile.mkdtemp(prefix="marl-verl-check-"))
    build_model(work / "model")
    results = []
    for k in a.kinds.split(","):
        if k != "shared" and gpus % 2:  # two policies on disjoint GPU shares (engine.placement=split)
            results.append(check(f"{k}: start and finish", False, f"needs an even GPU count for 2 policies; {gpus} given"))
            continue
        results.append(run_kind(k, work / "model", gpus, a.steps, work))
    print(f"{sum(results)}/{len(results)} policy kinds passed every check; outputs in {work}")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
