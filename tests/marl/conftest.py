"""Shared set-up for the trainer tests: one torch thread (tiny tensors, 2-core machines), fixed seed."""
import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)  # tiny matmuls: 2 OpenMP threads on 2 busy cores are ~1000x slower


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
