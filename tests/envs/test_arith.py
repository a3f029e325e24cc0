"""envs/arith.py: the tiny maths task; its arithmetic fast path agrees with the sandbox."""
import random

import pytest

import sandbox
from envs.arith import TEMPLATES, Arith, MathState, run_tool, safe_arith, tool_step
from marl.tiny import build_tokenizer
from roles.maths import ArithDemos

TASK = Arith()
DEMOS = ArithDemos(TASK)  # the roles' demonstrators write the programs a run sees most


def instances(n=60, split="train"):
    return [TASK.instance(split, i) for i in range(n)]


def test_the_fast_path_prints_what_the_sandbox_prints():
    rng = random.Random(0)
    progs = []
    for p in instances(20):
        s = MathState(p)
        progs += [DEMOS.oracle_program(s), DEMOS.naive_program(s), DEMOS.noise_program(s, rng)]
    progs += ["print(-(3 - 10) * 2)", "print(((7)))"]
    for prog in progs:
        r = sandbox.run_program(prog, sandbox.Limits(timeout_s=5.0))
        assert r.ok and r.out.strip() == str(safe_arith(prog)), prog


@pytest.mark.parametrize("prog", [
    "print(2 ** 10)", "print(7 / 2)", "print(7 // 2)", "print(open('/etc/passwd').read())", "x = 1\nprint(x)",
    "print(1, 2)", "print(1 + 2, end='')", "print(10000000 * 2)", "print(" + " + ".join(["1"] * 14) + ")",
    "print(1.5 + 1)", "print(True + 1)", "import os", "print(", "",
])
def test_the_fast_path_takes_only_plain_integer_arithmetic(prog):
    assert safe_arith(prog) is None


def test_a_failing_program_has_no_answer_and_its_traceback_is_never_one():
    assert run_tool("raise ValueError('the answer is 42')") is None
    assert run_tool("print(42)\nraise SystemExit(1)") is None  # printed, then failed: not an answer
    assert run_tool("print(1 // 0)") is None
    assert run_tool("print('x')\nprint(' 17 ')\n") == "17"  # the last printed line
    assert run_tool("pass") is None


def test_every_story_reads_right_and_its_misreading_differs():
    seen = set()
    for p in instances(300):
        seen.add(p.template)
        assert int(p.answer) >= 0
        assert safe_arith(f"print({p.naive_expression})") != int(p.answer)
        vals = [v for _, v in p.numbers]
        assert len(set(vals)) == len(vals)
        assert all(str(v) in p.statement for v in vals)
    assert seen == set(TEMPLATES)


def test_agreement_is_with_the_tool_of_the_same_turn():
    p = TASK.instance("test", 0)
    s = tool_step(MathState(p), f"print({p.expression})")
    assert TASK.step(s, p.answer).state.agreed
    assert not TASK.step(s, str(int(p.answer) + 1)).state.agreed
    after = TASK.step(s, "0").state  # the tool has not acted in the next turn yet
    assert not TASK.step(after, p.answer).state.agreed
    assert TASK.step(MathState(p), p.answer).solved and not TASK.step(MathState(p), p.answer).state.agreed


def test_the_longest_program_fits_the_generation_budget():
    progs = ["print((99 + 98) * 9)"] + [DEMOS.oracle_program(MathState(p)) for p in instances(200)]
    tok = build_tokenizer(progs)
    assert max(len(tok.encode(x)) for x in progs) + 1 <= 32  # conf/exp/math.yaml per_model.tiny.max_new_tokens


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="templates"):
        Arith(templates=["nope"])
    with pytest.raises(ValueError, match="lo < hi"):
        Arith(lo=50, hi=20)
