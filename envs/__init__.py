"""Tasks: state, transition, task reward, oracle, seeded instances. No LLM code here."""
from envs.base import SPLITS, StepResult, Task, check_options, make, register, registered, split_of
from envs import planpath as _planpath  # noqa: F401  (each module registers its task)
from envs import sokoban as _sokoban  # noqa: F401
from envs import sudoku as _sudoku  # noqa: F401
from envs import code as _code  # noqa: F401
from envs import codebench as _codebench  # noqa: F401
from envs import arith as _arith  # noqa: F401
from envs import mathbench as _mathbench  # noqa: F401

__all__ = ["SPLITS", "StepResult", "Task", "check_options", "make", "register", "registered", "split_of"]
