"""envs/math_data.py and envs/mathbench.py on fixture rows written here in each raw schema (no
benchmark text is committed)."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import envs
from envs.math_data import clean_answer, load
from roles import make_harness

AIME24_DUP = "Find the number of ordered pairs $(a,b)$ with $a+b=10$."


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture
def data(tmp_path):
    polaris = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i), "difficulty": "3/8"} for i in range(300)]
    polaris += [{"problem": "  find the number of ordered pairs (a,b) with a+b=10.  ", "answer": "11",
                 "difficulty": "1/8"},
                {"problem": "What is 0 + 0?", "answer": "0", "difficulty": "8/8"},  # a copy of a training row
                {"problem": "No answer here", "answer": "", "difficulty": "0/8"}]
    _jsonl(tmp_path / "polaris" / "polaris-data-53K.jsonl", polaris)
    _parquet(tmp_path / "aime24" / "data" / "train-00000-of-00001.parquet",
             [{"id": 60, "problem": AIME24_DUP, "solution": "...", "answer": "11", "url": "u", "year": "2024"},
              {"id": 61, "problem": "Compute $2^{10}$.", "solution": "...", "answer": "1024", "url": "u",
               "year": "2024"}])
    _jsonl(tmp_path / "aime25" / "test.jsonl", [{"id": 0, "problem": "Compute $3^3$.", "answer": "27"}])
    ob = [{"id": 7, "question": "Find all $x$ with $x^2=4$.", "solution": ["..."], "final_answer": ["$2$", "$-2$"],
           "context": None, "is_multiple_answer": True, "unit": None, "answer_type": "Numerical",
           "subfield": "Algebra", "language": "English"},
          {"id": 8, "question": "Find $\\frac{1}{2}+\\frac{1}{2}$.", "solution": ["..."], "final_answer": ["$1$"],
           "context": None, "is_multiple_answer": False, "unit": None, "answer_type": "Numerical",
           "subfield": "Algebra", "language": "English"}]
    _parquet(tmp_path / "olympiadbench" / "OlympiadBench" / "OE_TO_maths_en_COMP" / "OE_TO_maths_en_COMP.parquet", ob)
    _parquet(tmp_path / "olympiadbench" / "OlympiadBench" / "OE_TO_physics_en_COMP" / "OE_TO_physics_en_COMP.parquet",
             [{**ob[1], "id": 9, "question": "A physics question."}])
    return tmp_path


def test_each_schema_loads(data):
    a24 = load("aime24", str(data / "aime24"), "test")
    assert [(p.id, p.answer) for p in a24] == [("aime24/60", "11"), ("aime24/61", "1024")]
    assert [p.answer for p in load("aime25", str(data / "aime25"), "test")] == ["27"]
    ob = load("olympiadbench", str(data / "olympiadbench"), "test")
    assert [(p.id, p.answer) for p in ob] == [("olympiadbench/7", "2, -2"), ("olympiadbench/8", "1")]  # physics skipped
    train, val = (load("polaris", str(data / "polaris"), s) for s in ("train", "val"))
    assert train and val and not {p.key for p in train} & {p.key for p in val}
    assert all(p.answer for p in train + val)  # the row without an answer is dropped
    assert len(train) + len(val) == 302


def test_polaris_is_deduplicated_against_every_test_set(data):
    task = envs.make("polaris", data_dir=str(data / "polaris"),
                     test_sets={"aime24": {"data_dir": str(data / "aime24")},
                                "ob": {"source": "olympiadbench", "data_dir": str(data / "olympiadbench")}})
    train = task.problems("train")
    test_keys = {p.key for p in task.problems("test")}
    assert len(task.problems("test")) == 4
    assert not {p.key for p in train} & test_keys
    assert not {p.key for p in task.problems("val")} & test_keys
    assert "find the number of ordered pairs" not in " ".join(p.statement.lower() for p in train)
    assert sum(task.dropped.values()) >= 2  # the AIME copy and the repeated training row
    assert task.instance("train", len(train)) == task.instance("train", 0)  # cyclic


def test_a_team_plays_a_real_problem(data):
    task = envs.make("aime24", data_dir=str(data / "aime24"))
    h = make_harness(task, "mas", instructions=True)
    s = h.reset(task.instance("test", 1))
    assert h.prompt(s, "tool").startswith("Write a Python program")
    s = h.act_sync(s, "tool", "```python\nprint(2 ** 10)\n```").state
    out = h.act_sync(s, "reasoner", "It is $2^{10} = \\boxed{1024}$.")
    assert out.solved and out.state.task_state.agreed and out.state.done


def test_bad_requests_are_refused(data):
    with pytest.raises(ValueError, match="test split only"):
        load("aime24", str(data / "aime24"), "train")
    with pytest.raises(ValueError, match="test_sets"):
        envs.make("polaris", data_dir=str(data / "polaris")).problems("test")
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load("aime25", str(data / "nowhere"), "test")
    with pytest.raises(ValueError, match="allowed"):
        load("gsm8k", str(data), "test")


def test_clean_answer():
    assert clean_answer("$\\frac{1}{2}$") == "\\frac{1}{2}"
    assert clean_answer(["$2$", "$-2$"]) == "2, -2"
    assert clean_answer(" 7 ") == "7"


def test_paper_config_composes_into_valid_settings(data, tmp_path):
    """`+exp=math model=qwen3_1.7b env=polaris env.data_dir=... env.test_sets=...` is a valid
    training config with the paper's maths settings, and its task holds the files' problems."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from marl.build import task_settings
    from marl.config import run_settings
    conf = str(Path(__file__).resolve().parents[2] / "conf")
    sets = f"{{aime24:{{data_dir:{data / 'aime24'}}},aime25:{{data_dir:{data / 'aime25'}}}}}"
    (tmp_path / "config.json").write_text("{}")  # the weights stood in for (a hub id must be in the local cache)
    with initialize_config_dir(config_dir=conf, version_base=None):
        cfg = compose("config", overrides=["+exp=math", "model=qwen3_1.7b", f"model.path={tmp_path}", "env=polaris",
                                           f"env.data_dir={data / 'polaris'}", f"env.test_sets={sets}"])
    s = run_settings(cfg)
    assert (cfg.train.temperature, cfg.eval.val_temperature, cfg.eval.val_samples) == (1.0, 0.6, 5)
    assert cfg.harness.max_turns == 4 and cfg.model.max_new_tokens == 1024 and cfg.eval.temperature == 0.0
    task, _, h_kw = task_settings(s)
    assert make_harness(task, cfg.harness.name, **h_kw).role_names == ["tool", "reasoner"]
    assert len(task.problems("test")) == 3 and task.problems("train")


def test_training_problems_are_walked_in_a_seeded_order(data):
    """The reference code drew training problems without a seed; here the order is a function of
    env.seed alone (and not the file's order, which may be sorted)."""
    def order(seed):
        task = envs.make("polaris", data_dir=str(data / "polaris"), seed=seed,
                         test_sets={"aime24": {"data_dir": str(data / "aime24")}})
        return [task.instance("train", i).key for i in range(20)]
    file_order = [p.key for p in load("polaris", str(data / "polaris"), "train")][:20]
    assert order(0) == order(0) and order(0) != order(1)
    assert order(0) != file_order
