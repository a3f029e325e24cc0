"""The tests' one fake engine: the rollout side of `marl.engine` (`RolloutEngine`) without a model,
so rollouts run in milliseconds. Prompts travel as their text (`Codec`: one id per distinct
prompt, repeated to the length `prompt_tokens` gives it, checked against `max_prompt`), and the
client answers each request from that text:

- `script(prompt, n)`, when given, is the text of the n-th request for this prompt (`pooled`
  builds one that hands each role the texts of its pool in turn);
- otherwise the Plan-Path oracle's answer with probability `p_good`, else a plausible wrong one.

Imported as `fake_engine`: pytest's default import mode puts tests/ on sys.path (tests/conftest.py
lives there), and no other module of that name exists there or in the environment
(tests/marl/test_local_engine.py checks both), so no test folder's helper can shadow it.
"""
from __future__ import annotations

import asyncio
import random
import re
from collections import defaultdict

from envs.planpath import Grid, bfs_path
from marl.engine import RolloutEngine
from marl.rollout import RolloutJob, RolloutSpec
from marl.routing import Routing
from marl.types import Completion, Episode


class Codec:
    """encode: prompt text -> [id]; the client decodes it back to read the prompt."""

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.texts: list[str] = []

    def encode(self, prompt: str) -> list[int]:
        if prompt not in self.ids:
            self.ids[prompt] = len(self.texts)
            self.texts.append(prompt)
        return [self.ids[prompt]]

    def decode(self, ids: list[int]) -> str:
        assert ids and len(set(ids)) == 1  # a prompt's id, repeated to a length (FakeEngine's prompt_tokens)
        return self.texts[ids[0]]


def read_prompt(prompt: str):
    """(role, grid, pos, goal, tool output) from a rendered Plan-Path prompt."""
    lines = prompt.splitlines()
    role = {"goal:": "tool", "plan:": "plan"}[lines[-1]]
    rows = [re.sub(r"^\d", "", ln) for ln in lines if re.fullmatch(r"\d?[#.@G]+", ln)]  # coords: "3#.@G."
    n = len(rows)
    walls = frozenset((r, c) for r in range(n) for c in range(n) if rows[r][c] == "#")
    pos = next((r, c) for r in range(n) for c in range(n) if rows[r][c] == "@")
    goal = next((r, c) for r in range(n) for c in range(n) if rows[r][c] == "G")
    tool = next((ln[len("tool: "):] for ln in lines if ln.startswith("tool: ")), None)
    cells = next((ln for ln in lines if ln.startswith("@ ")), None)  # positions line, when on
    if cells is not None:
        assert cells == f"@ {pos[0]} {pos[1]} G {goal[0]} {goal[1]}", (cells, pos, goal)
    return role, Grid(n, walls, pos, goal), pos, goal, tool


def good(prompt: str) -> str:
    """The Plan-Path oracle's answer to `prompt`."""
    role, grid, pos, goal, _ = read_prompt(prompt)
    return f"{goal[0]} {goal[1]}" if role == "tool" else " ".join(bfs_path(grid, pos, goal))


def bad(prompt: str, rng: random.Random) -> str:
    """A plausible wrong Plan-Path answer: unparsable, a wrong cell, a trusted tool or a random walk."""
    role, grid, pos, goal, tool = read_prompt(prompt)
    kind = rng.randrange(3)
    if kind == 0:
        return "no idea"  # unparsable
    if role == "tool":
        cells = [(r, c) for r in range(grid.size) for c in range(grid.size) if (r, c) != goal]
        r, c = rng.choice(cells)
        return f"{r} {c}"
    if kind == 1 and tool and tool not in ("none", "here") and not tool.startswith("error"):
        return tool  # trust a (possibly wrong) tool
    return " ".join(rng.choice("UDLR") for _ in range(rng.randint(1, 3)))


def pooled(pools: dict[str, list[str]], role_of):
    """A script under which each role's n-th request gets the n-th text of its pool (cycling);
    `role_of(prompt)` tells whose request it is."""
    served = {role: 0 for role in pools}

    def script(prompt: str, n: int) -> str:
        role = role_of(prompt)
        pool = pools[role]
        text = pool[served[role] % len(pool)]
        served[role] += 1
        return text
    return script


class FakeClient:
    """`async generate(prompt_ids, temperature) -> Completion` from the prompt text (module
    docstring). Random awaits interleave concurrent rollouts."""

    def __init__(self, codec: Codec, seed: int = 0, p_good: float = 0.5, script=None):
        self.codec, self.rng, self.p_good, self.script = codec, random.Random(seed), p_good, script
        self.seen: dict[str, int] = defaultdict(int)
        self.calls = 0

    async def generate(self, prompt_ids: list[int], temperature: float, request_id: str | None = None,
                       prompt: str | None = None) -> Completion:
        prompt = self.codec.decode(prompt_ids)
        n = self.seen[prompt]
        self.seen[prompt] += 1
        self.calls += 1
        if self.script is not None:
            text = self.script(prompt, n)
        else:
            text = good(prompt) if self.rng.random() < self.p_good else bad(prompt, self.rng)
        for _ in range(self.rng.randrange(3)):
            await asyncio.sleep(0)
        ids = [1 + (ord(ch) % 50) for ch in text] + [0]
        return Completion(ids, [-0.1 * (i + 1) for i in range(len(ids))], text)


class FakeEngine(RolloutEngine):
    """`RolloutEngine` over one `FakeClient` that every policy shares; `gather` is the protocol's
    own (the rollouts concurrently in this event loop). No learner side: no test needs one."""

    def __init__(self, script=None, seed: int = 0, p_good: float = 0.5, policy_ids=("p",),
                 max_prompt: int | None = None, prompt_tokens=None):
        """max_prompt: every policy's prompt budget (None: no limit); prompt_tokens(prompt): how many
        ids the prompt counts for it (default: one, the codec's)."""
        self.codec = Codec()
        self._client = FakeClient(self.codec, seed, p_good, script)
        self._policy_ids = tuple(policy_ids)
        self.max_prompt, self.prompt_tokens = max_prompt, prompt_tokens

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return self._policy_ids

    def client(self, policy_id: str) -> FakeClient:
        if policy_id not in self.policy_ids:
            raise ValueError(f"no policy {policy_id!r}; policies: {list(self.policy_ids)}")
        return self._client

    def encode(self, policy_id: str, prompt: str) -> list[int]:
        ids = self.codec.encode(prompt)
        return ids if self.prompt_tokens is None else ids * self.prompt_tokens(prompt)

    def max_prompt_tokens(self, policy_id: str) -> int | None:
        self.client(policy_id)
        return self.max_prompt

    def stats(self) -> dict[str, float]:
        return {"calls": float(self._client.calls)}

    def reset_stats(self) -> None:
        self._client.calls = 0


def rollout_once(h, problem, engine: FakeEngine, k: int) -> Episode:
    """One AT-GRPO rollout tree (K candidates per turn and role) of harness `h` on `problem`,
    every role played by policy "p"."""
    job = RolloutJob(h, problem, "train:0", Routing({r: "p" for r in h.role_names}), RolloutSpec(k, 1.0, 1.0),
                     random.Random(0))
    return asyncio.run(job.run(engine))
