"""Rollout generation: the local engine's batching client vs one HF `generate` call per request.

    python benchmarks/generate.py [--problems 16] [--reps 5] [hydra overrides, e.g. algo.k=8]

Requests are those of one rollout step: the first-turn prompts of the team's two roles for
`--problems` train instances, each asked K times (the K candidates of a group). Every method
runs the same model, prompts, sampling settings (temperature, no top-k/top-p) and token budget:
- batched: the local engine's client (`engine.client(pid)`: `BatchingClient` -> `Batcher` ->
  `Runner.generate_batch`), every request of a (turn, role) step in one call, as the rollout
  issues them, each distinct prompt prefilled once;
- batched_no_share: the same call on a `Runner(share_prefix=False)` of the same model, running
  every request's prompt in full;
- hf_batched: one HF `generate` call for the whole left-padded batch (what the engine used
  before its own decoding loop);
- per_request: one HF `generate` call per request (the baseline of the issue).
Two regimes:
- `eos`: generation stops at EOS (what a run does); tokens counted are those produced;
- `fixed`: EOS is suppressed until max_new_tokens, so every method produces exactly the same
  number of tokens.
Repetitions are interleaved (batched, per-request, batched, ...) and the median is reported.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build, config, median, save, table  # noqa: E402

from marl.engine.local.batching import BatchingClient  # noqa: E402
from marl.engine.local.decode import Runner  # noqa: E402


def step_prompts(harness, task, encode, problems: int) -> dict[str, list[list[int]]]:
    """{role: prompt token ids of turn 0, one per problem}; the plan agent's prompt carries the
    tool output of the oracle's call, as in a rollout where the tool agent was right."""
    out = {r: [] for r in harness.role_names}
    for i in range(problems):
        state = harness.reset(task.instance("train", i))
        for r in harness.role_names:
            out[r].append(encode(harness.prompt(state, r)))
            state = harness.act_sync(state, r, harness.role(r).demo(state)).state
    return out


def run_batched(client, prompts, temp):
    async def go():
        return await asyncio.gather(*[client.generate(p, temp) for p in prompts])
    return asyncio.run(go())


def hf_generate(runner, prompts, temp):
    """One HF `generate` call over `prompts` on the runner's model, left-padded, with its token
    budget; returns each row's new tokens up to its EOS."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[runner.pad_id] * (width - len(p)) + p for p in prompts])  # (B, P)
    attn = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts]).unsqueeze(1)).long()
    greedy = temp <= 0
    out = runner.model.generate(
        input_ids=ids, attention_mask=attn, do_sample=not greedy, temperature=None if greedy else temp,
        top_k=None, top_p=None, max_new_tokens=runner.max_new_tokens, min_new_tokens=runner.min_new_tokens or None,
        eos_token_id=runner.eos_id, pad_token_id=runner.pad_id)
    rows = []
    for toks in out[:, width:].tolist():
        rows.append(toks[:toks.index(runner.eos_id) + 1] if runner.eos_id in toks else toks)
    return rows


def run_single(runner, prompts, temp):
    return [r for p in prompts for r in hf_generate(runner, [p], temp)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=1.0)
    args, overrides = ap.parse_known_args()
    cfg = config(overrides)
    built, harnesses = build(cfg)
    engine, k = built.engine, cfg.algo.k
    pid = engine.policy_ids[0]  # the first policy: "shared" by default
    client = engine.client(pid)  # what the rollout awaits
    runner = client.runner  # its model, tokenizer and token budget
    unshared = BatchingClient(Runner(runner.model, runner.tok, runner.max_new_tokens, runner.max_batch,
                                     share_prefix=False), adapter=client.adapter)
    prompts = step_prompts(harnesses["mas"], built.task, functools.partial(engine.encode, pid), args.problems)
    requests = {r: [p for p in ps for _ in range(k)] for r, ps in prompts.items()}  # (problems*K,) per role
    results, rows = {}, []
    for regime in ("eos", "fixed"):
        for rn in (runner, unshared.runner):
            rn.min_new_tokens = rn.max_new_tokens if regime == "fixed" else 0
        methods = (("batched", run_batched, client), ("batched_no_share", run_batched, unshared),
                   ("hf_batched", hf_generate, runner), ("per_request", run_single, runner))
        times = {m: [] for m, _, _ in methods}
        tokens = {m: [] for m, _, _ in methods}
        for _ in range(args.reps):
            for method, fn, cl in methods:
                t0, n = time.perf_counter(), 0
                for reqs in requests.values():  # one (turn, role) step after the other, as a rollout does
                    outs = [getattr(c, "token_ids", c) for c in fn(cl, reqs, args.temperature)]
                    n += sum(len(o) for o in outs)
                    if regime == "fixed":
                        assert all(len(o) == runner.max_new_tokens for o in outs)
                times[method].append(time.perf_counter() - t0)
                tokens[method].append(n)
        tps = {m: median([n / t for n, t in zip(tokens[m], times[m])]) for m in times}
        results[regime] = {"seconds": {m: median(v) for m, v in times.items()},
                           "tokens": {m: median(v) for m, v in tokens.items()},
                           "tokens_per_s": tps, "ratio": tps["batched"] / tps["per_request"],
                           "ratio_share_prefix": tps["batched"] / tps["batched_no_share"],
                           "ratio_hf_batched": tps["batched"] / tps["hf_batched"],
                           "all_seconds": times}
        rows += [[regime, m, median(tokens[m]), median(times[m]), tps[m]] for m in times]
        rows.append([regime, "ratio batched/per-request", "", "", results[regime]["ratio"]])
        rows.append([regime, "ratio batched/batched_no_share", "", "", results[regime]["ratio_share_prefix"]])
        rows.append([regime, "ratio batched/hf_batched", "", "", results[regime]["ratio_hf_batched"]])
    runner.min_new_tokens = 0
    n_req = sum(len(v) for v in requests.values())
    print(f"{n_req} requests per repetition ({args.problems} problems x K={k} x {len(requests)} roles), "
          f"max_new_tokens={runner.max_new_tokens}, temperature={args.temperature}, reps={args.reps}")
    print(table(rows, ["regime", "method", "new tokens", "seconds (median)", "tokens/s (median)"]))
    path = save("generate", {"args": vars(args), "overrides": overrides, "requests": n_req,
                             "max_new_tokens": runner.max_new_tokens, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
