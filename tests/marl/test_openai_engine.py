"""engine=openai without a model server: its settings, the refusals before any episode (no server,
a refused key, no tokenizer), marl.train's refusal, and the prompt rule as text. The engine
against a real server: tests/marl/test_served.py (e2e tier)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from marl import evaluate
from marl.config import evaluate_settings, run_settings
from marl.engine.openai_api import OpenAISettings
from marl.engine.tokens import encode_prompt, load_tokenizer, prompt_text
from openai_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def settings(**kw) -> OpenAISettings:
    return OpenAISettings.read({"name": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m", **kw})


@pytest.mark.parametrize("kw, msg", [
    ({"api_key": "sk-123"}, r"engine.api_key: engine=openai has no such setting; allowed: .*the API key is never a "
                            r"setting: put it in the environment variable engine.api_key_env names"),
    ({"base_url": None}, r"engine=openai needs engine.base_url"),
    ({"model": ""}, r"engine=openai needs engine.model"),
    ({"base_url": "127.0.0.1:8000/v1"}, r"not an http\(s\) URL"),
    ({"api": "responses"}, r"engine.api='responses'; allowed: completions .* chat"),
    ({"api_key_env": "sk-live-abc"}, r"the name of an environment variable .* not the key itself"),
    ({"max_concurrency": 0}, r"engine.max_concurrency=0: an integer >= 1"),
    ({"max_retries": -1}, r"engine.max_retries=-1: an integer >= 0"),
    ({"timeout_s": 0}, r"engine.timeout_s=0.0: seconds > 0"),
])
def test_settings_are_refused_naming_what_is_allowed(kw, msg):
    with pytest.raises(ValueError, match=msg):
        settings(**kw)


def test_settings_read_the_key_from_the_environment_only(monkeypatch):
    s = settings(api_key_env="MY_KEY", base_url="http://h:1/v1/")
    assert s.base_url == "http://h:1/v1"
    monkeypatch.delenv("MY_KEY", raising=False)
    assert s.api_key() == "EMPTY" and "unset" in s.key_note()
    monkeypatch.setenv("MY_KEY", "sk-secret")
    assert s.api_key() == "sk-secret" and "sk-secret" not in s.key_note() and "sk-secret" not in repr(s)


def compose_model(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose("evaluate_model", overrides=["+exp=planning", "threads=1", *overrides])


def test_no_server_is_refused_before_any_episode_with_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    e = evaluate_settings(compose_model("engine=openai", f"engine.base_url={url}", "engine.model=m", "engine.api=chat",
                                        "engine.max_retries=0", f"out={tmp_path / 'x.json'}"))
    with pytest.raises(ValueError, match=rf"engine.base_url={url}: no server answered \(GET {url}/models: "
                                         r"Connection error.*1 tries.*Start the server"):
        evaluate.run(e)
    assert list(tmp_path.iterdir()) == []


class Refuses(BaseHTTPRequestHandler):
    """An endpoint that answers every request as a server refusing the key does (HTTP 401)."""

    def do_GET(self):
        body = json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_a_refused_key_is_named_by_its_variable_never_by_its_value(tmp_path, monkeypatch):
    srv = HTTPServer(("127.0.0.1", 0), Refuses)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("MY_KEY", "sk-wrong-value")
    try:
        e = evaluate_settings(compose_model("engine=openai", f"engine.base_url=http://127.0.0.1:{srv.server_port}/v1",
                                            "engine.model=m", "engine.api=chat", "engine.api_key_env=MY_KEY",
                                            f"out={tmp_path / 'x.json'}"))
        with pytest.raises(ValueError, match=r"refused the key from \$MY_KEY: HTTP 401: .*Incorrect API key") as err:
            evaluate.run(e)
        assert "sk-wrong-value" not in str(err.value)
    finally:
        srv.shutdown()


def test_completions_need_a_tokenizer_that_is_on_disk(tmp_path):
    e = evaluate_settings(compose_model("engine=openai", "engine.base_url=http://127.0.0.1:9/v1",
                                        "engine.model=Org/not-cached-here", f"out={tmp_path / 'x.json'}"))
    with pytest.raises(ValueError, match=r"engine.tokenizer=Org/not-cached-here \(engine.model\): no tokenizer .* "
                                         r"marl downloads nothing.*or use engine.api=chat"):
        evaluate.run(e)


def test_marl_train_refuses_a_generate_only_engine_before_anything(tmp_path):
    from marl import train

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        s = run_settings(compose("config", overrides=["+exp=planning", "engine=openai",
                                                      "engine.base_url=http://127.0.0.1:9/v1", "engine.model=m"]))
    with pytest.raises(ValueError, match=r"engine=openai generates only .* the engines that train: local, verl"):
        train.run(s, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_evaluate_without_a_run_or_a_model_is_refused():
    with pytest.raises(SystemExit, match="say what to evaluate: run=<run dir>"):
        evaluate.entry(["n=10"])
    assert evaluate.entry(["run=x"]) is evaluate.main
    assert evaluate.entry(["+exp=code"]) is evaluate.entry(["engine=openai"]) is evaluate.main_model


def test_a_model_as_it_is_is_one_policy_and_names_its_output(tmp_path):
    e = evaluate_settings(compose_model("n=5"))
    assert e.served and e.out == Path("evaluate_planpath_tiny.json") and e.trained.engine.name == "local"
    with pytest.raises(ValueError, match="a model evaluated as it is plays every role"):
        evaluate_settings(compose_model("policy=per_role"))
    with pytest.raises(ValueError, match="samples=2 with temperature=0"):
        evaluate_settings(compose_model("samples=2"))
    e = evaluate_settings(compose_model("engine=openai", "engine.base_url=http://h:1/v1", "engine.model=Qwen/Qwen3-1.7B"))
    assert e.out == Path("evaluate_planpath_Qwen3-1.7B.json")


def test_the_completions_prompt_is_the_text_of_marls_prompt_ids(model_dir):
    tok, chat = load_tokenizer(model_dir)
    prompt = "grid:\n.#.\n@.G\nplan:"
    assert not chat and prompt_text(tok, chat, prompt) == prompt + "\n"
    assert tok(prompt_text(tok, chat, prompt)).input_ids == encode_prompt(tok, chat, prompt)
    tok.chat_template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% if not enable_thinking %}(quiet){% endif %}"
                         "{% endif %}")
    text = prompt_text(tok, True, prompt)
    assert text.endswith("<|assistant|>(quiet)")  # thinking off, marl's rule
    assert tok(text, add_special_tokens=False).input_ids == encode_prompt(tok, True, prompt)
    assert not prompt_text(tok, True, prompt, enable_thinking=True).endswith("(quiet)")


@pytest.mark.parametrize("argv, msg", [
    (["+exp=planning", "engine=openai", "engine.api_key=sk-live-123"], "never give the key on the command line"),
    (["run=runs/x", "engine=openai"], r"engine=openai: run=<dir> evaluates that run's own task, model and engine"),
    (["run=runs/x", "+exp=code"], r"\+exp=code: run=<dir> evaluates that run's own"),
    (["+exp=planning", "harness=mas"], r"harness=mas: the harnesses to evaluate are harnesses=\[single,mas\]"),
])
def test_command_lines_that_mean_something_else_are_refused_before_hydra(argv, msg):
    with pytest.raises(SystemExit, match=msg) as err:
        evaluate.entry(argv)
    assert "sk-live-123" not in str(err.value)


def test_a_served_model_takes_its_settings_from_a_model_group_it_need_not_have_on_disk(tmp_path):
    e = evaluate_settings(compose_model("model=qwen3_1.7b", "model.path=Org/never-downloaded", "engine=openai",
                                        "engine.base_url=http://h:1/v1", "engine.model=Org/never-downloaded"))
    assert e.trained.model.max_new_tokens == 1024 and e.task.harness_kw["instructions"] is True
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):  # engine=local loads it: refused
        evaluate_settings(compose_model("model=qwen3_1.7b", "model.path=Org/never-downloaded"))


def test_an_out_that_is_a_directory_is_refused_before_any_work(tmp_path):
    (tmp_path / "r.json").mkdir()
    e = evaluate_settings(compose_model("engine=openai", "engine.base_url=http://127.0.0.1:9/v1", "engine.model=m",
                                        f"out={tmp_path / 'r.json'}"))
    with pytest.raises(ValueError, match=r"r.json is a directory; out names the results' file"):
        evaluate.run(e)
