"""A scripted engine for rollout tests: no model, one policy "p" whose client answers from the
prompt text (the oracle's answer or a plausible wrong one), so rollouts run in milliseconds."""
from __future__ import annotations

import asyncio
import random
import re
from collections import defaultdict

from envs.planpath import Grid, bfs_path
from marl.types import Completion

class Codec:
    """encode: prompt text -> [id]; the client decodes it back to read the grid."""

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.texts: list[str] = []

    def encode(self, prompt: str) -> list[int]:
        if prompt not in self.ids:
            self.ids[prompt] = len(self.texts)
            self.texts.append(prompt)
        return [self.ids[prompt]]

    def decode(self, ids: list[int]) -> str:
        assert len(ids) == 1
        return self.texts[ids[0]]


def read_prompt(prompt: str):
    """(role, grid, pos, tool output) from a rendered Plan-Path prompt."""
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
    role, grid, pos, goal, _ = read_prompt(prompt)
    return f"{goal[0]} {goal[1]}" if role == "tool" else " ".join(bfs_path(grid, pos, goal))


def bad(prompt: str, rng: random.Random) -> str:
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


class ScriptedClient:
    """`async generate(prompt_ids, temperature) -> Completion`.

    Either `script(prompt, n)` decides the text of the n-th request for a prompt, or each
    response is the oracle's with probability `p_good` (else a plausible wrong one). Random
    awaits interleave concurrent rollouts."""

    def __init__(self, codec: Codec, seed: int = 0, p_good: float = 0.5, script=None):
        self.codec, self.rng, self.p_good, self.script = codec, random.Random(seed), p_good, script
        self.seen: dict[str, int] = defaultdict(int)
        self.calls = 0

    async def generate(self, prompt_ids: list[int], temperature: float, request_id: str | None = None) -> Completion:
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



class ScriptedEngine:
    """The rollout side of the Engine interface (client, encode, gather, stats) over one scripted
    client; rollout tests need nothing else, so it has no update, save or load."""

    def __init__(self, client: ScriptedClient, codec: Codec, policy_ids=("p",)):
        self._client, self.codec, self.policy_ids = client, codec, tuple(policy_ids)

    def client(self, policy_id):
        if policy_id not in self.policy_ids:
            raise ValueError(f"no policy {policy_id!r}; policies: {list(self.policy_ids)}")
        return self._client

    def encode(self, policy_id, prompt):
        return self.codec.encode(prompt)

    async def gather(self, jobs):
        return list(await asyncio.gather(*[job.run(self) for job in jobs]))

    def stats(self):
        return {"calls": float(self._client.calls)}

    def reset_stats(self):
        self._client.calls = 0
