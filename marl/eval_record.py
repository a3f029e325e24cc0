"""One evaluation's episodes on disk, and every figure marl.evaluate reports, computed from them.

`<out>.episodes.jsonl` (beside marl.evaluate's JSON): a header line saying which evaluation the
file belongs to, then one record per episode, appended as it finishes (`EpisodeLog`). Each record
holds its harness, split, problem and sample, the outcome (solved | failed | prompt_overflow |
api_error), each role's prompt and response per turn with their tokens, and its wall-clock span.
A killed evaluation run again with the same `out` keeps the episodes on record and plays only the
rest (and those that ended in api_error, which say nothing about the model); an evaluation of
anything else into the same file is refused. The summaries are functions of the records alone,
so a resumed evaluation reports exactly what an uninterrupted one would.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from marl.evalstats import paired_effect, pass_at_ks, success_interval
from marl.io import append_jsonl, atomic_write_text, read_jsonl
from marl.types import Episode

FORMAT = 1


def traces_path(out: Path) -> Path:
    """Where the episodes of the evaluation written to `out` go: beside it."""
    out = Path(out)
    return out.with_name(out.stem + ".episodes.jsonl")


def episode_record(ep: Episode, harness: str, split: str, problem: int, sample: int, t0: float, t1: float) -> dict:
    """The record of one finished episode (its samples in order: one per role and turn at K = 1)."""
    steps = [{"turn": s.turn, "role": s.role, "policy": s.policy, "prompt": s.prompt, "response": s.response,
              "prompt_tokens": s.tokens[0], "completion_tokens": s.tokens[1], "reward": s.reward,
              "parse_ok": s.parse_ok} for s in ep.samples]
    error = ep.api_error.message if ep.api_error else None
    if ep.overflow is not None:
        o = ep.overflow
        error = f"{o.role}'s prompt at turn {o.turn} has {o.prompt_tokens} tokens, over the budget of {o.budget}"
    return {"kind": "episode", "harness": harness, "split": split, "problem": problem, "sample": sample,
            "problem_id": ep.problem_id, "outcome": ep.outcome, "solved": ep.solved, "turns": ep.turns,
            "return": ep.return_, "error": error,
            "prompt_tokens": sum(s["prompt_tokens"] for s in steps),
            "completion_tokens": sum(s["completion_tokens"] for s in steps),
            "requests": len(steps) + (ep.api_error is not None), "t0": t0, "t1": t1, "steps": steps}


class EpisodeLog:
    """The episodes of one evaluation (`header`: what identifies it), appended to `path`."""

    def __init__(self, path: Path, header: dict, overwrite: bool = False):
        self.path = Path(path)
        header = json.loads(json.dumps(header))  # as it reads back (tuples are lists)
        self.records: dict[tuple, dict] = {}  # (harness, split, sample, problem) -> its latest record
        self.header = {"kind": "header", "format": FORMAT, **header}
        self.resumed = 0
        # the header is written with the first episode, replacing an old record only then
        # (overwrite=true): a start refused before any episode leaves the file as it was
        self.fresh = overwrite or not self.path.exists()
        if self.fresh:
            return
        rows = read_jsonl(self.path)
        have = rows[0] if rows and rows[0].get("kind") == "header" else None
        if have is None:
            raise ValueError(f"{self.path}: not an episode record of marl.evaluate (no header line); choose another out=")
        have = {k: v for k, v in have.items() if k not in ("kind", "format")}
        if have != header:
            diff = sorted(k for k in set(have) | set(header) if have.get(k) != header.get(k))
            shown = "; ".join(f"{k}: {have.get(k)!r} on record, {header.get(k)!r} now" for k in diff)
            raise ValueError(f"{self.path} holds the episodes of another evaluation ({shown[:600]}); its episodes "
                             "cannot be mixed with these. Choose another out=, or overwrite=true to start it over")
        for r in rows[1:]:
            self.records[self.key(r)] = r
        self.resumed = sum(r["outcome"] != "api_error" for r in self.records.values())

    @staticmethod
    def key(r: dict) -> tuple:
        return r["harness"], r["split"], r["sample"], r["problem"]

    def todo(self, harness: str, split: str, sample: int, n: int) -> list[int]:
        """The problems 0..n-1 still to play: never played, or last ended in api_error."""
        return [i for i in range(n) if self.records.get((harness, split, sample, i), {}).get("outcome")
                in (None, "api_error")]

    def append(self, record: dict) -> None:
        if self.fresh:
            atomic_write_text(self.path, json.dumps(self.header) + "\n")
            self.fresh = False
        append_jsonl(self.path, record)
        self.records[self.key(record)] = record

    def of(self, harness: str, split: str, n: int, samples: int) -> list[list[dict]]:
        """The records of problems 0..n-1, per sample: [S][P]."""
        return [[self.records[(harness, split, s, i)] for i in range(n)] for s in range(samples)]


def summary(recs: list[list[dict]]) -> dict:
    """The figures of one harness on one split from its records [S][P] (S samples of P problems).
    An api_error or prompt_overflow episode is a failure, and counted apart."""
    samples, n = len(recs), len(recs[0])
    flat = [r for per in recs for r in per]
    # turns and tokens per episode: of the episodes played to their end (an api_error episode
    # stopped at a failed request; it counts in success, as a failure, and in requests and time)
    played = [r for r in flat if r["outcome"] != "api_error"] or flat
    solved = [sum(recs[s][i]["solved"] for s in range(samples)) for i in range(n)]  # (P,)
    steps = [st for r in flat for st in r["steps"]]
    role_r: dict[str, list[float]] = defaultdict(list)
    for st in steps:
        role_r[st["role"]].append(st["reward"])
    wins = sum(solved)
    prompt_t, comp_t = sum(r["prompt_tokens"] for r in played), sum(r["completion_tokens"] for r in played)
    wall = wall_seconds(flat)
    requests = sum(r["requests"] for r in flat)
    out = {"success": wins / len(flat), "ci95": list(success_interval(solved, samples)), **pass_at_ks(solved, samples),
           "n": len(flat), "problems": n, "samples": samples,
           "mean_turns": sum(r["turns"] for r in played) / len(played),
           "parse_fail_rate": sum(not st["parse_ok"] for st in steps) / max(len(steps), 1),
           "prompt_overflow": sum(r["outcome"] == "prompt_overflow" for r in flat),
           "api_error": sum(r["outcome"] == "api_error" for r in flat),
           "prompt_tokens_per_episode": prompt_t / len(played), "completion_tokens_per_episode": comp_t / len(played),
           "prompt_tokens_per_solved": prompt_t / wins if wins else None,
           "completion_tokens_per_solved": comp_t / wins if wins else None,
           "requests": requests, "wall_s": wall, "requests_per_s": requests / wall if wall else None,
           "episodes_per_s": len(flat) / wall if wall else None}
    for role, rs in sorted(role_r.items()):
        out[f"role/{role}/reward"] = sum(rs) / len(rs)
    return out


def wall_seconds(records: list[dict]) -> float:
    """Seconds during which at least one of these episodes was being played (the union of their
    [t0, t1] spans: concurrent episodes are not added up, and the pause between a killed
    evaluation and its resumption is not counted)."""
    total, end = 0.0, None
    for t0, t1 in sorted((r["t0"], r["t1"]) for r in records):
        if end is None or t0 > end:
            total, end = total + (t1 - t0), t1
        elif t1 > end:
            total, end = total + (t1 - end), t1
    return total


def harness_effects(recs: dict[str, list[list[dict]]], seed: int) -> dict:
    """{harness: effect} of each harness after the first minus the first, on the same problems
    (`evalstats.paired_effect` over per-problem success rates). A problem with an api_error
    episode in either harness is left out of that pair (`excluded`): a failed request says
    nothing about a harness, and counting it as one harness's failure would fake an effect."""
    names = list(recs)
    rates = {h: [sum(per[i]["solved"] for per in r) / len(r) for i in range(len(r[0]))] for h, r in recs.items()}
    errored = {h: {i for per in r for i, x in enumerate(per) if x["outcome"] == "api_error"} for h, r in recs.items()}
    out = {}
    for h in names[1:]:
        skip = errored[names[0]] | errored[h]
        keep = [i for i in range(len(rates[h])) if i not in skip]
        if not keep:
            out[h] = {"vs": names[0], "diff": None, "excluded": len(skip), "problems": 0}
            continue
        diff, m = paired_effect([rates[names[0]][i] for i in keep], [rates[h][i] for i in keep], seed)
        if len(recs[h]) > 1:  # McNemar's test is of one outcome per problem
            m["mcnemar_p"] = None
        out[h] = {"vs": names[0], "diff": diff, **m, "excluded": len(skip)}
    return out


def samples_vary(recs: list[list[dict]]) -> bool:
    """Whether any problem's sampled episodes [S][P] differ (responses or outcome): a server that
    returns one episode for every sample is not sampling, and pass@k would say nothing."""
    def play(r):
        return r["outcome"], [st["response"] for st in r["steps"]]
    return len(recs) < 2 or any(len({str(play(per[i])) for per in recs}) > 1 for i in range(len(recs[0])))
