"""Generate counts of a client that awaits a server (engine=verl's replicas, engine=openai's endpoint)."""
from __future__ import annotations

import time


class GenerateStats:
    """Generate calls, sequences, new tokens, and seconds during which at least one call was in
    flight (concurrent calls overlap: their latencies are not added up)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.counts = {"calls": 0.0, "sequences": 0.0, "new_tokens": 0.0, "seconds": 0.0}
        self._inflight, self._since = 0, 0.0

    def begin(self) -> None:
        if self._inflight == 0:
            self._since = time.perf_counter()
        self._inflight += 1

    def end(self, new_tokens: int) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self.counts["seconds"] += time.perf_counter() - self._since
        self.counts["calls"] += 1
        self.counts["sequences"] += 1
        self.counts["new_tokens"] += new_tokens
