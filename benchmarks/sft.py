"""The tiny model's SFT step: right-padded batches (the build before packing) vs sequences packed
into rows (`marl.tiny.pack`, what the build runs now). Same random batches, same model, forward +
backward + AdamW step, interleaved.

    python benchmarks/sft.py [--reps 10] [--width 128] [hydra overrides]

The data are the default warm start's demonstrations (every harness format), the model the
default tiny architecture freshly initialised (speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import config, median, save, table  # noqa: E402

from marl.build import task_settings  # noqa: E402
from marl.io import set_threads  # noqa: E402
from marl.tiny import build_tokenizer, demonstrations, encode_pair, new_model, pack  # noqa: E402
from roles import harness_names, make_harness  # noqa: E402


def padded(data, pad_id):
    """The baseline: one row per sequence, right-padded to the batch's longest."""
    width = max(len(p) + len(r) for p, r in data)
    ids = torch.full((len(data), width), pad_id)  # (B, L)
    labels = torch.full((len(data), width), -100)  # (B, L)
    for b, (p, r) in enumerate(data):
        ids[b, :len(p) + len(r)] = torch.tensor(p + r)
        labels[b, len(p):len(p) + len(r)] = torch.tensor(r)
    return {"input_ids": ids, "attention_mask": ids != pad_id}, labels


def packed(data, pad_id, width):
    ids, labels, pos = pack(data, width, pad_id)
    return {"input_ids": ids, "position_ids": pos}, labels


def step(model, opt, inputs, labels) -> float:
    t0 = time.perf_counter()
    logits = model(**inputs, use_cache=False).logits  # (rows, W, V)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--width", type=int, default=128)
    args, overrides = ap.parse_known_args()
    cfg = config(overrides)
    set_threads(cfg.model.sft["threads"])  # as the build runs (marl.tiny.ensure_built)
    task, _, h_kw = task_settings(cfg)
    hs = [make_harness(task, n, **h_kw) for n in harness_names(task.name)]
    sft = cfg.model.sft
    pairs = list(demonstrations(hs, range(sft["instances"]), sft["noise"], 0, sft.get("oracle_frac", 1.0)))
    tok = build_tokenizer([p + "\n" + r for p, r in pairs])
    data = [encode_pair(tok, p, r) for p, r in pairs]
    torch.manual_seed(0)
    model = new_model(tok, cfg.model.arch)
    opt = torch.optim.AdamW(model.parameters(), lr=sft["lr"])
    g = torch.Generator().manual_seed(0)
    times = {"padded": [], "packed": []}
    cells = {"padded": [], "packed": []}
    for rep in range(args.reps + 2):  # the first two warm up the allocator and kernels
        batch = [data[i] for i in torch.randint(len(data), (sft["batch"],), generator=g).tolist()]
        for name in ("padded", "packed") if rep % 2 == 0 else ("packed", "padded"):
            inputs, labels = padded(batch, tok.pad_token_id) if name == "padded" else packed(batch, tok.pad_token_id, args.width)
            dt = step(model, opt, inputs, labels)
            if rep >= 2:
                times[name].append(dt)
                cells[name].append(inputs["input_ids"].numel())
    rows = [[n, median(times[n]), median(cells[n]), sft["steps"] * median(times[n])] for n in ("padded", "packed")]
    ratio = median(times["padded"]) / median(times["packed"])
    print(table(rows, ["method", "s/step (median)", "token cells/step", f"SFT of {sft['steps']} steps (s)"]))
    print(f"packed is {ratio:.2f}x faster per step ({args.reps} reps, batch {sft['batch']}, width {args.width}, "
          f"{torch.get_num_threads()} threads)")
    print(f"wrote {save('sft', {'times': times, 'cells': cells, 'ratio': ratio, 'batch': sft['batch'], 'width': args.width})}")


if __name__ == "__main__":
    main()
