"""Roles and harnesses: prompt rendering, action parsing, local reward, turn order."""
from roles.base import Harness, Outcome, Parsed, TeamState, harness_names, make_harness, register_harness
from roles import planpath as _planpath  # noqa: F401  (registers planpath's harnesses)

__all__ = ["Harness", "Outcome", "Parsed", "TeamState", "harness_names", "make_harness", "register_harness"]
