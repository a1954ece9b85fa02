"""The single TextGenerationEnv: spaces, checkers, seeding, episode ends, rewards, bad input."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded

import rewards
import textenv
from textenv import TextGenerationEnv

from env_state import assert_same_state, snapshot

PROMPTS = ["The movie was", "I walked into the theater and", "Halfway through the second act,"]


def make_env(**kwargs) -> TextGenerationEnv:
    base = dict(prompts=PROMPTS, reward="keyword", max_new_tokens=5, max_prompt_tokens=12)
    return TextGenerationEnv(**{**base, **kwargs})


def word_token(tokenizer, word: str) -> int:
    ids = tokenizer(word)["input_ids"]
    assert len(ids) == 1, (word, ids)
    return ids[0]


def test_spaces_and_layout(tokenizer):
    env = make_env()
    obs, info = env.reset(seed=1)
    assert env.action_space == gym.spaces.Discrete(len(tokenizer))
    assert obs["input_ids"].shape == (17,) and obs["input_ids"].dtype == np.int64
    assert obs in env.observation_space
    prompt_ids = tokenizer(info["prompt"])["input_ids"]
    n = len(prompt_ids)
    # left-padded prompt ending at slot max_prompt_tokens - 1, then empty completion slots
    assert obs["input_ids"][12 - n : 12].tolist() == prompt_ids
    assert obs["attention_mask"].tolist() == [0] * (12 - n) + [1] * n + [0] * 5
    assert set(obs["input_ids"][: 12 - n]) <= {env.task.pad_token_id}
    token = word_token(tokenizer, " great")
    obs2, *_ = env.step(token)
    assert obs2["input_ids"][12] == token and obs2["attention_mask"][12] == 1
    assert obs["attention_mask"][12] == 0, "an earlier observation must not change when the env steps"


@pytest.mark.parametrize("env_id", list(textenv.ENV_IDS))
def test_gymnasium_and_sb3_env_checkers_pass_without_warnings(env_id):
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(env_id)
        gym_check_env(env.unwrapped)
        sb3_check_env(gym.make(env_id).unwrapped)
    assert [str(w.message) for w in caught] == []


def test_make_with_module_prefix_needs_no_import():
    code = (
        "import gymnasium as gym, sys; env = gym.make('textenv:MossText-v0', max_new_tokens=3);"
        "obs, info = env.reset(seed=0); print(type(env.unwrapped).__name__, obs['input_ids'].shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["TextGenerationEnv", "(35,)"]


def test_make_kwargs_override_every_argument():
    env = gym.make("MossText-v0", max_new_tokens=7, reward="length", prompts=["one prompt"])
    task = env.unwrapped.task
    assert task.max_new_tokens == 7 and task.reward_model.name == "length"
    assert [p.text for p in task.prompts] == ["one prompt"]


def test_seeded_prompt_sequence_is_deterministic():
    def prompts_for(seed):
        env = gym.make("MossText-v0")
        first = env.reset(seed=seed)[1]["prompt"]
        return [first] + [env.reset()[1]["prompt"] for _ in range(9)]

    assert prompts_for(3) == prompts_for(3)
    assert prompts_for(3) != prompts_for(4)


def test_eos_terminates_with_reward_on_last_step_only(tokenizer, eos_id):
    env = make_env(reward="keyword", reward_kwargs={"keywords": ["great"], "mode": "any"})
    env.reset(seed=0)
    great = word_token(tokenizer, " great")
    _, r1, term1, trunc1, info1 = env.step(great)
    assert (r1, term1, trunc1, info1) == (0.0, False, False, {})
    _, r2, term2, trunc2, info2 = env.step(eos_id)
    assert term2 is True and trunc2 is False
    assert r2 == 1.0
    assert info2["completion"] == " great" and info2["completion_ids"] == [great, eos_id]
    assert info2["reward_components"] == {"keyword": 1.0}
    assert info2["prompt"] in PROMPTS


def test_budget_truncates(tokenizer):
    env = make_env(reward="keyword", reward_kwargs={"keywords": ["great"], "mode": "any"})
    env.reset(seed=0)
    bad = word_token(tokenizer, " bad")
    results = [env.step(bad) for _ in range(5)]
    assert [r[2] for r in results] == [False] * 5
    assert [r[3] for r in results] == [False] * 4 + [True]
    assert [r[1] for r in results] == [0.0] * 5  # no keyword: the final reward is really 0
    assert results[-1][4]["completion"] == " bad" * 5
    with pytest.raises(ResetNeeded):
        env.step(bad)


def test_step_before_reset_raises():
    with pytest.raises(ResetNeeded, match="reset"):
        make_env().step(5)


@pytest.mark.parametrize(
    "action, error, match",
    [
        (-1, ValueError, r"action -1 is out of range; expected a token id in \[0, 49152\)"),
        (49152, ValueError, "49152 is out of range"),
        (3.0, TypeError, "must be an integer token id"),
        (True, TypeError, "must be an integer token id"),
        ("7", TypeError, "must be an integer token id"),
        (np.array([1.5]), TypeError, "must be an integer token id"),
        (np.array([77, 12, 354]), ValueError, r"one token id .*shape \(3,\): array\(\[ 77,  12, 354\]\)"),
        (np.array([], dtype=np.int64), ValueError, r"shape \(0,\)"),
        (np.array([[1, 2], [3, 4]]), ValueError, r"shape \(2, 2\)"),
    ],
)
def test_bad_actions_error_and_leave_env_usable(action, error, match):
    env = make_env()
    obs, _ = env.reset(seed=0)
    before = snapshot(env)
    with pytest.raises(error, match=match):
        env.step(action)
    assert_same_state(before, snapshot(env))
    obs2, reward, *_ = env.step(np.int64(5))  # numpy ints and arrays of one int are fine
    assert obs2["attention_mask"].sum() == obs["attention_mask"].sum() + 1
    env.step(np.array([6]))


def test_action_masks_restrict_actions(tokenizer):
    env = make_env(allowed_token_ids=[5, 6, 7])
    env.reset(seed=0)
    mask = env.action_masks()
    assert mask.dtype == bool and mask.shape == (len(tokenizer),) and mask.sum() == 3 and mask[[5, 6, 7]].all()
    with pytest.raises(ValueError, match="masked out"):
        env.step(8)
    env.step(6)
    assert make_env().action_masks().all()


def test_reward_plugin_failure_names_plugin_and_env_stays_usable(tokenizer, eos_id):
    calls = {"n": 0}

    def flaky(prompts, completions, **info):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("reward server down")
        return [float("nan")] if calls["n"] == 2 else [0.5]

    env = make_env(reward=flaky)
    obs, _ = env.reset(seed=0)
    env.step(5)
    with pytest.raises(rewards.RewardPluginError, match="flaky"):
        env.step(eos_id)
    with pytest.raises(rewards.RewardPluginError, match="nan"):
        env.step(eos_id)
    obs2, reward, terminated, _, info = env.step(eos_id)  # the failed steps were taken back
    assert reward == 0.5 and terminated and info["completion_ids"] == [5, eos_id]


class Interrupting:
    """A reward plugin that raises ``error`` on its first call and scores the completion length afterwards."""

    def __init__(self, error: BaseException) -> None:
        self.error, self.calls = error, 0

    def __call__(self, prompts, completions, **info):
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return [float(len(ids)) for ids in info["completion_ids"]]


class Abort(BaseException):
    """Any BaseException that is not an Exception: propagated unchanged, like KeyboardInterrupt."""


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3), Abort()])
def test_an_interruption_in_the_reward_plugin_leaves_the_env_as_before_the_step(error, eos_id):
    env = make_env(reward=Interrupting(error))
    env.reset(seed=0)
    env.step(5)
    before = snapshot(env)
    with pytest.raises(type(error)):
        env.step(eos_id)
    assert_same_state(before, snapshot(env))
    obs, reward, terminated, truncated, info = env.step(eos_id)  # the same step again, now scored
    assert (reward, terminated, truncated, info["completion_ids"]) == (2.0, True, False, [5, eos_id])
    assert obs["attention_mask"][12:].tolist() == [1, 1, 0, 0, 0]


def test_an_interruption_after_the_token_is_written_is_taken_back(monkeypatch, eos_id):
    env = make_env(reward=Interrupting(ValueError("unused")), render_mode="human")
    env.reset(seed=0)
    env.step(5)

    def interrupted_render():
        raise KeyboardInterrupt

    monkeypatch.setattr(env, "render", interrupted_render)
    before = snapshot(env)
    with pytest.raises(KeyboardInterrupt):
        env.step(6)
    assert_same_state(before, snapshot(env))


def test_a_rejected_reset_changes_no_state_not_even_np_random():
    env = make_env()
    env.reset(seed=3)
    env.step(5)
    before = snapshot(env)
    bad = [
        ({"seed": 11, "options": {"prompt_index": 99}}, ValueError, r"prompt_index=99; expected an int in \[0, 3\)"),
        ({"seed": 11, "options": {"prompt": ""}}, ValueError, "non-empty str"),
        ({"seed": 11, "options": {"promt": "typo"}}, ValueError, r"unknown reset options \['promt'\]"),
        ({"seed": 11, "options": {"prompt": "a", "prompt_index": 0}}, ValueError, "give one"),
        ({"seed": 11, "options": {"reference": 5}}, ValueError, "reference"),
        ({"seed": 11, "options": "prompt"}, ValueError, "options must be a dict"),
        ({"seed": -1}, gym.error.Error, "Seed must be"),
        ({"options": {"prompt_index": -1}}, ValueError, "prompt_index=-1"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            env.reset(**kwargs)
        assert_same_state(before, snapshot(env))
    twin = make_env()
    twin.reset(seed=3)
    assert env.reset()[1] == twin.reset()[1]  # the generator goes on where the seed left it


def test_reset_options_pick_the_prompt_and_reference():
    env = make_env()
    assert env.reset(options={"prompt_index": 2})[1] == {"prompt": PROMPTS[2], "prompt_index": 2}
    assert env.reset(options={"prompt": "Hello", "reference": "Hi"})[1] == {"prompt": "Hello", "prompt_index": -1}
    assert env.unwrapped._reference == "Hi"


def test_reward_timeout_raises_and_leaves_the_env_usable(eos_id):
    release = threading.Event()
    calls = []

    def slow(prompts, completions, **info):
        calls.append(len(calls))
        if len(calls) == 1:
            release.wait(30)  # hangs until the test lets it go
        return [1.0] * len(completions)

    env = make_env(reward=slow, reward_timeout=0.3)
    env.reset(seed=0)
    before = snapshot(env)
    started = time.monotonic()
    with pytest.raises(rewards.RewardPluginError, match=r"'slow' did not return within its timeout of 0.3 s"):
        env.step(eos_id)
    assert time.monotonic() - started < 5
    assert_same_state(before, snapshot(env))
    _, reward, terminated, _, _ = env.step(eos_id)  # a fresh worker serves the next call
    assert (reward, terminated, calls) == (1.0, True, [0, 1])
    release.set()
    with pytest.raises(ValueError, match="reward_timeout must be None or a positive number of seconds, got 0"):
        make_env(reward_timeout=0)


def test_prompt_sources(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": "A", "reference": "ref A"}) + "\n" + json.dumps({"prompt": "B"}) + "\n")
    assert [p.text for p in textenv.load_prompts(txt)] == ["first prompt", "second prompt"]
    loaded = textenv.load_prompts(str(jsonl))
    assert [(p.text, p.reference) for p in loaded] == [("A", "ref A"), ("B", None)]
    assert [p.text for p in textenv.load_prompts(iter([{"prompt": "x"}, {"prompt": "y"}]))] == ["x", "y"]
    builtin = textenv.load_prompts("builtin")
    train, test = textenv.load_prompts("builtin:train"), textenv.load_prompts("builtin:test")
    assert len(builtin) >= 200 and len(set(p.text for p in builtin)) == len(builtin)
    assert not set(train) & set(test) and len(train) + len(test) == len(builtin)
    env = make_env(prompts=str(jsonl))
    env.reset(options={"prompt_index": 0})
    *_, info = env.step(env.task.eos_token_ids[0])
    assert info["reference"] == "ref A"


@pytest.mark.parametrize(
    "source, error, match",
    [
        (["ok", "  "], ValueError, r"prompt #1 is empty"),
        ([], ValueError, "holds no prompts"),
        ("missing.txt", FileNotFoundError, "missing.txt"),
        ("prompts.csv", ValueError, "expected '.txt' or '.jsonl'"),
        ([{"text": "no prompt key"}], ValueError, "needs a 'prompt' key"),
        (42, TypeError, "prompts must be"),
    ],
)
def test_bad_prompt_sources(source, error, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.csv").write_text("a,b\n")
    with pytest.raises(error, match=match):
        make_env(prompts=source)


def test_overlong_prompt_is_truncated_from_the_left_with_a_warning_or_refused(tokenizer):
    long_prompt = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    env = make_env(prompts=[long_prompt])
    with pytest.warns(UserWarning, match="keeping its last max_prompt_tokens=12"):
        obs, _ = env.reset(seed=0)
    assert obs["input_ids"][:12].tolist() == tokenizer(long_prompt)["input_ids"][-12:]
    with pytest.raises(ValueError, match="more than max_prompt_tokens=12"):
        make_env(prompts=[long_prompt], prompt_truncation="error").reset(seed=0)


def test_unknown_reward_lists_known_names():
    with pytest.raises(rewards.UnknownRewardError, match="sentiment"):
        make_env(reward="no-such-reward")


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"max_prompt_tokens": -3}, {"max_new_tokens": 2.5}])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        make_env(**bad)


@pytest.mark.parametrize("name", ["max_new_tokens", "max_prompt_tokens"])
@pytest.mark.parametrize("size", [10**12, 2**63, 1_000_001])
def test_sizes_that_cannot_fit_are_refused_before_allocating(name, size):
    with pytest.raises(ValueError, match=f"{name}={size} is above the limit of 1,000,000"):
        gym.make("MossWords-v0", **{name: size})
    with pytest.raises(ValueError, match=f"{name}={size} is above the limit"):
        gym.make_vec("MossWords-v0", num_envs=2, vectorization_mode="vector_entry_point", **{name: size})


def test_vocab_and_vector_buffer_limits():
    with pytest.raises(ValueError, match="vocab_size=16777217 is above the limit of 16,777,216"):
        gym.make("MossWords-v0", vocab_size=2**24 + 1)
    with pytest.raises(ValueError, match=r"\(max_prompt_tokens \+ max_new_tokens\) = 1000 \* 1000008 .* limit of 268,"):
        gym.make_vec("MossWords-v0", num_envs=1000, vectorization_mode="vector_entry_point", max_new_tokens=10**6)
    with pytest.raises(ValueError, match="num_envs=10000000000 is above the limit"):
        gym.make_vec("MossWords-v0", num_envs=10**10, vectorization_mode="vector_entry_point")
    env = gym.make("MossWords-v0", max_new_tokens=1_000_000)  # the limit itself fits: 16 MB of buffer
    assert env.observation_space["input_ids"].shape == (1_000_008,)


def test_missing_model_path_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "no-model-here")
    with pytest.raises(FileNotFoundError, match="no-model-here"):
        make_env(tokenizer=missing)


def test_chat_template_prompts(tokenizer):
    env = make_env(chat_template=True, max_prompt_tokens=40)
    obs, info = env.reset(seed=0)
    messages = [{"role": "user", "content": info["prompt"]}]
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert obs["input_ids"][40 - len(expected) : 40].tolist() == list(expected)


def test_render_modes(tokenizer, capsys):
    env = make_env(render_mode="ansi")
    env.reset(options={"prompt": "Custom prompt"})
    env.step(word_token(tokenizer, " great"))
    assert env.render() == "Custom prompt >>>  great"
    human = make_env(render_mode="human")
    human.reset(options={"prompt": "Hi"})
    human.step(word_token(tokenizer, " there"))
    assert "Hi >>>  there" in capsys.readouterr().out
    with pytest.raises(ValueError, match="render_mode"):
        make_env(render_mode="rgb")


def test_env_pickles_and_keeps_working():
    env = gym.make("MossText-v0", max_new_tokens=3)
    env.reset(seed=5)
    clone = pickle.loads(pickle.dumps(env))
    a = [env.step(7) for _ in range(3)]
    b = [clone.step(7) for _ in range(3)]
    assert [x[1:4] for x in a] == [x[1:4] for x in b]
    assert np.array_equal(a[-1][0]["input_ids"], b[-1][0]["input_ids"])
