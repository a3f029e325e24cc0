"""Records that travel between rollout, grouping, advantage and update."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Completion:
    """One generated response. token_ids/logprobs come from generation and are kept as they are:
    text is never re-tokenised to rebuild a training sample."""

    token_ids: list[int]
    logprobs: list[float]  # log p(token) under the sampling distribution (logits / temperature)
    text: str
    # (prompt, completion) tokens as an HTTP server counted them (engine=openai, which receives no
    # ids); None: the ids are the count
    usage: tuple[int, int] | None = None


class GenerateError(RuntimeError):
    """A generate request that failed for good (an HTTP endpoint's, after its retries). The
    rollout ends that episode as an `api_error` outcome (`Episode.api_error`) instead of failing
    every episode in flight; any other exception is a bug and propagates."""


class GenerateClient(Protocol):
    """Async token-in/token-out generation of one policy. The local engine batches concurrent
    calls; `request_id` (the problem id) lets a cluster engine send the K candidates of a group
    to one server, where they share its prefix cache."""

    async def generate(self, prompt_ids: list[int], temperature: float,
                       request_id: str | None = None, prompt: str | None = None) -> Completion: ...


@dataclass(frozen=True)
class Sample:
    """One candidate response of one role at one turn of one problem: one training sample.

    group_id is the explicit key of the group this sample is normalised in; it is a string built
    from (problem, turn, role) for AT-GRPO or from the problem for trajectory GRPO, never derived
    from a position in a tensor. Frozen: a later stage derives a new record (trajectory GRPO's
    regrouping: `dataclasses.replace`; the advantage: `TrainSample`), so a sample's fields are
    always those the rollout gave it."""

    problem_id: str
    turn: int
    role: str
    policy: str
    candidate: int
    prompt: str
    response: str
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    temperature: float
    reward: float
    local: float
    team: float
    parse_ok: bool
    chosen: bool
    episode: int = 0  # which independent episode of this problem (trajectory GRPO; eval samples)
    group_id: str = ""
    info: dict = field(default_factory=dict)
    usage: tuple[int, int] | None = None  # the server's (prompt, completion) count (Completion.usage)

    @property
    def tokens(self) -> tuple[int, int]:
        """(prompt, response) tokens: the server's count where it gave one, else the ids'."""
        return self.usage or (len(self.prompt_ids), len(self.response_ids))


@dataclass(frozen=True)
class TrainSample:
    """A sample with the advantage of its group: what an engine's `update` consumes."""

    sample: Sample
    advantage: float

    def trace(self) -> dict:
        """The row written to traces/step_NNNNNN.jsonl."""
        return {k: self.advantage if k == "advantage" else getattr(self.sample, k) for k in TRACE_KEYS}


TRACE_KEYS = ("problem_id", "turn", "role", "policy", "group_id", "candidate", "prompt", "response",
              "reward", "local", "team", "advantage", "chosen", "parse_ok")


@dataclass(frozen=True)
class PromptOverflow:
    """The prompt an episode ended on: `role`'s prompt at `turn` was `prompt_tokens` long, over the
    `budget` its policy's engine accepts (`PolicyClients.max_prompt_tokens`). Nothing was generated
    from it."""

    turn: int
    role: str
    policy: str
    prompt_tokens: int
    budget: int


@dataclass(frozen=True)
class ApiError:
    """The request an episode ended on: `role`'s at `turn` failed for good (`GenerateError`)."""

    turn: int
    role: str
    policy: str
    message: str


@dataclass
class Episode:
    problem_id: str
    samples: list[Sample]
    solved: bool
    turns: int
    return_: float  # sum of the rewards of the actions that were continued from
    overflow: PromptOverflow | None = None  # set when the episode ended on an over-budget prompt (marl.rollout)
    api_error: ApiError | None = None       # set when it ended on a request that failed for good

    @property
    def outcome(self) -> str:
        """solved | failed | prompt_overflow | api_error (the last two are failures, counted apart)."""
        if self.api_error is not None:
            return "api_error"
        if self.overflow is not None:
            return "prompt_overflow"
        return "solved" if self.solved else "failed"
