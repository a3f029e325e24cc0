"""A data file that does not hold what its loader expects is an error naming the setting, the file,
the row (a `.jsonl` line, a `.parquet` row index) and the field, and what was expected; a split
left empty or too small says what was read and what was dropped, and why (issue 27)."""
from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_code_data import apps_row, lcb_row, packed

import envs
from envs.code_data import load as load_code
from envs.data_files import DataError
from envs.math_data import _val_bucket, statement_key
from envs.math_data import load as load_math

STDIN = json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}])


def lines(path, *rows):
    """A .jsonl file of these lines: dicts dumped as JSON, strings written as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_a_line_that_is_not_json_names_the_file_and_the_line(tmp_path):
    f = lines(tmp_path / "aime25" / "test.jsonl", {"problem": "x?", "answer": "1"}, '{"problem": "y?", "answer": 2,,}')
    with pytest.raises(DataError, match=rf"{re.escape(str(f))} line 2: not valid JSON \(Expecting property name "
                                        r".* at column 31\); each line must be one JSON object"):
        load_math("aime25", str(tmp_path / "aime25"), "test")


def test_a_row_that_is_not_an_object_names_the_file_the_line_and_the_fields_expected(tmp_path):
    f = lines(tmp_path / "test.jsonl", '["problem", "answer"]')
    with pytest.raises(DataError, match=rf"{re.escape(str(f))} line 1: a JSON list, expected a JSON object with a "
                                        r"statement \(problem.*\) and an answer \(answer"):
        load_math("aime25", str(tmp_path), "test")


def test_apps_fields_missing_or_malformed_name_the_field(tmp_path):
    row = apps_row(1, "Q")
    del row["question"]
    lines(tmp_path / "test.jsonl", apps_row(0, "P"), row)
    with pytest.raises(DataError, match=r"test.jsonl line 2: field 'question' is missing; expected the statement"):
        load_code("apps", str(tmp_path), "test")
    lines(tmp_path / "test.jsonl", {**apps_row(0, "P"), "input_output": "[1, 2]"})
    with pytest.raises(DataError, match=r"line 1: field 'input_output' holds a JSON list; expected a JSON object"):
        load_code("apps", str(tmp_path), "test")
    lines(tmp_path / "test.jsonl", {**apps_row(0, "P"), "solutions": "[unclosed"})
    with pytest.raises(DataError, match=r"line 1: field 'solutions' is not valid JSON .*list of Python programs"):
        load_code("apps", str(tmp_path), "test")


def test_a_parquet_row_is_named_by_its_index(tmp_path):
    (tmp_path / "data").mkdir()
    good = {"name": "a", "description": "Add.", "private_tests": {"input": ["1"], "output": ["1"]},
            "solutions": {"language": [3], "solution": ["print(1)"]}}
    bad = {**good, "name": "b", "private_tests": {"input": ["1", "2"], "output": ["1"]}}
    pq.write_table(pa.Table.from_pylist([good, bad]), tmp_path / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(DataError, match=r"test-00000-of-00001.parquet row index 1: field 'private_tests' is not "
                                        r"\{input: \[...\], output: \[...\]\} with one output per input"):
        load_code("codecontests", str(tmp_path), "test")
    (tmp_path / "data" / "test-00000-of-00001.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_code("codecontests", str(tmp_path), "test")


def test_livecodebench_rows_name_the_field_and_its_expected_form(tmp_path):
    lines(tmp_path / "test.jsonl", lcb_row("a", "2023-06-01T00:00:00", packed([])),
          lcb_row("b", "2023-06-01T00:00:00", "notbase64!!x"))
    with pytest.raises(DataError, match=r"test.jsonl line 2: field 'private_test_cases' could not be read "
                                        r"\(binascii.Error.*base64-encoded"):
        load_code("livecodebench", str(tmp_path), "test", release=1)
    lines(tmp_path / "test.jsonl", lcb_row("a", "June 2023", STDIN))
    with pytest.raises(DataError, match=r"line 1: field 'contest_date' is 'June 2023', not an ISO date \(YYYY-MM-DD"):
        load_code("livecodebench", str(tmp_path), "test", release=1)
    lines(tmp_path / "test.jsonl", {**lcb_row("a", "2023-06-01", STDIN, functional=True), "metadata": "{}"})
    with pytest.raises(DataError, match=r"line 1: field 'metadata' has no func_name"):
        load_code("livecodebench", str(tmp_path), "test", release=1)
    lines(tmp_path / "test.jsonl", lcb_row("a", "2023-06-01", json.dumps([{"output": "3\n"}])))
    with pytest.raises(DataError, match=r"line 1: field 'private_test_cases' holds a test that could not be read "
                                        r"\(KeyError: 'input'\)"):
        load_code("livecodebench", str(tmp_path), "test", release=1)


def test_the_livecodebench_window_settings_are_named(tmp_path):
    lines(tmp_path / "test.jsonl", lcb_row("a", "2023-06-01", STDIN))
    with pytest.raises(ValueError, match=r"env.start 'June' is not an ISO date"):
        load_code("livecodebench", str(tmp_path), "test", release=1, start="June")
    with pytest.raises(ValueError, match=r"env.eval_sets.lcb.release must be 1..6"):
        load_code("livecodebench", str(tmp_path), "test", release=7, setting="env.eval_sets.lcb")


def test_a_split_left_empty_says_what_was_read_and_what_was_dropped_and_why(tmp_path):
    """Rows without a statement or an answer are skipped, as before, and counted; so is the copy of a
    test problem (dropped from val) or, if its statement hashes into train, the row val does not own."""
    rows = [{"problem": f"Is {i} even?", "answer": ""} for i in range(3)] + [{"answer": "5"}]
    lines(tmp_path / "polaris" / "polaris.jsonl", *rows, {"problem": "Compute 2+2.", "answer": "4"})
    lines(tmp_path / "aime24" / "test.jsonl", {"problem": "Compute 2 + 2.", "answer": "4"})
    task = envs.make("polaris", data_dir=str(tmp_path / "polaris"),
                     test_sets={"aime24": {"data_dir": str(tmp_path / "aime24")}})
    with pytest.raises(ValueError) as e:
        task.problems("val")
    last = "duplicates of a test problem" if _val_bucket(statement_key("Compute 2+2.")) else "in the train split"
    assert str(e.value).startswith(f"polaris has no usable val problems: read 5 rows from env.data_dir="
                                   f"{tmp_path / 'polaris'} (polaris.jsonl: 5 rows); dropped 5: ")
    assert "3 without an answer (answer, Answer, final_answer)" in str(e.value)
    assert "1 without a statement (problem, Problem, question, Question)" in str(e.value)
    assert f"1 {last}" in str(e.value)


def test_a_missing_evaluation_data_dir_names_its_own_setting(tmp_path):
    lines(tmp_path / "polaris" / "p.jsonl", {"problem": "Compute 2+2.", "answer": "4"})
    polaris = envs.make("polaris", data_dir=str(tmp_path / "polaris"),
                        test_sets={"aime24": {"data_dir": "/nonexistent"}})
    with pytest.raises(FileNotFoundError, match=r"^env.test_sets.aime24.data_dir '/nonexistent' is not a directory"):
        polaris.problems("test")
    lines(tmp_path / "apps" / "train.jsonl", apps_row(0, "P"))
    lines(tmp_path / "apps" / "test.jsonl", apps_row(1, "Q"))
    apps = envs.make("apps", data_dir=str(tmp_path / "apps"), eval_sets={"more": {"source": "apps",
                                                                                  "data_dir": "/nonexistent"}})
    with pytest.raises(FileNotFoundError, match=r"^env.eval_sets.more.data_dir '/nonexistent' is not a directory"):
        apps.problems("train")


@pytest.mark.parametrize("spec, message", [
    ({"data_dir": "/d", "sorce": "aime25"},
     r"env.test_sets.aime24: unknown keys \['sorce'\]; allowed: source, data_dir"),
    ({"data_dir": "/d", "source": "polaris"},
     r"env.test_sets.aime24.source 'polaris' is not an evaluation set; allowed: aime24, aime25, olympiadbench"),
    ({"data_dir": None}, r"env.test_sets.aime24 needs a data_dir")])
def test_evaluation_set_specs_are_checked_when_the_task_is_made(spec, message):
    with pytest.raises(ValueError, match=message):
        envs.make("polaris", data_dir="/d", test_sets={"aime24": spec})


def test_eval_set_specs_of_a_code_task_are_checked_when_the_task_is_made():
    with pytest.raises(ValueError, match=r"env.eval_sets.lcb: unknown keys \['releases'\]; allowed: data_dir, end, "):
        envs.make("apps", data_dir="/d",
                  eval_sets={"lcb": {"source": "livecodebench", "data_dir": "/d", "releases": 5}})
    with pytest.raises(ValueError, match=r"env.eval_sets.he.source 'he' is not a code benchmark"):
        envs.make("apps", data_dir="/d", eval_sets={"he": {"data_dir": "/d"}})


def test_check_sizes_names_the_split_its_size_the_files_and_the_setting_to_lower(tmp_path):
    for name in ("aime24", "aime25"):
        lines(tmp_path / name / "test.jsonl",
              *({"problem": f"{name}: compute {i}.", "answer": str(i)} for i in range(30)))
    lines(tmp_path / "polaris" / "p.jsonl", *({"problem": f"What is {i}+1?", "answer": str(i + 1)} for i in range(200)))
    sets = {k: {"data_dir": str(tmp_path / k)} for k in ("aime24", "aime25")}
    task = envs.make("polaris", data_dir=str(tmp_path / "polaris"), test_sets=sets)
    task.check_sizes({"train": 1, "val": 1, "test": 60})
    with pytest.raises(ValueError) as e:
        task.check_sizes({"train": 1, "val": 1, "test": 100})
    assert str(e.value) == (f"eval.n_test=100 but the test split of polaris has 60 problems "
                            f"(env.test_sets.aime24.data_dir={tmp_path / 'aime24'} (test.jsonl: 30 rows); "
                            f"env.test_sets.aime25.data_dir={tmp_path / 'aime25'} (test.jsonl: 30 rows)); "
                            "set eval.n_test to at most 60")
    with pytest.raises(ValueError, match=r"^n=61 but the test split"):
        task.check_sizes({"test": 61}, {"test": "n"})
