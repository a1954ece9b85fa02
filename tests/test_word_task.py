"""MossWords-v0's package data (textenv.word_task), tokenizer and reward (the built-in ``topic_words`` plugin)."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

import rewards
import textenv
from textenv import word_task
from textenv.models import load_tokenizer

DATA = Path(textenv.__file__).with_name("data") / "moss_words"


def test_shipped_package_data_is_what_the_builder_writes(tmp_path):
    word_task.build_package_data(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "prompts.jsonl"):
        assert (tmp_path / name).read_text() == (DATA / name).read_text(), name


def test_word_level_tokenizer():
    tokenizer = load_tokenizer("moss-words")
    assert len(tokenizer) == len(word_task.vocabulary()) == 398
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.padding_side) == ("<pad>", "<eos>", "left")
    ids = tokenizer("Name some COLORS :")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["name", "some", "colors", ":"]
    assert tokenizer("zebra")["input_ids"] == [tokenizer.unk_token_id]
    assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True) == "name some colors :"


def test_env_episode_scores_distinct_topic_words():
    env = gym.make("MossWords-v0")
    tokenizer = env.unwrapped.tokenizer
    _, info = env.reset(options={"prompt_index": 0})
    assert info["prompt"] == "name some colors :"
    for word in ["red", "red", "dog", "blue"]:
        *_, reward, terminated, truncated, last = env.step(tokenizer.convert_tokens_to_ids(word))
    assert truncated and not terminated
    assert reward == 0.5 and last["completion"] == "red red dog blue"


def test_reward_function():
    reward = rewards.make("topic_words")
    refs = ["red blue green yellow gold", "dog cat"]
    assert reward(["p", "q"], ["red blue red", "cat dog cow"], references=refs).tolist() == [0.5, 0.5]
    assert reward(["p"], ["RED Blue green yellow gold"], references=refs[:1]).tolist() == [1.0]  # capped at 1
    assert reward(["p"], ["red blue"], references=[None]).tolist() == [0.0]
    assert rewards.make("topic_words", target_count=2)(["p"], ["red blue"], references=refs[:1]).tolist() == [1.0]
    with pytest.raises(rewards.RewardPluginError, match="needs info\\['references'\\]"):
        reward(["p"], ["red"])
    with pytest.raises(ValueError, match="target_count=0"):
        rewards.make("topic_words", target_count=0)
    prompts = [json.loads(line) for line in (DATA / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 36 and all(len(p["reference"].split()) == 12 for p in prompts)


def test_topic_words_is_a_documented_builtin_that_moss_words_names():
    assert rewards.available()["topic_words"] == "builtin"
    doc = rewards.registry._REGISTRY["topic_words"].obj.__doc__
    assert "Range:" in doc and "Arguments:" in doc and doc.index("Range:") < doc.index("Arguments:")
    assert textenv.ENV_IDS["MossWords-v0"][0]["reward"] == "topic_words"
    assert gym.make("MossWords-v0").unwrapped.task.reward_model.name == "topic_words"
