"""The tiny default model: a Qwen3-architecture causal LM of about a million parameters, a
word-level tokenizer trained on the task's own text, and a warm start by supervised fine-tuning
on oracle demonstrations in every harness format.

Both are cached under `<cache_dir>/tiny-<hash>/`, the hash covering exactly what shapes them
(the task's instances and the harnesses' formats, model config, SFT settings, seed), so a second
run loads them at once. The settings a run reads only while it trains and evaluates (RL-time:
rewards, the number of turns, time and memory limits; `RL_TIME_ENV`, `RL_TIME_HARNESS`) do not
enter it: a warm start is built with them at their defaults (`build_settings`), whatever the run
sets, so every arm of a sweep over one of them (experiments/sweeps/turns.yaml: harness.max_turns)
starts from the same model, and the comparison is of the setting alone. The directory is written
under a temporary name and renamed into place, so a killed build never leaves a half-written
cache behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from marl.engine.tokens import encode_pair
from marl.io import atomic_dir, check_writable, set_threads
from marl.packing import first_fit

from roles.base import Harness

SPECIALS = ["<pad>", "<eos>", "<unk>"]
VERSION = 5  # bump when the build recipe changes, to invalidate old caches
CONF = Path(__file__).resolve().parents[1] / "conf"  # the defaults of the env and harness settings

# RL-time settings, per task (envs/) and per harness family (roles/): read only by the runs' rewards
# and limits, never by the build's demonstrations (oracle and naive text, whatever they score),
# tokenizer or SFT. Every other env and harness setting is build-time: it shapes the instances, the
# prompts or the answers' format. A task or family not listed here has none (nothing is shared).
# - rewards, parse_penalty: score actions;
# - max_turns: caps an episode, so the demonstration episodes too: built at the family's default;
# - tool_timeout_s, timeout_s, memory_mb: a program's limits (the demonstrators' programs run well
#   inside the defaults the build uses).
_CODEBENCH = ("rewards", "timeout_s", "memory_mb")
RL_TIME_ENV: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("planpath", "sokoban", "sudoku", "code", "math", "polaris", "aime24", "aime25",
                     "olympiadbench"), ("rewards",)),
    **dict.fromkeys(("apps", "codecontests", "livecodebench"), _CODEBENCH),
}
RL_TIME_HARNESS: dict[str, tuple[str, tuple[str, ...]]] = {  # family -> (its conf/family/ file, settings)
    "planning": ("planning", ("max_turns", "parse_penalty", "tool_timeout_s")),
    "code": ("code", ("max_turns", "parse_penalty")),
    "maths": ("math", ("max_turns", "parse_penalty")),
}


def build_settings(task_name: str, env_kw: dict, h_kw: dict) -> tuple[dict, dict]:
    """(env kwargs, harness kwargs) that the warm start of a run with these settings is built from,
    and keyed by: the run's build-time settings, and its RL-time settings at their defaults
    (conf/env/<task>.yaml, conf/family/<family>.yaml; one with no default on file is left out, so
    the task's or family's own default applies). The default settings give back exactly the run's."""
    from roles import harness_family

    family = harness_family(task_name)
    conf, h_rl = RL_TIME_HARNESS.get(family.name if family else "", ("", ()))
    return (_at_defaults(env_kw, RL_TIME_ENV.get(task_name, ()), CONF / "env" / f"{task_name}.yaml"),
            _at_defaults(h_kw, h_rl, CONF / "family" / f"{conf}.yaml"))


def _at_defaults(kw: dict, rl_time: tuple[str, ...], defaults_file: Path) -> dict:
    if not rl_time:
        return dict(kw)
    defaults = OmegaConf.to_container(OmegaConf.load(defaults_file)) if defaults_file.is_file() else {}
    return {k: defaults[k] if k in rl_time else v for k, v in kw.items() if k not in rl_time or k in defaults}


def demonstrations(harnesses: list[Harness], split_index: range, noise: float, seed: int,
                   oracle_frac: float | dict[str, float] = 1.0):
    """(prompt, response) pairs for every role of every harness.

    Each target comes from the oracle with probability `oracle_frac`, else from the role's naive
    demonstrator (a plausible heuristic: for Plan-Path, a walk that ignores walls and the tool,
    and coordinates read transposed). A model fitted to this mixture has both behaviours and
    chooses between them per state: competent but far from perfect, the way a pretrained model
    holds right and wrong habits side by side, and RL must learn from reward which one pays.
    With probability `noise` an action is instead a plausible wrong response that is executed but
    never a target: it makes the episodes visit the states a learner meets (a history line, a
    bad tool answer). `oracle_frac` is one share for every role or {role: share}.
    """
    rng = random.Random(seed)
    for i in split_index:
        for h in harnesses:
            yield from _episode(h, h.reset(h.task.instance("train", i)), rng, noise, oracle_frac)


def _episode(h: Harness, state, rng: random.Random, noise: float, oracle_frac):
    """One demonstration episode (see `demonstrations`); it ends early at a dead end, a state
    the task cannot be solved from (`oracle` gives None, e.g. a Sokoban box in a corner), where
    no answer is right."""
    while not state.done:
        for name in h.role_names:
            if h.task.oracle(state.task_state) is None:
                return
            role = h.role(name)
            prompt = h.prompt(state, name)
            if rng.random() < noise:
                text = role.noise(state, rng)
            else:
                frac = oracle_frac[name] if isinstance(oracle_frac, dict) else oracle_frac
                # (a share of 1 draws nothing, keeping the oracle-only data stream)
                oracle = frac >= 1.0 or rng.random() < frac
                text = role.demo(state) if oracle else role.naive(state)
                yield prompt, text
            state = h.act_sync(state, name, text).state
            if state.done:
                return


def build_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Word-level: every grid symbol, digit and punctuation mark is a token of its own, words
    are whole tokens, and spaces/newlines are tokens, so decoding concatenates exactly."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[A-Za-z]+|\d|[^A-Za-z\d]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)


def new_model(tok, arch: dict) -> Qwen3ForCausalLM:
    """A freshly initialised Qwen3 of architecture `arch` (Qwen3Config kwargs) over `tok`'s vocabulary."""
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
                                        tie_word_embeddings=True, **arch))


def pack(data: list[tuple[list[int], list[int]]], width: int, pad_id: int):
    """Pack (prompt, response) pairs into rows of at most `width` tokens, first fit by decreasing
    length. Returns ids, labels (-100 = not a target) and position ids, each (rows, W).

    Position ids restart at 0 for each sequence; transformers reads a restart as a sequence
    boundary and masks attention across it (only without a KV cache: `use_cache=False`), so the
    loss of a packed row equals the sum of its sequences' losses computed one by one, without
    the ~1/3 of padding that right-padding a random batch of these prompts wastes.
    """
    lengths = [len(p) + len(r) for p, r in data]
    if max(lengths) > width:
        raise ValueError(f"a demonstration of {max(lengths)} tokens does not fit a row of {width}")
    rows = first_fit(lengths, width)  # indices into data, per row
    w = max(sum(lengths[i] for i in r) for r in rows)
    ids = torch.full((len(rows), w), pad_id)  # (rows, W)
    labels = torch.full((len(rows), w), -100)  # (rows, W)
    pos = torch.zeros((len(rows), w), dtype=torch.long)  # (rows, W)
    for b, members in enumerate(rows):
        o = 0
        for i in members:
            p, r = data[i]
            n = len(p) + len(r)
            ids[b, o:o + n] = torch.tensor(p + r)
            labels[b, o + len(p):o + n] = torch.tensor(r)
            pos[b, o:o + n] = torch.arange(n)
            o += n
        pos[b, o:] = torch.arange(w - o)  # the padded tail is a sequence of its own, never a target
    return ids, labels, pos


def sft(model, tok, pairs: list[tuple[str, str]], steps: int, batch: int, lr: float, seed: int,
        log=None, width: int = 128) -> dict[str, float]:
    """Cross-entropy (token mean) on response tokens only; AdamW with linear decay. Each step
    draws `batch` random pairs and packs them into rows of `width` tokens (see `pack`)."""
    g = torch.Generator().manual_seed(seed)
    data = [encode_pair(tok, p, r) for p, r in pairs]
    width = max(width, max(len(p) + len(r) for p, r in data))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / max(steps, 1))
    model.train()
    loss_ema = None
    for step in range(steps):
        idx = torch.randint(len(data), (batch,), generator=g).tolist()
        ids, labels, pos = pack([data[i] for i in idx], width, tok.pad_token_id)  # (rows, W) each
        logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits  # (rows, W, V)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        if log is not None and (step % 100 == 0 or step == steps - 1):
            log(step, loss_ema)
    model.eval()
    return {"sft/loss": loss_ema or 0.0}


def numerics() -> dict[str, str]:
    """What decides the built model's numbers besides its config: the library versions and the
    CPU kernel path torch picked (AVX2 and AVX-512 kernels round differently, and 600 SFT steps
    turn that into a different warm start), so a cache copied from another machine is rebuilt."""
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "cpu_kernels": torch.backends.cpu.get_cpu_capability()}


def cache_key(spec: dict) -> str:
    """Hash of everything that shapes the model; `sft.threads` only sets the build's speed."""
    spec = {**spec, "sft": {k: v for k, v in spec.get("sft", {}).items() if k != "threads"}}
    return hashlib.sha256(json.dumps({**spec, "version": VERSION, "numerics": numerics()},
                                     sort_keys=True).encode()).hexdigest()[:16]


def ensure_built(harnesses: list[Harness], spec: dict, cache_dir: str, log=print) -> Path:
    """The cache directory (a HF model directory) of the tiny model described by `spec`, built
    first when it is not there:
    {"model": Qwen3Config kwargs, "sft": {instances, noise, oracle_frac, steps, batch, lr, threads}, "seed", "task": ...}.
    sft.threads: torch threads for the build (0 or absent = every core: it is one large job, ~1.9x
    faster at 2 threads than 1 on an idle 2-core machine); the run's own setting is restored after."""
    path = Path(os.path.expanduser(cache_dir)) / f"tiny-{cache_key(spec)}"
    if (path / "done.json").exists():
        return path  # a read-only cache holding it serves
    check_writable(path.parent, "cache_dir", f"the tiny model this run starts from is not built there yet "
                   f"({path.name}), and its build (minutes) is cached there. Point cache_dir= at a writable directory")
    t0 = time.time()
    sft_spec, seed = spec["sft"], spec["seed"]
    pairs = list(demonstrations(harnesses, range(sft_spec["instances"]), sft_spec["noise"], seed,
                                 sft_spec.get("oracle_frac", 1.0)))
    tok = build_tokenizer([p + "\n" + r for p, r in pairs])
    torch.manual_seed(seed)
    model = new_model(tok, spec["model"])
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[tiny] building: {n_params / 1e6:.2f}M parameters, vocab {len(tok)}, {len(pairs)} demonstrations")
    run_threads = torch.get_num_threads()
    set_threads(sft_spec.get("threads"))  # one large job: every core unless told otherwise
    try:
        stats = sft(model, tok, pairs, sft_spec["steps"], sft_spec["batch"], sft_spec["lr"], seed,
                    log=lambda s, l: log(f"[tiny] sft step {s}/{sft_spec['steps']} loss {l:.3f}"))
    finally:
        torch.set_num_threads(run_threads)
    with atomic_dir(path, overwrite=False) as tmp:  # another process that finished first wins
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        info = {"spec": spec, "numerics": numerics(), "params": n_params, "demonstrations": len(pairs),
                "seconds": time.time() - t0, **stats}
        (tmp / "done.json").write_text(json.dumps(info, indent=1))
    log(f"[tiny] built in {time.time() - t0:.0f}s, cached at {path}")
    return path
