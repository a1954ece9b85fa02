"""Registered environment ids. Importing :mod:`textenv` registers them with Gymnasium."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym

ENV_ENTRY_POINT = "textenv.env:TextGenerationEnv"
VECTOR_ENTRY_POINT = "textenv.vector_env:TextGenerationVectorEnv"

# id -> (keyword arguments, one-line description). Every argument can be overridden in gym.make(id, **kwargs).
ENV_IDS: dict[str, tuple[dict[str, Any], str]] = {
    "MossText-v0": (
        {
            "tokenizer": "smollm2-135m-instruct",
            "prompts": "builtin",
            "reward": "sentiment",
            # 24 tokens is about one sentence: enough text for VADER to judge, and 8 completions stay a
            # few seconds of SmolLM2 sampling on 2 CPU cores.
            "max_new_tokens": 24,
            "max_prompt_tokens": 32,  # the longest built-in prompt is well under 32 SmolLM2 tokens
        },
        "continue a movie-review opening positively (SmolLM2 tokenizer, VADER sentiment reward)",
    ),
    "MossWords-v0": (
        {
            "tokenizer": "moss-words",  # word-level, 398 tokens (textenv/data/moss_words, textenv/word_task.py)
            "prompts": str(Path(__file__).with_name("data") / "moss_words" / "prompts.jsonl"),
            "reward": "topic_words",  # rewards/builtin/topic_words.py
            # 4 words: random play scores ~0.03, and PPO/DQN learn to write 4 distinct topic words in minutes
            "max_new_tokens": 4,
            "max_prompt_tokens": 8,  # the longest prompt, "tell me words about feelings :", is 6 words
        },
        "write four distinct words of the topic the prompt names (word-level vocabulary, for classic RL agents)",
    ),
}


def register_envs() -> None:
    """Register every id in :data:`ENV_IDS` (idempotent)."""
    for env_id, (kwargs, _description) in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id, entry_point=ENV_ENTRY_POINT, vector_entry_point=VECTOR_ENTRY_POINT, kwargs=dict(kwargs)
            )
