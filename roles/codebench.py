"""The code harnesses' board for the real benchmarks (envs/codebench.py): the statement with its
starter code and public examples, test cases written as blocks, mismatches shown as blocks.

A test case (at most roles.code.MAX_TESTS are read):

    input:
    <stdin text; call-based problems: one JSON argument per line>
    output:
    <expected stdout; call-based problems: one JSON value>

The demonstrators exist for the warm-start interface only (a pretrained model needs none): the
reference solution and the statement's first example.
"""
from __future__ import annotations

import json
import random
import re

from roles.base import Parsed
from envs.base import CodeTask
from roles.base import register_team
from roles.code import MAX_TESTS, code_family

SHOW = 300  # characters of an input, expected or actual output shown in feedback
# `[ \t]*`, not `\s*`, after a keyword: an input's leading blank lines (or an empty argument list) are its own
_BLOCK = re.compile(r"input:[ \t]*\n(.*?)\noutput:[ \t]*\n(.*?)(?=\ninput:|\Z)", re.S)


def _show(x) -> str:
    text = x if isinstance(x, str) else json.dumps(x)
    return text if len(text) <= SHOW else text[:SHOW] + " ..."


class BenchBoard:
    function = None  # stdin programs define nothing; a call-based one's missing function fails its tests
    instructions = {
        "coder": "Solve the problem in Python 3. Answer with one ```python block.",
        "tester": "Write test cases for the problem, each as `input:` then its lines, `output:` then the "
                  "expected output, that a wrong program fails.",
    }

    def __init__(self, task: CodeTask):
        self.task = task

    def statement(self, p) -> str:
        parts = [p.statement.strip()]
        if p.starter:
            parts.append(f"starter code:\n{p.starter.strip()}")
        for i, o in p.public:
            parts.append(f"example input:\n{self._input_text(p, i)}\nexample output:\n{_show(o)}")
        return "\n\n".join(parts)

    @staticmethod
    def _input_text(p, x) -> str:
        return x if p.mode == "stdin" else "\n".join(json.dumps(a) for a in x)

    def parse_tests(self, text: str) -> Parsed:
        """Blocks as above, kept as text (`typed` reads them for the problem at hand)."""
        tests = [(i.rstrip("\n") + "\n", o.strip() + "\n") for i, o in _BLOCK.findall(text.strip() + "\n")]
        if not tests:
            return Parsed(False, error="no `input:` / `output:` test case")
        return Parsed(True, tuple(tests[:MAX_TESTS]))

    def typed(self, p, tests):
        """The tests in the problem's own types: text for stdin problems; for call-based ones a tuple
        of JSON arguments and a JSON value. None if they cannot be read so."""
        if p.mode == "stdin":
            return tests
        try:
            return tuple((tuple(json.loads(a) for a in i.splitlines() if a.strip()), json.loads(o)) for i, o in tests)
        except ValueError:
            return None

    def feedback(self, fails) -> str:
        i, o, g = fails[0]
        return (f"{len(fails)} failed; first:\ninput:\n{_show(i)}\nexpected:\n{_show(o)}\n"
                f"got:\n{_show(g) if g is not None else 'error'}")

    def demo_program(self, s) -> str:
        return f"```python\n{s.problem.reference or 'pass'}\n```"

    naive_program = demo_program

    def noise_program(self, s, rng: random.Random) -> str:
        return "```python\npass\n```"

    def demo_tests(self, s) -> str:
        p = s.problem
        i, o = (p.public or p.private)[0]
        return f"input:\n{self._input_text(p, i)}\noutput:\n{_show(o)}"

    naive_tests = demo_tests

    def noise_tests(self, s, rng: random.Random) -> str:
        p = s.problem
        i, _ = (p.public or p.private)[0]
        return f"input:\n{self._input_text(p, i)}\noutput:\n0"


for _name in ("apps", "codecontests", "livecodebench"):
    register_team(_name, code_family(BenchBoard))
