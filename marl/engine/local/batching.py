"""Async generate clients that batch concurrent requests into decoding calls.

Every policy's `BatchingClient` hands its requests to one `Batcher` per engine. Inside
`Batcher.gather(rollouts)` (how the engine runs a step's rollouts) a batch is served only once
every live rollout is waiting on a generate call, and its rows are ordered by (rollout, arrival
within the rollout): which requests share a call, their row order, and so every sampled token,
do not depend on when tool calls running in worker threads return. Outside `gather` (a bare
`asyncio.gather` of generate calls, as in tests and benchmarks) a batch is whatever has arrived
once the event loop has settled.
"""
from __future__ import annotations

import asyncio
import contextvars
import itertools
from dataclasses import dataclass
from typing import Any, Awaitable

from marl.engine.local.decode import Runner
from marl.types import Completion

_ROLLOUT: contextvars.ContextVar[int] = contextvars.ContextVar("marl_rollout", default=-1)


@dataclass
class _Request:
    order: tuple[int, int]  # (rollout index, arrival number)
    client: "BatchingClient"
    prompt_ids: list[int]
    temperature: float
    future: asyncio.Future


class Batcher:
    def __init__(self):
        self._pending: list[_Request] = []
        self._arrivals = itertools.count()
        self._live = 0  # rollouts of the running gather that have not finished
        self._scheduled = False
        self._seen = -1  # pending count at the previous check: serve once it holds for a pass

    async def gather(self, rollouts: list[Awaitable]) -> list[Any]:
        if self._live:
            raise RuntimeError("Batcher.gather is not reentrant: one step's rollouts at a time")
        loop = asyncio.get_running_loop()
        tasks = []
        for i, coro in enumerate(rollouts):
            ctx = contextvars.copy_context()
            ctx.run(_ROLLOUT.set, i)  # inherited by the generate tasks the rollout spawns
            tasks.append(loop.create_task(coro, context=ctx))
        self._live = len(tasks)
        for t in tasks:
            t.add_done_callback(self._finished)
        out = await asyncio.gather(*tasks, return_exceptions=True)
        for r in out:
            if isinstance(r, BaseException):
                raise r
        return out

    def submit(self, client: "BatchingClient", prompt_ids: list[int], temperature: float) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(_Request((_ROLLOUT.get(), next(self._arrivals)), client, prompt_ids, temperature, fut))
        self._kick()
        return fut

    def _finished(self, _task) -> None:
        self._live -= 1
        self._kick()

    def _kick(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._check)

    def _check(self) -> None:
        """Runs as an event-loop callback, where an exception would only be logged and the
        requests it left waiting would wait for ever: any exception here (or a request the
        serving left unanswered) fails every waiting request with it instead, so the rollouts
        awaiting them, and the run, end with it."""
        self._scheduled = False
        batch: list[_Request] = []
        try:
            if not self._pending:
                return
            if self._live and len({r.order[0] for r in self._pending}) < self._live:
                return  # a rollout is still busy (a tool call): its finish or next request kicks again
            if len(self._pending) != self._seen:  # requests already scheduled (the rest of a group's
                self._seen = len(self._pending)   # K) arrive within a pass of the loop: wait one
                self._kick()
                return
            batch, self._pending, self._seen = sorted(self._pending, key=lambda r: r.order), [], -1
            self._serve(batch)
            unserved = sum(not r.future.done() for r in batch)
            if unserved:
                raise RuntimeError(f"the batcher served {len(batch) - unserved} of {len(batch)} generate requests "
                                   f"and left {unserved} unanswered")
        except Exception as e:
            waiting, self._pending, self._seen = batch + self._pending, [], -1
            _fail(waiting, e)

    @staticmethod
    def _serve(batch: list[_Request]) -> None:
        """One decoding call per (model, temperature) and chunk of at most max_batch rows; rows
        of different LoRA adapters on one model share a call. A failed call fails its own rows
        (other calls of the batch still run)."""
        calls: dict[tuple[int, float], list[_Request]] = {}
        for r in batch:
            calls.setdefault((id(r.client.runner), r.temperature), []).append(r)
        for (_, temp), reqs in calls.items():
            runner = reqs[0].client.runner
            for i in range(0, len(reqs), runner.max_batch):
                chunk = reqs[i:i + runner.max_batch]
                try:
                    adapters = None if chunk[0].client.adapter is None else [r.client.adapter for r in chunk]
                    outs = runner.generate_batch([r.prompt_ids for r in chunk], temp, adapters)
                    if len(outs) != len(chunk):
                        raise RuntimeError(f"a decoding call of {len(chunk)} prompts returned {len(outs)} completions")
                except Exception as e:  # surface the error in every waiting rollout
                    _fail(chunk, e)
                    continue
                for r, out in zip(chunk, outs):
                    if not r.future.done():  # a cancelled caller (its rollout was cancelled) takes nothing
                        r.future.set_result(out)


def _fail(requests: list[_Request], error: Exception) -> None:
    """Every request still waiting gets `error` (one exception object, raised in each caller)."""
    for r in requests:
        if not r.future.done():
            r.future.set_exception(error)


class BatchingClient:
    """The async client of one policy: a runner (its model), the LoRA adapter it generates with
    (None for a full model) and the batcher it shares with the engine's other policies."""

    def __init__(self, runner: Runner, batcher: Batcher | None = None, adapter: str | None = None):
        self.runner, self.adapter = runner, adapter
        self.batcher = batcher or Batcher()

    async def generate(self, prompt_ids: list[int], temperature: float,
                       request_id: str | None = None, prompt: str | None = None) -> Completion:
        """`request_id` and `prompt` are accepted for the interface: one local process has one
        cache to share, and generates from the ids."""
        return await self.batcher.submit(self, prompt_ids, temperature)
