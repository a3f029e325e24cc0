"""Shared set-up for the trainer tests: one torch thread (tiny tensors, 2-core machines), fixed seed."""
import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)  # tiny matmuls: 2 OpenMP threads on 2 busy cores are ~1000x slower


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def task():
    import envs
    return envs.make("planpath")


@pytest.fixture(scope="session")
def model_dir(task, tmp_path_factory):
    """A tiny random Qwen3 (test_engine.tiny_model) with a tokenizer of the task's text, on disk:
    built once per session and only read (engines load it; checkpoints go to each test's tmp_path)."""
    import roles
    from marl.tiny import build_tokenizer, demonstrations
    from test_engine import tiny_model
    hs = [roles.make_harness(task, "mas"), roles.make_harness(task, "single")]
    tok = build_tokenizer([p + "\n" + r for p, r in demonstrations(hs, range(120), 0.15, 0)])
    d = tmp_path_factory.mktemp("tiny-random")
    tiny_model(tok).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)
