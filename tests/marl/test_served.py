"""engine=openai against a real server (`transformers serve`, tests/served.py) serving the tiny
planning model: the HTTP path plays the episodes engine=local plays, requests run concurrently,
a killed server or evaluation loses nothing, a bad name is refused. In the e2e tier: the server
and the model's build cost more than the default suite's budget allows."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from marl import evaluate
from marl.config import evaluate_settings
from openai_server import Server, max_in_flight

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# a tiny planning model trained just enough to solve some problems (about a minute to build)
MODEL = ["model.sft.steps=150", "model.sft.instances=1500", "threads=1"]


@pytest.fixture(scope="session")
def planning_model(tmp_path_factory) -> tuple[str, Path]:
    """(the model directory, the cache it was built in)."""
    from marl.build import model_path, task_settings
    from marl.config import run_settings

    cache = tmp_path_factory.getbasetemp() / "cache"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        s = run_settings(compose("config", overrides=["+exp=planning", f"cache_dir={cache}", *MODEL]))
    task, env_kw, h_kw = task_settings(s)
    return model_path(s, task, h_kw, env_kw), cache


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server") / "serve.log")
    yield srv
    srv.stop()


def evaluate_model(out: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("evaluate_model", overrides=["+exp=planning", "threads=1", f"out={out}", *overrides])
    return evaluate.run(evaluate_settings(cfg))


def served(model: str, url: str, *more: str) -> list[str]:
    return ["engine=openai", f"engine.base_url={url}", f"engine.model={model}", *more]


def episodes(out: Path) -> dict:
    """{(harness, split, sample, problem): what the episode did} from its record."""
    rows = [json.loads(x) for x in Path(str(out).replace(".json", ".episodes.jsonl")).read_text().splitlines()]
    last = {}
    for r in rows[1:]:
        last[r["harness"], r["split"], r["sample"], r["problem"]] = (
            r["outcome"], r["turns"], [(s["role"], s["prompt"], s["response"], s["prompt_tokens"], s["completion_tokens"])
                                       for s in r["steps"]])
    return last


def test_the_http_path_plays_the_episodes_engine_local_plays(planning_model, server, tmp_path, monkeypatch):
    model, _ = planning_model
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-written-anywhere")
    local = evaluate_model(tmp_path / "local.json", f"model.path={model}")
    http = evaluate_model(tmp_path / "http.json", *served(model, server.url, "engine.max_concurrency=8"))
    a, b = episodes(tmp_path / "local.json"), episodes(tmp_path / "http.json")
    assert len(a) == 200 and a.keys() == b.keys()  # Plan-Path's 100 test problems in both harnesses
    differ = [k for k in a if a[k] != b[k]]
    assert differ == [], f"{len(differ)} of 200 episodes differ, e.g. {differ[0]}: {a[differ[0]]} vs {b[differ[0]]}"
    for h in ("single", "mas"):
        assert http[h]["test"]["success"] == local[h]["test"]["success"] > 0
        assert http[h]["test"]["api_error"] == 0
        assert http[h]["test"]["completion_tokens_per_episode"] == local[h]["test"]["completion_tokens_per_episode"]
    assert http["effect"]["test"]["mas"] == local["effect"]["test"]["mas"]
    written = "".join(p.read_text() for p in tmp_path.iterdir())
    assert "sk-never-written-anywhere" not in written and http["model"]["base_url"] == server.url


def test_requests_are_in_flight_together_up_to_max_concurrency(planning_model, server, tmp_path):
    model, _ = planning_model
    seen = {}
    for c in (8, 1):
        start = server.log_size()
        evaluate_model(tmp_path / f"c{c}.json", *served(model, server.url, f"engine.max_concurrency={c}"),
                       "n=16", "harnesses=[mas]")
        seen[c] = max_in_flight(server.log.read_text(errors="replace")[start:])
    assert seen[1] == 1 and seen[8] >= 4, seen  # the server's own log: overlapping requests only when allowed


def cli(out: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "marl.evaluate", "+exp=planning", "threads=1", f"out={out}",
                             *overrides], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_for_records(out: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    path = Path(str(out).replace(".json", ".episodes.jsonl"))
    deadline = time.monotonic() + timeout
    while not (path.exists() and len(path.read_text().splitlines()) > n):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no episodes recorded"
        time.sleep(0.2)


def test_a_server_killed_mid_evaluation_gives_api_errors_and_the_rerun_completes(planning_model, tmp_path):
    model, _ = planning_model
    srv = Server(tmp_path / "serve.log")
    out = tmp_path / "killed.json"
    args = (out, *served(model, srv.url, "engine.max_retries=1", "engine.timeout_s=10"), "n=40", "harnesses=[single]")
    try:
        proc = cli(*args)
        wait_for_records(out, 5, proc)
        srv.kill()
        text, _ = proc.communicate(timeout=120)  # nothing hangs: every request left fails after one retry
        assert proc.returncode == 1 and "INCOMPLETE" in text, text[-3000:]  # written, and a script notices
        results = json.loads(out.read_text())
        first = results["single"]["test"]
        assert not results["complete"] and 0 < first["api_error"] < 40
        assert "ended on a failed request (api_error)" in text
        assert first["success"] <= (40 - first["api_error"]) / 40  # an api_error counts as a failure
        srv = Server(tmp_path / "serve.log", port=srv.port)  # the server is back
        proc = cli(*args)
        text, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0 and f"{40 - first['api_error']} episodes on record" in text, text[-3000:]
        results = json.loads(out.read_text())
        again = results["single"]["test"]
        assert results["complete"] and again["api_error"] == 0 and again["n"] == 40
    finally:
        srv.stop()
    whole = evaluate_model(tmp_path / "whole.json", f"model.path={model}", "n=40", "harnesses=[single]")
    assert episodes(out) == episodes(tmp_path / "whole.json")  # what an uninterrupted evaluation plays
    assert again["success"] == whole["single"]["test"]["success"]


def test_a_killed_evaluation_continues_where_it_stopped(planning_model, server, tmp_path):
    model, _ = planning_model
    out = tmp_path / "resumed.json"
    args = (out, *served(model, server.url), "n=30")
    proc = cli(*args)
    wait_for_records(out, 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(episodes(out))
    assert 0 < done < 60 and not out.exists()
    proc = cli(*args)
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and f"{done} episodes on record" in text, text[-3000:]
    whole = evaluate_model(tmp_path / "whole.json", f"model.path={model}", "n=30")
    assert episodes(out) == episodes(tmp_path / "whole.json")
    assert json.loads(out.read_text())["effect"] == whole["effect"]


def test_a_model_the_server_cannot_serve_is_refused_before_any_episode(server, tmp_path):
    with pytest.raises(ValueError, match=r"could not generate with model /no/such/model at .*Tried: .*HTTP 500"):
        evaluate_model(tmp_path / "bad.json", *served("/no/such/model", server.url, "engine.max_retries=0",
                                                      "engine.tokenizer=null", "engine.api=chat"))
    assert list(tmp_path.iterdir()) == []  # no record, no output: the corrected command starts clean
