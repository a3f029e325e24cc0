"""The sandbox's jobs: what a program's output, failures and results come back as."""
from __future__ import annotations

import time

import pytest

import sandbox
from sandbox import Limits, Session, run_calls, run_program, run_stdin
from sandbox.judge import read_value, same_stdout, same_value


def test_prints_come_back_and_each_stdin_job_runs_afresh():
    code = "import sys\ntry: n\nexcept NameError: n = 0\nprint(sum(map(int, sys.stdin.read().split())) + n)\nn = 99"
    rs = run_stdin(code, ["1 2", "3 4 5"])
    assert [r.status for r in rs] == ["ok", "ok"] and [r.out for r in rs] == ["3\n", "12\n"]


def test_an_exception_reports_the_program_traceback_only():
    r = run_program("print('before')\nraise ValueError('boom')")
    assert r.status == "error" and r.out == "before\n"
    assert r.err.strip().splitlines()[-1] == "ValueError: boom" and 'File "<program>"' in r.err
    assert '"<string>"' not in r.err  # the driver's frames are left out


def test_runs_in_an_empty_isolated_directory_with_a_bare_environment():
    r = run_program("import os, sys\nprint(os.getcwd(), os.listdir('.'), sys.flags.isolated, sorted(os.environ))")
    assert r.ok and r.out.strip() == "/work [] 1 ['HOME', 'LANG', 'PATH', 'PWD']", r


def test_file_size_and_the_work_directory_are_capped():
    big = run_program("open('big', 'wb').write(b'x' * (2 << 20))", Limits(file_mb=1))
    many = run_program("for i in range(3): open(f'f{i}', 'wb').write(b'x' * (900 << 10))", Limits(file_mb=1))
    assert big.status == "error" and "File too large" in big.err, big
    assert many.status == "error" and "No space left on device" in many.err, many


def test_timeout_kills_the_program_and_its_children():
    # sleeping uses no CPU: only the kill at the deadline ends it, grandchild included
    code = "import subprocess, time\nsubprocess.Popen(['sleep', '30'])\ntime.sleep(30)"
    t = time.monotonic()
    r = run_program(code, Limits(timeout_s=0.5))
    assert time.monotonic() - t < 3 and r.status == "timeout"


def test_memory_limit_is_a_memory_outcome():
    r = run_program("x = bytearray(2 * 1024 ** 3)\nprint('allocated')", Limits(memory_mb=256))
    assert r.status == "memory" and "allocated" not in r.out


def test_output_beyond_the_cap_is_cut_and_flagged():
    r = run_program("print('x' * 5000)", Limits(output_bytes=1000))
    assert r.status == "output_limit" and len(r.out) == 1000


def test_call_mode_keeps_state_between_calls_and_reloads_after_a_failure():
    code = "calls = []\ndef f(x):\n    calls.append(x)\n    if x == 'hang':\n        while True: pass\n    return len(calls)"
    with Session(code, "call", fn="f", limits=Limits(timeout_s=0.5)) as s:
        a, b, hang, c = s.run(args=(1,)), s.run(args=(2,)), s.run(args=("hang",)), s.run(args=(3,))
    assert (a.out, b.out, hang.status, c.out) == ("1", "2", "timeout", "1")  # reloaded after the timeout


@pytest.mark.parametrize("code, status", [
    ("raise SystemExit(0)\ndef f(): return 1", "no_result"),  # exits before answering: not a pass
    ("def f(): return f", "error"),                            # not a plain value
    ("def g(): return 1", "error"),                            # no such function
    ("def f(): raise KeyError(3)", "error"),
    ("def f(): return bytearray(2 * 1024 ** 3)", "memory"),
])
def test_call_failures(code, status):
    (r,) = run_calls(code, "f", [()], Limits(memory_mb=256))
    assert r.status == status and not read_value(r.out)[0], r


def test_call_arguments_and_results_are_plain_values_both_ways():
    (r,) = run_calls("def f(*a): return a", "f", [((1, 2.5), [float("inf")], {"k": {3}}, b"\x00", None)])
    ok, v = read_value(r.out)
    assert ok and v == ((1, 2.5), [float("inf")], {"k": {3}}, b"\x00", None)


def test_stdout_rule_is_livecodebenchs():
    assert same_stdout("1.0 2\n", "1 2.00") and same_stdout("  a b \n\n", "a b") and same_stdout("3\n4", "3\r\n4 ")
    assert not same_stdout("1 2", "1 3") and not same_stdout("", "42") and not same_stdout("a  b", "a b")
    assert not same_stdout("1 2\n3", "1 2") and not same_stdout("0.1", "0.10000001")


def test_value_rule_reads_tuples_as_lists():
    assert same_value('{"tuple": [1, [2]]}', [1, [2]]) and not same_value("[1]", [2]) and not same_value("nope", 1)


def test_bad_arguments_are_errors_not_runs():
    with pytest.raises(ValueError, match="allowed: stdin, call"):
        Session("print(1)", "shell")
    with pytest.raises(ValueError, match="needs the function"):
        Session("print(1)", "call")
    with pytest.raises(ValueError, match="positive"):
        Limits(timeout_s=0)


def test_check_available_passes_here():
    sandbox.check_available()
