"""marl.eval_record: the episode record of marl.evaluate (appended as episodes finish, resumed,
refused for another evaluation) and the figures computed from it; an api_error outcome."""
import asyncio
import json
import random

import pytest

import envs
from fake_engine import FakeEngine, good
from marl.eval_record import (EpisodeLog, episode_record, harness_effects, samples_vary, summary, traces_path,
                              wall_seconds)
from marl.rollout import RolloutJob, RolloutSpec
from marl.routing import Routing
from marl.types import GenerateError
from roles import make_harness


def jobs(h, n):
    return [RolloutJob(h, h.task.instance("test", i), f"test:{i}", Routing({r: "p" for r in h.role_names}),
                       RolloutSpec(1, 0.0, 1.0), random.Random(i)) for i in range(n)]


def failing_on(problem_text: str):
    """A script that answers every prompt with the oracle, except prompts holding `problem_text`,
    whose requests fail for good (as an HTTP client's would after its retries)."""
    def script(prompt, n):
        if problem_text in prompt and "plan:" in prompt:
            raise GenerateError("completions request to http://x/v1 failed after 4 tries: HTTP 503: overloaded")
        return good(prompt)
    return script


def test_a_request_that_fails_for_good_ends_only_its_episode_as_an_api_error():
    h = make_harness(envs.make("planpath"), "mas")
    js = jobs(h, 4)
    target = h.prompt(h.reset(js[2].instance), "tool").split("\n")[0]  # a line only problem 2's prompts hold
    assert sum(target in h.prompt(h.reset(j.instance), "tool") for j in js) == 1
    eng = FakeEngine(script=failing_on(target))
    finished = []
    eps = asyncio.run(eng.gather(js, on_done=lambda i, ep: finished.append(i)))
    assert sorted(finished) == [0, 1, 2, 3]  # each reported as it finished
    bad = eps[2]
    assert bad.outcome == "api_error" and not bad.solved and bad.api_error.role == "plan"
    assert "HTTP 503" in bad.api_error.message
    assert [s.role for s in bad.samples] == ["tool"]  # the tool's turn before the failed request is kept
    assert all(ep.outcome == "solved" for i, ep in enumerate(eps) if i != 2)  # the oracle solves the others


def test_any_other_exception_is_a_bug_and_stops_the_gather():
    h = make_harness(envs.make("planpath"), "mas")

    def script(prompt, n):
        raise KeyError("a bug")
    with pytest.raises(KeyError):
        asyncio.run(FakeEngine(script=script).gather(jobs(h, 2)))


def records(tmp_path, n=4, fail=None):
    h = make_harness(envs.make("planpath"), "single")
    script = failing_on(h.prompt(h.reset(h.task.instance("test", fail)), "plan").split("\n")[0]) if fail is not None else None
    eps = asyncio.run(FakeEngine(script=script, p_good=1.0).gather(jobs(h, n)))
    return [episode_record(ep, "single", "test", i, 0, 10.0 + i, 11.0 + i) for i, ep in enumerate(eps)]


def test_the_log_resumes_its_own_evaluation_and_refuses_another(tmp_path):
    path = traces_path(tmp_path / "out.json")
    assert path.name == "out.episodes.jsonl"
    head = {"task": {"env": "planpath"}, "temperature": 0.0, "seed": 0, "engine": {"model": ("a", "b")}}
    log = EpisodeLog(path, head)
    assert not path.exists()  # nothing written before the first episode: a refused start leaves no file
    recs = records(tmp_path, 4, fail=1)
    for r in recs[:3]:
        log.append(r)
    with open(path, "a") as f:
        f.write('{"kind": "episode", "harn')  # the write a kill cut short
    again = EpisodeLog(path, head)  # tuples read back as lists: still the same evaluation
    assert again.resumed == 2  # problem 1 ended in api_error: it says nothing about the model
    assert again.todo("single", "test", 0, 4) == [1, 3]
    assert again.todo("mas", "test", 0, 2) == [0, 1]
    with pytest.raises(ValueError, match=r"another evaluation \(temperature: 0.0 on record, 1.0 now\)"):
        EpisodeLog(path, {**head, "temperature": 1.0})
    over = EpisodeLog(path, {**head, "temperature": 1.0}, overwrite=True)
    assert over.todo("single", "test", 0, 4) == [0, 1, 2, 3]
    assert len(EpisodeLog(path, head).records) == 3  # replaced only by overwrite's first episode (a refused start keeps it)
    over.append(recs[3])
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows[0]["temperature"] == 1.0 and [r["problem"] for r in rows[1:]] == [3]
    (tmp_path / "other.episodes.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match="not an episode record"):
        EpisodeLog(tmp_path / "other.episodes.jsonl", head)
    (tmp_path / "torn.episodes.jsonl").write_text('{"kind": "header"}\n{"bad\n{"kind": "episode"}\n')
    with pytest.raises(ValueError, match="line 2: not a JSON record"):
        EpisodeLog(tmp_path / "torn.episodes.jsonl", head)


def test_a_replayed_episode_replaces_its_api_error(tmp_path):
    path = tmp_path / "e.episodes.jsonl"
    log = EpisodeLog(path, {"seed": 0})
    first, second = records(tmp_path, 2, fail=1), records(tmp_path, 2)
    for r in first + second[1:]:
        log.append(r)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["outcome"] for r in rows[1:]] == ["solved", "api_error", "solved"]  # appended, never rewritten
    assert [r["outcome"] for r in EpisodeLog(path, {"seed": 0}).of("single", "test", 2, 1)[0]] == ["solved", "solved"]


def test_summary_counts_api_errors_as_failures_and_tokens_per_solved_problem(tmp_path):
    recs = records(tmp_path, 4, fail=1)
    s = summary([recs])
    assert s["api_error"] == 1 and s["success"] == 0.75 and s["n"] == 4
    prompt = sum(r["prompt_tokens"] for r in recs)
    # per episode: of the 3 played to their end (the api_error one stopped at its failed request)
    assert prompt > 0 and s["prompt_tokens_per_episode"] == prompt / 3 and s["prompt_tokens_per_solved"] == prompt / 3
    assert s["mean_turns"] == sum(r["turns"] for r in recs if r["outcome"] != "api_error") / 3
    assert s["requests"] == sum(len(r["steps"]) for r in recs) + 1  # the failed request counts
    assert s["wall_s"] == 4.0  # [10, 11], [11, 12], ... touch end to start
    none = [dict(r, solved=False) for r in recs]
    assert summary([none])["prompt_tokens_per_solved"] is None


def test_wall_time_is_the_union_of_episode_spans():
    spans = [{"t0": 0, "t1": 5}, {"t0": 1, "t1": 3}, {"t0": 4, "t1": 6}, {"t0": 100, "t1": 101}]
    assert wall_seconds(spans) == 7  # [0, 6] and [100, 101]: the pause of a resumed evaluation is not counted


def test_the_harness_effect_leaves_out_problems_with_an_api_error(tmp_path):
    ok, failed = records(tmp_path, 4), records(tmp_path, 4, fail=1)
    for r in ok + failed:
        r["harness"] = "x"
    assert [r["outcome"] for r in failed] == ["solved", "api_error", "solved", "solved"]
    worse = [dict(r, solved=i != 3, outcome="solved" if i != 3 else "failed") for i, r in enumerate(ok)]
    e = harness_effects({"single": [ok], "mas": [failed]}, seed=0)["mas"]
    assert e["excluded"] == 1 and e["problems"] == 3 and e["diff"] == 0  # not -0.25: the failed request is no loss
    e = harness_effects({"single": [worse], "mas": [failed]}, seed=0)["mas"]
    assert e["excluded"] == 1 and e["problems"] == 3 and e["diff"] == pytest.approx(1 / 3) and e["wins"] == 1
    all_failed = [dict(r, outcome="api_error", solved=False) for r in ok]
    assert harness_effects({"single": [ok], "mas": [all_failed]}, seed=0)["mas"]["diff"] is None


def test_sampled_evaluations_know_when_the_engine_did_not_sample(tmp_path):
    a, b = records(tmp_path, 3), records(tmp_path, 3)
    for r in b:
        r["sample"] = 1
    assert not samples_vary([a, b]) and samples_vary([a])
    b[2] = dict(b[2], steps=[dict(b[2]["steps"][0], response="R R")])
    assert samples_vary([a, b])
    e = harness_effects({"single": [a, a], "mas": [b, b]}, seed=0)["mas"]
    assert e["mcnemar_p"] is None  # one outcome per problem only: not with samples > 1
    assert harness_effects({"single": [a], "mas": [b]}, seed=0)["mas"]["mcnemar_p"] == 1.0
