"""Tasks: state, transition, task reward, oracle, seeded instances. No LLM code here."""
from envs.base import SPLITS, StepResult, Task, make, register, registered, split_of
from envs import planpath as _planpath  # noqa: F401  (registers "planpath")

__all__ = ["SPLITS", "StepResult", "Task", "make", "register", "registered", "split_of"]
