"""Evaluate policies in any harness, on any split or test set of their task family, greedy or sampled:
a trained run's checkpoint, or a model as it is (a served one included).

    python -m marl.evaluate run=<run dir> [checkpoint=best|latest|<dir>] [harnesses=[single,mas]]
        [splits=[test]] [n=null|<problems>] [samples=1 temperature=0] [swap_roles=true] [+roles.tool=plan]
        [env=aime24 env.data_dir=<dir>] [out=<file>] [overwrite=true]
    python -m marl.evaluate +exp=<task> [engine=openai engine.base_url=<url> engine.model=<name>]
        [harnesses=[single,mas]] [splits=[test]] [n=100] [samples=1] [out=<file>]

With `run=`, the run's own config (`<run>/config.yaml`, written by marl.train) rebuilds its task,
harness settings and policies (`marl.config.evaluate_settings` reads both configs once and checks
them); the checkpoint's weights are loaded into them. `env=<name>` (a file of conf/env/, with its
options, e.g. `env.data_dir`) evaluates on another task of the run's harness family instead: a
maths run on aime24, aime25 or olympiadbench, a code run on livecodebench, apps or codecontests
(their test split; `n=null`, the default, takes all of it); the run's harness settings and
policies are kept. Which policy plays which role (`marl.routing.Routing`):
- default: the run's routing (a shared policy plays every role; per-role and LoRA policies play
  their own role, and a role the training harness lacks is played by its last role's policy);
- `swap_roles=true`: per-role (or LoRA) policies trade places (each role is played by the other's);
- `+roles.<role>=<policy>`: an explicit mapping, applied last (Hydra adds keys with "+").

Without `run=` (conf/evaluate_model.yaml), the training config's groups choose the task and the
model (`+exp=<task>`, `model=`, `engine=`): `model=tiny` (or `model.path`) as built, on
engine=local, or a served model over engine=openai (marl.engine.openai_api). One model plays every
role. This is the paper's "single agent" and "MAS, prompt only" measurement.

Per harness and split (marl.eval_record.summary): success with a 95% interval, pass@k (k = 1, 2,
4, ... up to `samples`, unbiased estimator), mean turns, parse-failure rate, episodes ended on a
prompt over the engine's budget (`prompt_overflow`) or on a request that failed for good
(`api_error`; both count as failures), prompt and completion tokens per episode and per solved
problem, requests, wall time, per-role reward; and the paired harness effect of each later
harness minus the first on the same problems (`effect`: a paired bootstrap interval over
problems, the exact McNemar p-value, and the problems each solves that the other does not).
Writes JSON (`out=`, default `<run>/evaluate.json`; with `env=`, `<run>/evaluate_<env>.json`;
without a run, `evaluate_<env>_<model>.json`) and prints a table. Every episode's record (each
role's prompt and response per turn, tokens, outcome) is appended to `<out>.episodes.jsonl` as
it finishes; the same command run again continues from it. Every setting, the checkpoint's
files, the role -> policy names, the output's directory and the episode record are checked
before the model loads.
"""
from __future__ import annotations

import asyncio
import random
import sys
import time
from contextlib import closing
from dataclasses import asdict

import hydra
from omegaconf import DictConfig

from marl import checkpoint
from marl.build import build_run
from marl.config import GENERATED_N, EvaluateSettings, evaluate_settings
from marl.eval_record import EpisodeLog, episode_record, harness_effects, samples_vary, summary, traces_path
from marl.io import check_writable, set_threads, write_json
from marl.rollout import RolloutJob, RolloutSpec
from marl.routing import Routing, policy_ids
from roles import make_harness


def routings(kind: str, train_roles: list[str], harnesses: dict, swap: bool, explicit: dict) -> dict[str, Routing]:
    """{harness: Routing}: the run's own (its policy kind and training roles), swapped if asked,
    then the explicit role -> policy mapping (applied to the harnesses that have the role).
    Unknown names are refused; nothing here needs the model, so they are refused before it loads."""
    all_roles = sorted({r for h in harnesses.values() for r in h.role_names})
    for role in explicit:
        if role not in all_roles:
            raise ValueError(f"roles.{role}: no such role in {list(harnesses)}; roles: {all_roles}")
    pols = policy_ids(kind, train_roles)
    out = {}
    for name, h in harnesses.items():
        routing = Routing.default(kind, train_roles, h.role_names)
        if swap:
            routing = routing.swapped(pols)
        out[name] = routing.override({r: p for r, p in explicit.items() if r in h.role_names}, pols)
    return out


def split_sizes(task, splits, n: int | None) -> dict[str, int]:
    """{split: problems evaluated}. A task read from files (envs.base.FileSplits) is read here, so
    a split it lacks (a benchmark has a test split only) or an `n` past a split's size is refused
    before the model loads; n=None takes its whole split (GENERATED_N of a generated task)."""
    from envs.base import FileSplits

    out = {}
    for split in splits:
        if not isinstance(task, FileSplits):
            out[split] = n or GENERATED_N
            continue
        try:
            size = len(task.problems(split))
        except ValueError as err:
            raise ValueError(f"splits={list(splits)}: {task.name} (data_dir={task.data_dir}) has no usable {split} "
                             f"split: {err}") from err
        if n is not None and n > size:
            raise ValueError(f"n={n}, but the {split} split of {task.name} holds {size} problems "
                             f"(data_dir={task.data_dir}): set n <= {size}, or n=null for all of them")
        out[split] = n or size
    return out


def evaluated_task(e: EvaluateSettings):
    """(task, {harness: Harness}, {split: n}) of the evaluation, checked before the model loads."""
    import envs

    t = e.task
    task = envs.make(t.env, **t.env_kw)  # refuses an option the task does not take, naming those it does
    harnesses = {name: make_harness(task, name, **t.harness_kw) for name in e.harnesses}
    return task, harnesses, split_sizes(task, e.splits, e.n)


def play_split(log: EpisodeLog, name: str, harness, split: str, n: int, e: EvaluateSettings, engine,
               routing: Routing, loop: asyncio.Runner) -> None:
    """The episodes of problems 0..n-1 of `split` not yet on record, `e.samples` per problem, each
    appended to `log` as it finishes (sample s: seed e.seed + s)."""
    spec = RolloutSpec(k=1, temperature=e.temperature, alpha=e.trained.algo.alpha)
    for s in range(e.samples):
        todo = log.todo(name, split, s, n)
        jobs = [RolloutJob(harness, harness.task.instance(split, i), f"{split}:{i}", routing, spec,
                           random.Random(f"{e.seed + s}/{split}/{i}")) for i in todo]
        t0 = time.time()

        def done(j: int, ep, s=s) -> None:
            log.append(episode_record(ep, name, split, todo[j], s, t0, time.time()))

        if jobs:
            loop.run(engine.gather(jobs, on_done=done))


def record_header(e: EvaluateSettings, ckpt=None) -> dict:
    """What identifies the evaluation whose episodes `out`'s record holds (marl.eval_record): what
    decides an episode, not how many are played (harnesses, splits, n and samples may grow)."""
    head = {"task": asdict(e.task), "temperature": e.temperature, "seed": e.seed, "alpha": e.trained.algo.alpha,
            "max_new_tokens": e.trained.model.max_new_tokens}
    if e.served:
        opts = e.trained.engine.options
        if e.trained.engine.name == "openai":
            head["engine"] = {"name": "openai", **{k: getattr(opts, k) for k in (
                "base_url", "model", "api", "tokenizer", "chat_template_kwargs", "extra_body")}}
        else:
            head["engine"] = {"name": e.trained.engine.name}
            head["model"] = asdict(e.trained.model)
        return head
    return {**head, "run": str(e.run_dir.resolve()), "checkpoint": str(ckpt.resolve()),
            "step": checkpoint.check(ckpt)["step"], "swap_roles": e.swap_roles, "roles": e.roles}


def run(e: EvaluateSettings) -> dict:
    set_threads(e.threads)
    task, hs, sizes = evaluated_task(e)
    train_roles = make_harness(task, e.trained.task.harness, **e.task.harness_kw).role_names
    path = None
    if e.served:  # one model as it is plays every role
        routes = {name: Routing.default("shared", train_roles, h.role_names) for name, h in hs.items()}
    else:
        path = checkpoint.resolve(e.run_dir, e.checkpoint)  # a complete checkpoint, or refused
        routes = routings(e.trained.policy.name, train_roles, hs, e.swap_roles, e.roles)
    check_writable(e.out.parent, "out", "the results are written there")  # before the work, not after
    for f in (e.out, traces_path(e.out)):
        if f.is_dir():
            raise ValueError(f"out={e.out}: {f} is a directory; out names the results' file (its episodes go beside it)")
    log = EpisodeLog(traces_path(e.out), record_header(e, path), e.overwrite)  # another evaluation's: refused
    if log.resumed:
        print(f"[evaluate] {log.resumed} episodes on record in {log.path}: playing only the rest")
    if e.served and e.trained.engine.name == "openai":
        print(f"[evaluate] engine=openai: at most {e.trained.model.max_new_tokens} new tokens per response "
              f"(model.max_new_tokens of model={e.trained.model.name}); a real model wants its own model group, "
              "e.g. model=qwen3_1.7b (its harness settings too), or model.max_new_tokens=<n>")
    # the task's model is built (or found); engine=openai probes its endpoint. A model evaluated as it
    # is reads only the splits evaluated (sized above): an evaluation set (aime24) has no train split
    built = build_run(e.trained, need={} if e.served else None)
    with closing(built.engine), asyncio.Runner() as loop:  # engine=verl: its GPU stacks end here
        if e.served:
            head = record_header(e)
            results: dict = {"model": {**head["engine"], **head.get("model", {}), "max_new_tokens": head["max_new_tokens"]}}
        else:
            state = checkpoint.load(path, built.engine, weights_only=True)
            results = {"run": str(e.run_dir), "checkpoint": str(path), "step": state["step"]}
        if e.env is not None:
            results["env"] = dict(e.env)
        try:
            for name, h in hs.items():
                for split in e.splits:
                    play_split(log, name, h, split, sizes[split], e, built.engine, routes[name], loop)
        except KeyboardInterrupt:
            raise SystemExit(f"\n[evaluate] interrupted: {len(log.records)} episodes on record in {log.path}; "
                             "the same command continues from them") from None
    for name in e.harnesses:
        results[name] = {split: {**summary(log.of(name, split, sizes[split], e.samples)), "temperature": e.temperature,
                                 "roles": routes[name].as_dict()} for split in e.splits}
    if len(e.harnesses) > 1:
        results["effect"] = {split: harness_effects({h: log.of(h, split, sizes[split], e.samples)
                                                     for h in e.harnesses}, e.seed) for split in e.splits}
    errors = sum(results[h][sp]["api_error"] for h in e.harnesses for sp in e.splits)
    results["episodes"] = str(log.path)
    results["complete"] = errors == 0  # false: some episodes ended on a failed request; rerun to play them
    write_json(e.out, results)
    if e.env is not None:
        print(f"\nenv {task.name}" + (f" ({e.env['data_dir']})" if e.env.get("data_dir") else ""))
    print_table(results, e.harnesses)
    print(f"wrote {e.out} (episodes: {log.path})")
    same = [f"{h} {sp}" for h in e.harnesses for sp in e.splits
            if not samples_vary(log.of(h, sp, sizes[sp], e.samples))]
    if same:
        print(f"[evaluate] warning: every sample of every problem is the same episode in {', '.join(same)}: the "
              "engine is not sampling at this temperature, so pass@k and the interval say nothing about sampling "
              "(transformers serve samples only with +engine.extra_body.generation_config='{\"do_sample\": true}')")
    if errors:
        print(f"[evaluate] INCOMPLETE: {errors} episodes ended on a request that failed for good (api_error); "
              "they count as failures above. Run the same command again to play them")
    return results


def print_table(results: dict, harnesses) -> None:
    print(f"\n{'harness':<8} {'split':<5} {'success':>8} {'95% CI':>13} {'turns':>6} {'parse fail':>10} "
          f"{'tokens/ep':>10} {'requests':>8} {'wall s':>7}  roles")
    for h in harnesses:
        for split, r in results[h].items():
            lo, hi = r["ci95"]
            roles = ", ".join(f"{k}<-{v}" for k, v in r["roles"].items())
            notes = [f"{r[k]} ended on {what}" for k, what in (("prompt_overflow", "a prompt over the budget"),
                                                               ("api_error", "a failed request (api_error)")) if r[k]]
            tokens = r["prompt_tokens_per_episode"] + r["completion_tokens_per_episode"]
            print(f"{h:<8} {split:<5} {r['success']:>8.1%} {f'{lo:.0%}-{hi:.0%}':>13} {r['mean_turns']:>6.2f} "
                  f"{r['parse_fail_rate']:>10.1%} {tokens:>10.0f} {r['requests']:>8} {r['wall_s']:>7.1f}  {roles}"
                  + "".join(f"; {x}" for x in notes))
    for split, effects in results.get("effect", {}).items():
        for h, x in effects.items():
            left_out = (f" ({x['excluded']} problems with an api_error left out: run the command again to play "
                        "them)") if x["excluded"] else ""
            if x["diff"] is None:
                print(f"{h} - {x['vs']} on {split}: no problem without an api_error in both{left_out}")
                continue
            lo, hi = x["ci95"]
            p = "" if x["mcnemar_p"] is None else f", exact McNemar p = {x['mcnemar_p']:.3g}"
            print(f"{h} - {x['vs']} on {split}: {x['diff']:+.1%} [95% CI {lo:+.1%}, {hi:+.1%}; paired bootstrap over "
                  f"{x['problems']} problems{p}]; {h} better on {x['wins']}, {x['vs']} better on {x['losses']}"
                  + left_out)


@hydra.main(version_base=None, config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    finish(run(evaluate_settings(cfg)))


@hydra.main(version_base=None, config_path="../conf", config_name="evaluate_model")
def main_model(cfg: DictConfig) -> None:
    finish(run(evaluate_settings(cfg)))


def finish(results: dict) -> None:
    """Exit status 1 for an incomplete evaluation (api_error episodes), so a script notices."""
    if not results["complete"]:
        raise SystemExit(1)


# what says which model to evaluate as it is, where no run= is given
CHOOSES_A_MODEL = ("+exp=", "exp=", "env=", "model=", "model.", "engine=", "engine.")


def entry(argv: list[str]):
    """The `main` for this command line: a run's checkpoint (`run=`), or a model as it is. Neither
    named is refused: evaluating the tiny default model by accident would report a number about
    nothing the user asked for."""
    for a in argv:
        if a.lstrip("+").startswith("engine.api_key="):
            raise SystemExit("marl.evaluate: engine.api_key: never give the key on the command line (shell history, "
                             "logs); put it in the environment variable engine.api_key_env names (OPENAI_API_KEY)")
    if any(a.startswith("run=") for a in argv):
        mixed = [a for a in argv if a.lstrip("+").startswith(("exp=", "model=", "engine=", "engine."))]
        if mixed:
            raise SystemExit(f"marl.evaluate: {mixed[0]}: run=<dir> evaluates that run's own task, model and engine; "
                             "to evaluate a model as it is, drop run= (python -m marl.evaluate +exp=<task> ...)")
        refuse_misplaced_env(argv)
        return main
    for a in argv:
        if a.startswith(("harness=", "+harness=")):
            raise SystemExit(f"marl.evaluate: {a}: the harnesses to evaluate are harnesses=[single,mas] (harness= is "
                             "a training run's harness)")
    asks_hydra = any(a.startswith("-") for a in argv)  # --help, --cfg job, ...
    if not asks_hydra and not any(a.lstrip("+").startswith(CHOOSES_A_MODEL) for a in argv):
        raise SystemExit("marl.evaluate: say what to evaluate: run=<run dir> (a run of marl.train, its checkpoint), "
                         "or a model as it is: +exp=<task> [engine=openai engine.base_url=<url> engine.model=<name>] "
                         "(model=tiny on engine=local by default)")
    return main_model


def refuse_misplaced_env(argv: list[str]) -> None:
    """The env forms Hydra refuses with hints that lead elsewhere: `+env=<name>` (its hint after a
    plain `env=` where the group is absent; here it is an empty group, and Hydra says "Multiple values
    for env"), and `env.<key>=` without `env=<name>` (Hydra hints `+env.<key>`, which names no task)."""
    chosen = any(a.startswith("env=") for a in argv)
    for arg in argv:
        if arg.startswith("+env="):
            raise SystemExit(f"marl.evaluate: {arg}: env is a group of marl.evaluate's config already (none: the "
                             f"run's own task); choose it without '+': env={arg[len('+env='):]} env.data_dir=<dir>")
        if arg.lstrip("+").startswith("env.") and not chosen:
            raise SystemExit(f"marl.evaluate: {arg}: choose the task first, then set its options: env=<name> "
                             f"{arg.lstrip('+')} (e.g. env=aime24 env.data_dir=<dir>; the names: the files of conf/env/)")


if __name__ == "__main__":
    entry(sys.argv[1:])()
