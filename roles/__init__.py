"""Roles and harnesses: prompt rendering, action parsing, local reward, turn order."""
from roles.base import Harness, Outcome, Parsed, TeamState, harness_names, make_harness, register_harness
from roles import planpath as _planpath  # noqa: F401  (each module registers its task's harnesses)
from roles import sokoban as _sokoban  # noqa: F401
from roles import sudoku as _sudoku  # noqa: F401
from roles import code as _code  # noqa: F401
from roles import codebench as _codebench  # noqa: F401
from roles import maths as _maths  # noqa: F401

__all__ = ["Harness", "Outcome", "Parsed", "TeamState", "harness_names", "make_harness", "register_harness"]
