"""engine=local on one CUDA GPU with a randomly initialised Qwen3-1.7B-architecture model: one
AT-GRPO step of the trainer's own functions, a PASS/FAIL line per check, and throughput. For a GPU
machine with torch and transformers but no Ray, vLLM or verl, no network and no installs:
everything it needs is in the repository (nothing is downloaded, nothing is read from a cache).

    python benchmarks/gpu/local_check.py                 # one GPU; the JSON goes to $OUT or ./
    python benchmarks/gpu/local_check.py --dtype float32 # fp32 weights and AdamW state (bf16 rounds small steps away)
    python benchmarks/gpu/local_check.py --small         # the same checks on the CPU, a tiny model

The model: Qwen3-1.7B's dimensions (QWEN3_1_7B below, as in Qwen/Qwen3-1.7B's config.json:
~1.72B parameters, 1.41B of them outside the tied embedding), random weights, bf16 as
`model=qwen3_1.7b` runs it. The tokenizer: the tiny model's word-level tokenizer (`marl.tiny.
build_tokenizer`, trained in a fraction of a second on 200 Plan-Path demonstration episodes; the
tiny model's SFT warm start is not built), its vocabulary padded to Qwen's 151,936 entries with
filler tokens of one character each, so the embedding, the LM head and the (B, T, V) log-softmax
of the update have the real model's size. A random model samples almost only fillers and hardly
ever EOS, so every response has `--max-new-tokens` tokens; they decode to characters that encode
back to one token each, so a response quoted in a later turn's prompt keeps its length.

The step (`marl.train`'s own `build`, `collect`, `advantages`, `update`, then `sync_weights`):
`--problems` Plan-Path problems in the team harness (`+exp=planning`, harness=mas), K = 4
candidates per (turn, role) at temperature 1, one AT-GRPO update (`model=qwen3_1.7b`'s lr and
micro-batch, no warm-up, so the one step moves the weights). A random model scores every candidate
of a group alike (all advantages 0: no gradient), so the update takes the trainer's samples with
advantages +1 and -1 by candidate (zero mean in every group) in place of the computed ones. Checks:
- model on the device: every policy's parameters on cuda (cpu with --small), in the run's dtype;
- rollouts: every group has K candidates (the trainer's own grouping check) and every sampled
  token's log-prob is finite;
- update: finite loss, a finite non-zero grad norm, and weights that changed (the share of
  parameter elements that moved is reported: bf16 weights round small AdamW steps away);
- generation after sync: a seeded sample from the same prompts after `sync_weights` differs from
  the one before the update, and its log-probs agree with the updated model's teacher-forced ones.
Reported: peak GPU memory (`torch.cuda.max_memory_allocated`, and reserved, from the engine's
build to the end), generated tokens/s of the rollout, update samples/s. Exit status 1 on any FAIL,
2 when the check cannot start (no CUDA GPU without --small, a missing package).

Needs marl's own dependencies (hydra-core, omegaconf, tokenizers, numpy, tqdm, ...) except verl,
Ray and vLLM. marl's advantage and loss import verl's `core_algos` (which imports Ray): where verl
is not installed, `verl_standin.py` stands in for the functions they call (its test compares them
with verl's), and the JSON says which one ran.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "benchmarks" / "gpu")]
import verl_standin  # noqa: E402

VERL_STANDIN = verl_standin.install()  # before marl: its advantage and loss import verl's core_algos
try:
    from common import config, machine, table, train_run

    from marl.engine.local.logprobs import response_logprobs
    from marl.io import write_json
    from marl.train import advantages, collect, update
    from marl.types import TrainSample
except ModuleNotFoundError as e:
    print(f"local_check: {e.name!r} is not installed; the check needs marl's own dependencies (setup.py "
          f"install_requires, torch and transformers) except verl, Ray and vLLM", file=sys.stderr)
    sys.exit(2)

QWEN3_1_7B = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1000000.0,
                  rms_norm_eps=1e-6)
QWEN_VOCAB = 151936
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=4096)
SMALL_VOCAB = 4096  # padded as the full vocabulary is, so --small exercises the same tokenizer
K = 4
# mean |generation log-prob - teacher-forced log-prob| per token: the KV-cache decode and the
# update's packed forward round differently (bf16 far more than fp32). A model that generates
# with stale weights is caught by its seeded sample, the same as before the update
LOGPROB_GAP = {"bfloat16": 0.05, "float32": 1e-3}


def padded_tokenizer(vocab_size: int):
    """The tiny model's tokenizer (marl.tiny.build_tokenizer) padded to `vocab_size` entries with
    one-character filler tokens (CJK and later code points, no digits or spaces): the
    pre-tokenizer splits any such character off alone, so a filler re-encodes to itself."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    import envs
    from marl.tiny import SPECIALS, build_tokenizer, demonstrations
    from roles import harness_names, make_harness

    task = envs.make("planpath")
    harnesses = [make_harness(task, n) for n in harness_names(task.name)]
    tiny = build_tokenizer([p + "\n" + r for p, r in demonstrations(harnesses, range(200), 0.15, 0)])
    base = tiny.backend_tokenizer
    vocab = base.get_vocab()
    code = 0x4E00
    while len(vocab) < vocab_size:
        ch = chr(code)
        code += 1
        if not (0xD800 <= ord(ch) <= 0xDFFF or ch.isdecimal() or ch.isspace() or ch in vocab):
            vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = base.pre_tokenizer, base.decoder
    tok.add_special_tokens(SPECIALS)  # already in the vocabulary: marks them special (skipped on decode)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)


def write_model(out: Path, arch: dict, vocab_size: int, dtype: str, device: str) -> int:
    """A random Qwen3 of `arch` and the padded tokenizer, saved as a HF directory (what
    `model.path=` loads); initialised on `device` (seconds on a GPU, not minutes on its host).
    Returns the parameter count."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = padded_tokenizer(vocab_size)
    cfg = Qwen3Config(vocab_size=vocab_size, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.eos_token_id, tie_word_embeddings=True,
                      architectures=["Qwen3ForCausalLM"], **arch)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(cfg).to(getattr(torch, dtype))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    del model
    return n


def probe(engine, pid: str, prompts: list[list[int]], seed: int):
    """Seeded samples at temperature 1 from `pid`'s generate client, one per prompt."""
    torch.manual_seed(seed)
    client = engine.client(pid)
    return asyncio.run(_gather([client.generate(p, 1.0) for p in prompts]))


async def _gather(calls):
    return await asyncio.gather(*calls)


def logprob_gap(policy, prompts: list[list[int]], comps) -> float:
    """Mean |generation log-prob - the policy's teacher-forced log-prob| over the sampled tokens."""
    with torch.no_grad():
        lp, mask, _ = response_logprobs(policy.module, prompts, [c.token_ids for c in comps],
                                        [1.0] * len(comps), policy.pad_id)
    gen = torch.zeros_like(lp)
    for i, c in enumerate(comps):
        gen[i, :len(c.logprobs)] = torch.tensor(c.logprobs, device=lp.device)
    return float(((lp - gen).abs() * mask).sum() / mask.sum())


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git checkout)"


def one_step(r, check, figures: dict, device: str, dtype: str) -> None:
    """The trainer's step on `r` (marl.train.Run), with the checks around it."""
    cuda = device == "cuda"
    policies = r.engine.policies
    pid = r.engine.policy_ids[0]
    params = [p for pol in policies.values() for p in pol.module.parameters()]
    n = sum(p.numel() for p in policies[pid].module.parameters())
    check("model on the device", all(p.device.type == device and p.dtype == getattr(torch, dtype) for p in params),
          f"{n / 1e6:,.1f}M parameters, {dtype} on {device}, policy={r.engine.spec.kind}")

    r.engine.reset_stats()
    t0 = time.perf_counter()
    samples, _ = asyncio.run(collect(r, 0))  # the trainer's rollout of step 0
    figures["rollout_s"] = time.perf_counter() - t0
    gen = r.engine.stats()
    figures["generated_tokens"] = int(gen.get("new_tokens", 0))
    figures["generate_s"] = gen.get("seconds", 0.0)
    figures["generate_tokens_per_s"] = figures["generated_tokens"] / max(figures["generate_s"], 1e-9)
    figures["samples"] = len(samples)
    try:
        groups = r.algo.check(samples, K)
        check("rollouts: K candidates per group", len(samples) > 0,
              f"{len(samples)} samples in {int(groups['adv/n_groups'])} groups of {K}")
    except AssertionError as e:
        check("rollouts: K candidates per group", False, str(e))
    lps = [x for s in samples for x in s.logprobs]
    check("rollouts: log-probs finite", bool(lps) and all(math.isfinite(x) for x in lps)
          and all(len(s.logprobs) == len(s.response_ids) for s in samples),
          f"{len(lps)} sampled tokens, mean log-prob {sum(lps) / max(len(lps), 1):.3f}")

    prompts = list({tuple(s.prompt_ids): None for s in samples if s.turn == 0})[:4]
    prompts = [list(p) for p in prompts]
    before = probe(r.engine, pid, prompts, seed=1)
    old = {n: p.detach().to("cpu", copy=True) for n, p in policies[pid].module.named_parameters()}

    batch, _ = advantages(r, samples)
    # A random model scores every candidate of a group alike: all advantages are 0 and the
    # update has no gradient. Fixed zero-mean advantages per group give it one.
    figures["nonzero_advantages"] = sum(x.advantage != 0 for x in batch)
    batch = [TrainSample(x.sample, x.sample.candidate % 2 * 2.0 - 1.0) for x in batch]
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    m = update(r, batch)  # the trainer's update: one per policy, on its own samples
    if cuda:
        torch.cuda.synchronize()
    figures["update_s"] = time.perf_counter() - t0
    figures["update_samples_per_s"] = len(batch) / figures["update_s"]
    r.engine.sync_weights()
    loss, gn = m.get("train/pg_loss", math.nan), m.get("train/grad_norm", math.nan)
    check("update: finite loss and grad norm", math.isfinite(loss) and math.isfinite(gn) and gn > 0,
          f"pg_loss {loss:.4g}, grad_norm {gn:.4g}, lr {m.get('train/lr', math.nan):.3g}")
    moved = total = 0
    for n, p in policies[pid].module.named_parameters():
        moved += int((p.detach().cpu() != old[n]).sum())
        total += p.numel()
    figures["weights_changed_share"] = moved / total
    check("update: weights changed", moved > 0, f"{moved / total:.2%} of {pid}'s parameter elements moved")

    after = probe(r.engine, pid, prompts, seed=1)
    gap = logprob_gap(policies[pid], prompts, after)
    differs = any(x.token_ids != y.token_ids or x.logprobs != y.logprobs for x, y in zip(before, after))
    check("generation uses the synced weights", differs and gap < LOGPROB_GAP[dtype],
          f"seeded sample differs from before the update: {differs}; mean |generate - teacher-forced| "
          f"log-prob {gap:.2g} (< {LOGPROB_GAP[dtype]})")
    figures["generation_logprob_gap"] = gap


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="a tiny fp32 model on the CPU (tests this script)")
    ap.add_argument("--problems", type=int, default=None, help="problems in the step (default 8; 2 with --small)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="per response (default 256; 16 with --small)")
    ap.add_argument("--dtype", choices=sorted(LOGPROB_GAP), default=None,
                    help="the policies' dtype (default bfloat16, as model=qwen3_1.7b; float32 with --small)")
    ap.add_argument("--lr", type=float, default=5e-6, help="default: model=qwen3_1.7b's")
    ap.add_argument("--out", default=None,
                    help="the JSON file (default: $OUT/local_check.json, else ./local_check.json)")
    a = ap.parse_args(argv)
    device, dtype = ("cpu", a.dtype or "float32") if a.small else ("cuda", a.dtype or "bfloat16")
    if device == "cuda" and not torch.cuda.is_available():
        print(f"local_check: torch {torch.__version__} sees no CUDA GPU (built with CUDA: "
              f"{torch.version.cuda or 'no'}); run it on a GPU machine, or with --small on the CPU", file=sys.stderr)
        return 2
    problems = a.problems or (2 if a.small else 8)
    max_new = a.max_new_tokens or (16 if a.small else 256)
    out = Path(a.out) if a.out else Path(os.environ.get("OUT") or ".") / "local_check.json"
    cuda = device == "cuda"
    rows, figures = [], {}

    def check(name: str, ok: bool, detail: str) -> None:
        rows.append({"check": name, "pass": bool(ok), "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'}  {name:<34} {detail}", flush=True)

    if VERL_STANDIN:
        print("verl is not installed: its core_algos functions marl imports come from benchmarks/gpu/verl_standin.py")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="marl-local-check-") as work:
        model_dir = Path(work) / "model"
        n_params = write_model(model_dir, SMALL if a.small else QWEN3_1_7B,
                               SMALL_VOCAB if a.small else QWEN_VOCAB, dtype, device)
        figures["build_model_s"] = time.perf_counter() - t_start
        cfg = config([f"device={device}", "threads=1" if a.small else "threads=0", f"model.path={model_dir}",
                      f"++model.dtype={dtype}", f"model.max_new_tokens={max_new}", f"algo.k={K}",
                      "harness=mas", "train.temperature=1.0", f"train.problems_per_step={problems}",
                      f"train.lr={a.lr}", "train.warmup_steps=0", "train.micro_batch=8",
                      "eval.n_val=1", "eval.n_test=1"])
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with train_run(cfg) as r:
            try:
                one_step(r, check, figures, device, dtype)
            except Exception as e:  # an out-of-memory error, say: a FAIL line, and the JSON is still written
                traceback.print_exc()
                check("the step ran to its end", False, f"{type(e).__name__}: {e}"[:500])
        if cuda:
            figures["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            figures["peak_gpu_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    figures["wall_s"] = time.perf_counter() - t_start

    shown = ["peak_gpu_memory_gib", "peak_gpu_reserved_gib", "generate_tokens_per_s", "update_samples_per_s",
             "samples", "generated_tokens", "rollout_s", "update_s", "build_model_s", "wall_s"]
    print(table([[k, figures[k]] for k in shown if k in figures], ["figure", "value"]))
    ok = all(x["pass"] for x in rows)
    device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    write_json(out, {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "commit": commit(), "machine": {**machine(), "device": device_name},
                     "verl": "stand-in (benchmarks/gpu/verl_standin.py)" if VERL_STANDIN else "installed",
                     "settings": {"small": a.small, "device": device, "dtype": dtype, "params": n_params,
                                  "problems": problems, "k": K, "max_new_tokens": max_new, "lr": a.lr},
                     "figures": figures, "checks": rows, "passed": ok})
    print(f"{sum(x['pass'] for x in rows)}/{len(rows)} checks passed on {device_name}; wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
