"""Roles and harnesses: prompt rendering, action parsing, local reward, turn order.

One harness family per kind of task (roles/base.Family): planning (roles/planning.py, a board per
task), code (roles/code.py) and maths (roles/maths.py); each task module registers its task's
family with `register_team`."""
from roles.base import (Family, Harness, Outcome, Parsed, TeamState, harness_family, harness_names, make_harness,
                        register_team)
from roles import planpath as _planpath  # noqa: F401  (each module registers its task's harnesses)
from roles import sokoban as _sokoban  # noqa: F401
from roles import sudoku as _sudoku  # noqa: F401
from roles import code as _code  # noqa: F401
from roles import codebench as _codebench  # noqa: F401
from roles import maths as _maths  # noqa: F401

__all__ = ["Family", "Harness", "Outcome", "Parsed", "TeamState", "harness_family", "harness_names", "make_harness",
           "register_team"]
