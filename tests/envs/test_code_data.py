"""The real code benchmarks' loaders, on fixture rows written here in each raw schema (no benchmark
text is committed), and the tasks over them."""
from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir

import envs
import roles
from envs.code_data import decode_private, deduplicate, load, statement_key

CONF = Path(__file__).resolve().parents[2] / "conf"
ADD = "a, b = map(int, input().split())\nprint(a + b)"


def apps_row(pid, question, fn=None):
    if fn:
        io_ = {"inputs": [[1, 2], [3, 4], [0, 0]], "outputs": [[3], [7], [0]], "fn_name": fn}
        sol = f"def {fn}(a, b):\n    return a + b"
    else:
        io_ = {"inputs": ["1 2\n", "3 4\n", "10 -2\n"], "outputs": ["3\n", "7\n", "8\n"]}
        sol = ADD
    return {"problem_id": pid, "question": question, "solutions": json.dumps([sol]),
            "input_output": json.dumps(io_), "difficulty": "introductory", "url": "", "starter_code": ""}


def write_jsonl(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def apps_dir(tmp_path):
    d = tmp_path / "apps"
    d.mkdir()
    train = [apps_row(i, f"Add two numbers, variant {i}.") for i in range(40)]
    train += [apps_row(100, "Add two numbers, variant 0.")]  # a duplicate statement
    train += [apps_row(101, "Shared with the test split!")]   # leaks into evaluation: dropped
    write_jsonl(d / "train.jsonl", train)
    write_jsonl(d / "test.jsonl", [apps_row(200, "Shared with the test split."), apps_row(201, "Call it.", fn="add")])
    return d


def test_apps_rows_become_problems_with_hidden_tests_and_a_reference(apps_dir):
    test = load("apps", str(apps_dir), "test")
    stdin, call = test
    assert stdin.mode == "stdin" and stdin.public == (("1 2\n", "3\n"),) and len(stdin.private) == 2
    assert call.mode == "call" and call.fn == "add" and call.private[0] == ((3, 4), [7])
    assert stdin.reference == ADD


def test_apps_validation_is_carved_from_train_and_training_is_deduplicated(apps_dir):
    train, val = load("apps", str(apps_dir), "train"), load("apps", str(apps_dir), "val")
    assert {p.id for p in train}.isdisjoint({p.id for p in val}) and len(train) + len(val) == 42
    task = envs.make("apps", data_dir=str(apps_dir))
    kept = task.problems("train") + task.problems("val")
    assert sum(task.dropped.values()) == 2  # the repeated statement, and the one an evaluation problem has
    assert statement_key("Shared with the test split.") not in {p.key for p in kept}
    assert len({p.key for p in task.problems("train")}) == len(task.problems("train"))


def test_statement_key_normalises_case_space_and_punctuation():
    assert statement_key("Add  two\nNumbers!") == statement_key("add two numbers")
    assert statement_key("add two numbers") != statement_key("add three numbers")
    kept, dropped = deduplicate([envs.code_data.apps_problem(apps_row(1, "X y."))],
                                [envs.code_data.apps_problem(apps_row(2, "x, Y"))])
    assert (kept, dropped) == ([], 1)


def test_codecontests_parquet_with_public_private_and_generated_tests(tmp_path):
    (tmp_path / "data").mkdir()
    tests = lambda *io: {"input": [i for i, _ in io], "output": [o for _, o in io]}  # noqa: E731
    row = {"name": "cc1", "description": "Add.", "public_tests": tests(("1 2\n", "3\n")),
           "private_tests": tests(("3 4\n", "7\n")), "generated_tests": tests(("5 5\n", "10\n")),
           "solutions": {"language": [2, 3], "solution": ["int main(){}", ADD]}}
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "data" / "test-00000-of-00001.parquet")
    (p,) = load("codecontests", str(tmp_path), "test")
    assert p.public == (("1 2\n", "3\n"),) and p.private == (("3 4\n", "7\n"), ("5 5\n", "10\n"))
    assert p.reference == ADD  # the Python 3 solution, not the C++ one
    with pytest.raises(FileNotFoundError, match="hub download"):
        load("codecontests", str(tmp_path), "train")


def lcb_row(qid, date, private_raw, functional=False):
    if functional:
        public = [{"input": "1\n2", "output": "3", "testtype": "functional"}]
    else:
        public = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
    return {"question_title": qid, "question_content": f"Problem {qid}.", "platform": "atcoder",
            "question_id": qid, "contest_id": "c", "contest_date": date, "starter_code": "",
            "difficulty": "easy", "public_test_cases": json.dumps(public), "private_test_cases": private_raw,
            "metadata": json.dumps({"func_name": "add"} if functional else {})}


def packed(tests) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


@pytest.fixture
def lcb_dir(tmp_path):
    private = [{"input": "3 4\n", "output": "7\n", "testtype": "stdin"}]
    fprivate = [{"input": "3\n4", "output": "7", "testtype": "functional"}]
    write_jsonl(tmp_path / "test.jsonl", [lcb_row("a", "2023-06-01T00:00:00", packed(private))])
    write_jsonl(tmp_path / "test2.jsonl", [lcb_row("b", "2024-09-01T00:00:00", json.dumps(private))])
    for i in range(3, 7):
        rows = [lcb_row("f", "2025-02-01T00:00:00", packed(fprivate), functional=True)] if i == 6 else []
        write_jsonl(tmp_path / f"test{i}.jsonl", rows)
    return tmp_path


def test_livecodebench_releases_date_window_and_both_test_kinds(lcb_dir):
    all6 = load("livecodebench", str(lcb_dir), "test")
    assert [p.id for p in all6] == ["livecodebench/a", "livecodebench/b", "livecodebench/f"]
    assert [p.id for p in load("livecodebench", str(lcb_dir), "test", release=1)] == ["livecodebench/a"]
    window = load("livecodebench", str(lcb_dir), "test", start="2024-08-01", end="2025-05-01")
    assert [p.id for p in window] == ["livecodebench/b", "livecodebench/f"]
    a, f = all6[0], all6[2]
    assert a.mode == "stdin" and a.private == (("3 4\n", "7\n"),)
    assert f.mode == "call" and f.fn == "Solution.add" and f.private == (((3, 4), 7),)
    with pytest.raises(ValueError, match="test split only"):
        load("livecodebench", str(lcb_dir), "train")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_private_tests_unpickler_refuses_anything_but_plain_values():
    assert decode_private(packed([{"input": "1", "output": "1"}])) == [{"input": "1", "output": "1"}]
    evil = base64.b64encode(zlib.compress(pickle.dumps(_Evil()))).decode()
    with pytest.raises(pickle.UnpicklingError, match="only plain values"):
        decode_private(evil)


def test_a_benchmark_task_judges_on_hidden_tests_in_the_sandbox(apps_dir):
    task = envs.make("apps", data_dir=str(apps_dir))
    stdin, call = task.problems("test")
    s = task.initial_state(stdin)
    assert task.step(s, ADD).solved
    only_example = "print(3)"  # passes the public example, fails the hidden tests
    assert not task.step(s, only_example).solved and task.step(s, only_example).reward == 0.0
    c = task.initial_state(call)
    assert task.step(c, "def add(a, b):\n    return a + b").solved
    assert task.same(7, [7]) and task.same([7], [7]) and not task.same(8, [7])


def test_the_code_team_runs_on_a_benchmark_with_block_tests(apps_dir):
    task = envs.make("apps", data_dir=str(apps_dir))
    h = roles.make_harness(task, "mas")
    s = h.reset(task.problems("test")[0])
    assert "example input:\n1 2" in h.prompt(s, "coder")
    out = h.act_sync(s, "coder", "```python\nprint(3)\n```")
    assert out.parse_ok and out.local == 0.0
    t = h.act_sync(out.state, "tester", "input:\n3 4\noutput:\n7")
    assert t.parse_ok and t.local == 1.0 and "expected:\n7" in h.prompt(t.state, "coder")


def test_paper_config_composes_into_valid_settings(apps_dir, tmp_path):
    from marl.build import task_settings
    from marl.config import run_settings
    (tmp_path / "config.json").write_text("{}")  # the weights stood in for (a hub id must be in the local cache)
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=["+exp=code", "model=qwen3_1.7b", f"model.path={tmp_path}", "env=apps", f"env.data_dir={apps_dir}",
                                           f"env.eval_sets={{more:{{source:apps,data_dir:{apps_dir}}}}}"])
    s = run_settings(cfg)
    assert cfg.env.eval_sets.more.source == "apps"  # a dict on the command line, not only +env.eval_sets.<name>
    task, _, h_kw = task_settings(s)
    assert cfg.model.max_new_tokens == 1024 and roles.make_harness(task, cfg.harness.name, **h_kw).role_names == \
        ["coder", "tester"]


def test_a_livecodebench_functional_problem_calls_the_solution_class(lcb_dir):
    task = envs.make("livecodebench", data_dir=str(lcb_dir))
    f = task.instance("test", 2)
    s = task.initial_state(f)
    assert task.step(s, "class Solution:\n    def add(self, a, b):\n        return a + b").solved
    assert not task.step(s, "class Solution:\n    def add(self, a, b):\n        return a - b").solved
    with pytest.raises(IndexError, match="has 3 problems"):
        task.instance("test", 3)


def test_training_problems_are_walked_in_a_seeded_order(apps_dir):
    def order(seed):
        task = envs.make("apps", data_dir=str(apps_dir), seed=seed)
        return [task.instance("train", i).id for i in range(20)]
    file_order = [p.id for p in load("apps", str(apps_dir), "train")][:20]
    assert order(0) == order(0) and order(0) != order(1) and order(0) != file_order
