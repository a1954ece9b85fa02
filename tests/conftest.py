"""Shared fixtures. Tests run offline on the real SmolLM2 tokenizer and tiny random-init models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # pytest-xdist runs one worker per core


@pytest.fixture(scope="session")
def tokenizer():
    from textenv.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture
def eos_id(tokenizer) -> int:
    return tokenizer.eos_token_id
