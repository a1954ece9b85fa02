"""textenv/ReasoningGym-v0: reasoning-gym datasets as envs, their train/test split, and the verifiable reward.

Every test uses the real reasoning-gym library (the ``tasks`` extra) and the SmolLM2 tokenizer; answers are written
into the env token by token, so the reward reads the entry the episode carries, as an agent's completion would.
"""

from __future__ import annotations

import json
import random
import sys

import gymnasium as gym
import numpy as np
import pytest

import rewards
import textenv  # noqa: F401  (registers the ids)
from rewards.trl_functions import trl_reward_funcs
from textenv.extras import MissingExtraError
from textenv.models import TINY_MODEL
from textenv.prompts import prompt_records
from textenv.tasks import json_data
from textenv.tasks.reasoning_gym_data import task_names
from vector_twins import run_twins

ENV_ID = "textenv/ReasoningGym-v0"
# 2-term one-digit chain_sum: about 200 distinct questions
SMALL_SPACE = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
BASE = dict(tokenizer=TINY_MODEL, max_new_tokens=24, train_size=64, test_size=16)


def make(**kwargs):
    return gym.make(ENV_ID, **{**BASE, **kwargs})


def write(env, text: str, seed: int | None = None, **reset_options):
    """Reset (with ``seed``) and write ``text`` then EOS; the last step's (reward, info)."""
    env.reset(seed=seed, options=reset_options or None)
    tokenizer = env.unwrapped.tokenizer
    for token in tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]:
        _, reward, terminated, truncated, info = env.step(token)
        if terminated or truncated:
            assert terminated, f"{text!r} did not fit max_new_tokens"
            return reward, info
    raise AssertionError("the episode did not end")


def test_gymnasium_and_sb3_env_checkers_pass():
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    gym_check_env(make(task="gcd").unwrapped)
    sb3_check_env(make(task="letter_counting").unwrapped)


def test_the_same_seed_gives_the_same_questions_and_another_seed_others():
    def questions(env, seed):
        return [env.reset(seed=seed + i)[1]["prompt"] for i in range(8)]

    first, second = make(task="basic_arithmetic"), make(task="basic_arithmetic")
    assert questions(first, 3) == questions(second, 3)
    assert questions(first, 3) != questions(first, 100)
    first.reset(seed=7), second.reset(seed=7)
    prompts = [first.reset()[1]["prompt"] for _ in range(8)]  # unseeded resets go on from the seeded generator
    assert prompts == [second.reset()[1]["prompt"] for _ in range(8)]


@pytest.mark.parametrize(("task", "config"), [("chain_sum", SMALL_SPACE), ("letter_counting", {})])
def test_train_and_test_never_share_a_question(task, config):
    train = make(task=task, task_config=config, train_size=400, test_size=50).unwrapped.task.prompts
    test = make(task=task, task_config=config, train_size=400, test_size=50, split="test").unwrapped.task.prompts

    def question(prompt):
        return json_data.loads(prompt.reference)["entry"]["question"]

    test_questions = [question(p) for p in test]
    train_questions = {question(train[i]) for i in range(len(train))}
    assert len(test_questions) == len(set(test_questions)) == 50  # distinct, and as many as asked
    assert train_questions.isdisjoint(test_questions)
    if config is SMALL_SPACE:  # 400 draws reach nearly every remaining question: the space really is small
        assert 120 <= len(train_questions) <= 200 - 50


def test_a_question_space_held_whole_by_the_test_split_is_refused_in_one_line():
    tiny = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "allow_negation": False}
    with pytest.raises(ValueError, match="lower test_size") as caught:
        make(task="chain_sum", task_config=tiny, test_size=400)
    assert "\n" not in str(caught.value)


def gold_cases(count: int, seed: int) -> list[tuple[str, str, dict]]:
    """``count`` tasks drawn at random (seeded) from reasoning-gym's list whose entries have one gold answer:
    ``(task, gold answer, entry)``."""
    names = [name for name in task_names() if name != "composite"]
    random.Random(seed).shuffle(names)
    cases = []
    for name in names:
        env = make(task=name, train_size=1, test_size=1, max_prompt_tokens=4096, max_new_tokens=1024)
        env.reset(seed=0)
        entry = json_data.loads(env.unwrapped._reference)["entry"]
        if isinstance(entry["answer"], str) and entry["answer"].strip():
            cases.append((name, env, entry))
        if len(cases) == count:
            return cases
    raise AssertionError("too few tasks with a gold answer")


@pytest.mark.parametrize("seed", [2024])
def test_the_gold_answer_scores_one_and_a_wrong_one_zero_on_random_tasks(seed):
    cases = gold_cases(4, seed)
    print("tasks drawn:", [name for name, _, _ in cases])  # shown with -s / on failure
    for name, env, entry in cases:
        gold = entry["answer"]
        reward, info = write(env, f"Let me think.\n<answer>{gold}</answer>", seed=0)
        assert info["reward_components"]["correct"] == 1.0, (name, gold)
        assert info["reward_components"]["format"] == 1.0
        assert json_data.loads(info["reference"])["entry"] == entry  # the entry travelled with the episode
        _, info = write(env, "<answer>textenv-wrong-answer</answer>", seed=0)
        assert info["reward_components"]["correct"] < 1.0, name  # some tasks give partial credit for any answer
        _, info = write(env, gold, seed=0)  # right answer, wrong format
        assert info["reward_components"] == {"correct": 0.0, "format": 0.0}, name
    exact = [(name, env) for name, env, _ in cases]
    for name, env in exact:
        env.unwrapped.task.reward_model = rewards.make("reasoning_gym", partial_credit=False)
        _, info = write(env, "<answer>textenv-wrong-answer</answer>", seed=0)
        assert info["reward_components"]["correct"] == 0.0, name


@pytest.mark.parametrize(
    ("extraction", "reply"),
    [("last_line", "I add them.\n{gold}"), ("last_number", "so it is {gold}."), ("whole", " {gold} ")],
)
def test_each_extraction_reads_the_answer_its_way(extraction, reply):
    env = make(
        task="chain_sum", task_config=SMALL_SPACE, answer_format=extraction, reward_kwargs={"format_weight": 0.5}
    )
    env.reset(seed=1)
    gold = json_data.loads(env.unwrapped._reference)["entry"]["answer"]
    reward, info = write(env, reply.format(gold=gold), seed=1)
    assert info["reward_components"] == {"correct": 1.0, "format": 1.0}
    assert reward == 1.5  # correct + 0.5 * format
    wrong = str(int(gold) + 1)
    reward, info = write(env, reply.format(gold=wrong), seed=1)
    assert info["reward_components"] == {"correct": 0.0, "format": 1.0} and reward == 0.5


def test_a_composite_draws_from_every_task_by_weight_and_scores_each_with_its_own_scorer():
    config = {"datasets": [{"name": "chain_sum", "weight": 3, "config": SMALL_SPACE}, {"name": "gcd", "weight": 1}]}
    env = make(task="composite", task_config=config)
    sources = []
    for seed in range(6):
        env.reset(seed=seed)
        entry = json_data.loads(env.unwrapped._reference)["entry"]
        sources.append(entry["metadata"]["source_dataset"])
        _, info = write(env, f"<answer>{entry['answer']}</answer>", seed=seed)
        assert info["reward_components"]["correct"] == 1.0
    assert set(sources) == {"chain_sum", "gcd"}


def test_a_curriculum_level_sets_the_difficulty():
    def terms(level):
        prompts = make(task="chain_sum", curriculum_level=level).unwrapped.task.prompts
        return {json_data.loads(prompts[i].reference)["entry"]["metadata"]["num_terms"] for i in range(20)}

    assert max(terms(0)) < max(terms(3))  # reasoning-gym levels include the easier ones
    with pytest.raises(ValueError, match="curriculum sets"):
        make(task="chain_sum", curriculum_level=1, task_config={"min_terms": 2})


def test_bad_arguments_give_one_line_naming_them(monkeypatch):
    cases = [
        (dict(task="no_such_task"), "unknown reasoning-gym task 'no_such_task'"),
        (dict(task="chain_sum", task_config={"min_term": 2}), "'min_term' is not a setting of chain_sum"),
        (dict(task="chain_sum", task_config={"seed": 2}), "'seed' is set by the env"),
        (dict(task="chain_sum", task_config={"min_terms": 5, "max_terms": 2}), "invalid for chain_sum"),
        (dict(task="acre", curriculum_level=1), "acre has no curriculum"),
        (dict(task="gcd", answer_format="json"), "answer_format='json'"),
        (dict(task="gcd", split="validation"), "split='validation'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as caught:
            make(**kwargs)
        assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # as if the extra were not installed
    with pytest.raises(MissingExtraError) as caught:
        make(task="gcd")
    assert str(caught.value).endswith('pip install "textenv[tasks]"') and "\n" not in str(caught.value)


def test_the_reward_needs_the_entry_and_scores_a_malformed_answer_zero():
    model = rewards.make("reasoning_gym")
    with pytest.raises(rewards.RewardPluginError, match="has no reference"):
        model(["q"], ["<answer>1</answer>"])
    with pytest.raises(rewards.RewardPluginError, match="not reasoning-gym entry data"):
        model(["q"], ["<answer>1</answer>"], references=["the answer is 1"])
    prompt = make(task="prime_factorization").unwrapped.task.prompts[0]
    # prime_factorization's score_answer raises ValueError on words: a wrong answer, not a crashed reward
    assert model([prompt.text], ["<answer>seven</answer>"], references=[prompt.reference]).tolist() == [0.0]


def test_vector_env_equals_sync_vector_env(eos_id):
    kwargs = {**BASE, "task": "chain_sum", "task_config": SMALL_SPACE, "max_new_tokens": 6}
    kwargs["reward_kwargs"] = {"format_weight": 0.2}
    n = 4
    vector = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)
    sync = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync", **kwargs)
    tokenizer = vector.unwrapped.tokenizer
    digits = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    vocabulary = np.array(digits + tokenizer("<answer> </answer> -", add_special_tokens=False)["input_ids"] + [eos_id])
    rng = np.random.default_rng(0)
    assert run_twins(vector, sync, 5, lambda: rng.choice(vocabulary, size=n), steps=40) >= 10


def test_trl_reward_functions_score_dataset_rows_as_the_env_does():
    env = make(task="chain_sum", task_config=SMALL_SPACE, reward_kwargs={"format_weight": 0.5})
    pool = env.unwrapped.task.prompts
    rows = prompt_records([pool[i] for i in range(4)], chat=True, system_prompt="Be brief.")
    answers = [json_data.loads(row["reference"])["entry"]["answer"] for row in rows]
    replies = [f"<answer>{answers[0]}</answer>", "<answer>99</answer>", answers[2], "nothing"]
    funcs, weights = trl_reward_funcs("reasoning_gym", format_weight=0.5)
    assert [f.__name__ for f in funcs] == ["correct", "format"] and weights == [1.0, 0.5]
    # TRL's call: conversational prompts and completions, every other dataset column as a keyword
    completions = [[{"role": "assistant", "content": reply}] for reply in replies]
    columns = {"reference": [row["reference"] for row in rows], "trainer_state": None, "log_metric": print}
    scores = [f(prompts=[row["prompt"] for row in rows], completions=completions, **columns) for f in funcs]
    assert scores == [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    for i, reply in enumerate(replies):  # the env's reward for the same question and reply
        reward, _ = write(env, reply, prompt_index=i)
        assert reward == sum(w * s[i] for w, s in zip(weights, scores))
    assert json.loads(json.dumps(rows))  # the rows are plain JSON data (what a datasets.Dataset holds)
