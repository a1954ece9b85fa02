"""The native TextGenerationVectorEnv: equivalence with N single envs, batching, bad input, processes."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

import rewards
import textenv  # noqa: F401  (registers MossText-v0)
from textenv import TextGenerationEnv
from textenv.vector_env import TextGenerationVectorEnv

from env_state import assert_equal as assert_same
from env_state import assert_same_state, snapshot

PROMPTS = [
    "The movie was",
    "I walked into the theater and",
    "Halfway through the second act,",
    "The soundtrack",
    "My friends said the ending",
]
WORDS = [" great", " good", " bad", " the", " movie", " and"]
TASK = dict(
    prompts=PROMPTS,
    reward="keyword",
    reward_kwargs={"keywords": ["great", "good"], "mode": "count"},
    max_new_tokens=4,
    max_prompt_tokens=12,
)


def with_reward(reward) -> dict:
    return {**TASK, "reward": reward, "reward_kwargs": None}


def word_ids(tokenizer) -> list[int]:
    ids = [tokenizer(word)["input_ids"] for word in WORDS]
    assert all(len(i) == 1 for i in ids), ids
    return [i[0] for i in ids]


def random_actions(rng: np.random.Generator, n: int, tokens: list[int], eos: int, p_eos: float = 0.3) -> np.ndarray:
    """Token ids from a few real words, EOS with probability ``p_eos`` so episodes end early and often."""
    actions = rng.choice(tokens, size=n)
    actions[rng.random(n) < p_eos] = eos
    return actions.astype(np.int64)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_equals_sync_vector_env_of_single_envs_step_by_step(mode, tokenizer, eos_id):
    n, steps = 5, 40
    native = TextGenerationVectorEnv(n, autoreset_mode=mode, **TASK)
    sync = SyncVectorEnv([lambda: TextGenerationEnv(**TASK) for _ in range(n)], autoreset_mode=mode)
    assert native.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"] == mode
    assert native.observation_space == sync.observation_space and native.action_space == sync.action_space
    assert_same(native.reset(seed=7), sync.reset(seed=7), "reset")
    rng = np.random.default_rng(0)
    tokens = word_ids(tokenizer)
    ended = rewarded = 0
    for step in range(steps):
        actions = random_actions(rng, n, tokens, eos_id)
        got, expected = native.step(actions), sync.step(actions)
        assert_same(got, expected, f"step {step}")
        ended += int((got[2] | got[3]).sum())
        rewarded += int((got[1] > 0).sum())
    # the run exercised what it should: early EOS, truncations, non-zero rewards, several resets per row
    assert ended > 2 * n and rewarded > 0
    # a later reset without a seed keeps drawing from each row's generator, like the single envs
    assert_same(native.reset(), sync.reset(), "second reset")


def test_disabled_mode_runs_rows_in_lockstep_until_reset(tokenizer, eos_id):
    n = 4
    native = TextGenerationVectorEnv(n, autoreset_mode=AutoresetMode.DISABLED, **TASK)
    singles = [TextGenerationEnv(**TASK) for _ in range(n)]
    obs, _ = native.reset(seed=3)
    expected_obs = [env.reset(seed=3 + i)[0] for i, env in enumerate(singles)]
    assert_same(obs, {k: np.stack([o[k] for o in expected_obs]) for k in obs})
    rng = np.random.default_rng(1)
    tokens = word_ids(tokenizer)
    done = np.zeros(n, dtype=bool)
    final = [None] * n  # (terminated, truncated) of each finished row
    waited = False
    while not done.all():
        waited = waited or bool(done.any())
        actions = random_actions(rng, n, tokens, eos_id, p_eos=0.25)
        obs, reward, terminated, truncated, info = native.step(actions)
        for i, env in enumerate(singles):
            if done[i]:  # ignored action: the final observation, reward 0 and the same flags again
                assert reward[i] == 0.0 and (terminated[i], truncated[i]) == final[i]
                assert not info.get("_completion", np.zeros(n, bool))[i]
            else:
                o, r, term, trunc, single_info = env.step(actions[i])
                expected_obs[i] = o
                assert (reward[i], terminated[i], truncated[i]) == (r, term, trunc)
                if term or trunc:
                    done[i], final[i] = True, (term, trunc)
                    assert info["_completion"][i] and info["completion"][i] == single_info["completion"]
            for key in obs:
                np.testing.assert_array_equal(obs[key][i], expected_obs[i][key])
    assert waited, "no row finished before the others: the lockstep waiting was not exercised"
    obs_again, *_ = native.step(np.full(n, tokens[0]))  # everyone is done: nothing moves
    assert_same(obs_again, obs)

    # reset only rows 0 and 2; rows 1 and 3 stay finished
    mask = np.array([True, False, True, False])
    obs, info = native.reset(options={"reset_mask": mask})
    assert info["_prompt"].tolist() == mask.tolist()
    for i in (0, 2):
        o, single_info = singles[i].reset()
        assert info["prompt"][i] == single_info["prompt"]
        np.testing.assert_array_equal(obs["input_ids"][i], o["input_ids"])
    _, _, terminated, truncated, _ = native.step(np.full(n, tokens[0]))
    assert not (terminated[0] or truncated[0]) and (terminated[1] or truncated[1])


def test_one_batched_reward_call_per_step(eos_id, tokenizer):
    calls: list[int] = []

    def counting(prompts, completions, **info):
        calls.append(len(completions))
        return [float(len(c)) for c in completions]

    n, great = 6, word_ids(tokenizer)[0]
    env = TextGenerationVectorEnv(n, **with_reward(counting))
    env.reset(seed=0)
    first = np.array([eos_id, great] * 3)  # rows 0, 2, 4 end now
    _, reward, terminated, _, info = env.step(first)
    assert calls == [3] and terminated.tolist() == [True, False] * 3
    assert reward.tolist() == [0.0] * 6  # EOS right away: empty completions, length 0
    for _ in range(3):  # rows 1, 3, 5 write 4 tokens and truncate together; rows 0, 2, 4 reset and restart
        _, reward, _, truncated, info = env.step(np.full(n, great))
    assert calls == [3, 3] and truncated.tolist() == [False, True] * 3
    assert reward[1] == len(" great" * 4) and info["completion"][1] == " great" * 4

    calls.clear()  # the same steps on N single envs call the reward once per finished episode
    sync = SyncVectorEnv([lambda: TextGenerationEnv(**with_reward(counting)) for _ in range(n)])
    sync.reset(seed=0)
    sync.step(first)
    for _ in range(3):
        sync.step(np.full(n, great))
    assert calls == [1] * 6


def test_action_masks_and_make_vec(tokenizer):
    env = gym.make_vec("MossText-v0", num_envs=3, vectorization_mode="vector_entry_point", max_new_tokens=3)
    assert isinstance(env, TextGenerationVectorEnv)
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert env.observation_space["input_ids"].shape == (3, 35)
    mask = env.action_masks()
    assert mask.shape == (3, len(tokenizer)) and mask.dtype == bool and mask.all()
    for mode in (AutoresetMode.DISABLED, "SameStep"):
        made = gym.make_vec(
            "MossText-v0", num_envs=2, vectorization_mode="vector_entry_point", autoreset_mode=mode, max_new_tokens=3
        )
        assert made.metadata["autoreset_mode"] == AutoresetMode(mode) == made.autoreset_mode
    restricted = TextGenerationVectorEnv(2, **TASK, allowed_token_ids=[5, 6, 7])
    mask = restricted.action_masks()
    assert mask.shape == (2, len(tokenizer)) and mask.sum(axis=1).tolist() == [3, 3] and mask[:, [5, 6, 7]].all()
    mask[:] = False  # a copy: the env's own mask is untouched
    assert restricted.action_masks().sum() == 6
    with pytest.raises(ValueError, match="autoreset_mode"):
        TextGenerationVectorEnv(2, autoreset_mode="sometimes", **TASK)


@pytest.mark.parametrize(
    "actions, error, match",
    [
        (np.array([5, 6, 7]), TypeError, r"shape \(2,\)"),
        (np.array([[5, 6]]), TypeError, r"shape \(2,\)"),
        (np.array([5.0, 6.0]), TypeError, "integer token ids"),
        (np.array([True, False]), TypeError, "integer token ids"),
        (["5", "6"], TypeError, "integer token ids"),
        (np.array([5, -1]), ValueError, r"actions\[1\] = -1 is out of range"),
        (np.array([49152, 5]), ValueError, r"actions\[0\] = 49152 is out of range; expected token ids in \[0, 49152\)"),
        (np.array([5, 8]), ValueError, r"actions\[1\] = 8 is masked out"),
    ],
)
def test_bad_actions_raise_and_change_nothing(actions, error, match):
    kwargs = dict(TASK, allowed_token_ids=list(range(8)))
    env, twin = TextGenerationVectorEnv(2, **kwargs), TextGenerationVectorEnv(2, **kwargs)
    before, _ = env.reset(seed=2)
    twin.reset(seed=2)
    env.step(np.array([5, 6]))
    twin.step(np.array([5, 6]))
    state = snapshot(env)
    with pytest.raises(error, match=match):
        env.step(actions)
    assert_same_state(state, snapshot(env))
    assert_same(env.step(np.array([6, 7])), twin.step(np.array([6, 7])))


def test_bad_reset_options_raise_and_change_nothing():
    env, twin = TextGenerationVectorEnv(3, **TASK), TextGenerationVectorEnv(3, **TASK)
    with pytest.raises(ResetNeeded, match="reset"):
        env.step(np.array([5, 5, 5]))
    with pytest.raises(ResetNeeded, match="first reset"):
        env.reset(options={"reset_mask": np.array([True, False, False])})
    assert_same(env.reset(seed=4), twin.reset(seed=4))
    bad = [
        ({"options": {"prompt_index": [0, 1, 99]}}, ValueError, r"prompt_index=99; expected an int in \[0, 5\)"),
        ({"options": {"prompt_index": [None, None, 7]}}, ValueError, "prompt_index=7"),  # rows 0, 1 draw first
        ({"options": {"prompt_index": [0, 1]}}, ValueError, "needs 3 entries"),
        ({"options": {"prompts": "one string"}}, ValueError, "must be a sequence of 3 entries"),
        ({"options": {"prompts": ["ok", "fine", ""]}}, ValueError, "non-empty str"),
        ({"options": {"reset_mask": [1, 0, 1]}}, ValueError, "bool array of shape"),
        ({"options": {"reset_mask": np.zeros(3, bool)}}, ValueError, "at least one True"),
        ({"options": {"prompt": "single-env option"}}, ValueError, r"unknown reset options \['prompt'\]"),
        ({"seed": [1, 2]}, ValueError, "3 seeds"),
        ({"seed": 7, "options": {"prompt_index": [0, 1, 99]}}, ValueError, "prompt_index=99"),
        ({"seed": [1, -2, 3]}, gym.error.Error, "Seed must be"),
        ({"seed": 7, "options": "prompts"}, ValueError, "options must be a dict"),
    ]
    state = snapshot(env)
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            env.reset(**kwargs)
        assert_same_state(state, snapshot(env))  # np_random and every row's generator included
    assert_same(env.reset(), twin.reset())  # the failed resets drew nothing from the row generators
    obs, info = env.reset(options={"prompt_index": np.array([4, 0, 2]), "reset_mask": np.array([True, True, False])})
    assert info["prompt"][:2].tolist() == [PROMPTS[4], PROMPTS[0]] and info["_prompt"].tolist() == [True, True, False]
    obs, info = env.reset(options={"prompts": ["alpha", "beta", "gamma"]})
    assert info["prompt"].tolist() == ["alpha", "beta", "gamma"] and info["prompt_index"].tolist() == [-1, -1, -1]


def test_observations_are_copies():
    env = TextGenerationVectorEnv(2, **TASK)
    obs, _ = env.reset(seed=0)
    obs2, *_ = env.step(np.array([5, 6]))
    assert obs["attention_mask"][:, 12].tolist() == [0, 0] and obs2["attention_mask"][:, 12].tolist() == [1, 1]
    obs2["input_ids"][:] = 0  # scribbling on an observation does not reach the env
    obs3, *_ = env.step(np.array([7, 8]))
    assert obs3["input_ids"][:, 12].tolist() == [5, 6]


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_reward_failure_rolls_the_step_back(mode, eos_id, tokenizer):
    state = {"calls": 0}

    def length(prompts, completions, **info):
        return [float(len(c)) for c in completions]

    def flaky(prompts, completions, **info):
        state["calls"] += 1
        if state["calls"] == 2:
            raise RuntimeError("reward server down")
        return length(prompts, completions)

    great = word_ids(tokenizer)[0]
    # the same plugin name for both, so the reward components compare equal
    env = TextGenerationVectorEnv(3, autoreset_mode=mode, **with_reward(rewards.RewardModel(flaky, "chars")))
    twin = TextGenerationVectorEnv(3, autoreset_mode=mode, **with_reward(rewards.RewardModel(length, "chars")))
    plan = [[eos_id, great, great], [great, eos_id, great], [great, great, great]]
    for env_ in (env, twin):
        env_.reset(seed=9)
        env_.step(np.array(plan[0]))  # row 0 ends (first reward call); NEXT_STEP resets it on the next step
    with pytest.raises(rewards.RewardPluginError, match="chars.*reward server down"):
        env.step(np.array(plan[1]))
    for step, actions in enumerate(plan[1:]):  # the failed step was taken back: the env goes on like its twin
        assert_same(env.step(np.array(actions)), twin.step(np.array(actions)), f"step {step}")
    assert state["calls"] == 3


class Interrupting:
    """A reward plugin that raises ``error`` on call number ``at`` and scores completion lengths otherwise."""

    def __init__(self, error: BaseException, at: int) -> None:
        self.error, self.at, self.calls = error, at, 0

    def __call__(self, prompts, completions, **info):
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return [float(len(ids)) for ids in info["completion_ids"]]


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
@pytest.mark.parametrize("where", ["plugin", "after the tokens are written"])
def test_an_interruption_during_a_step_leaves_the_env_as_before(mode, where, eos_id, tokenizer, monkeypatch):
    great = word_ids(tokenizer)[0]
    env, twin = (
        TextGenerationVectorEnv(
            3, autoreset_mode=mode, **with_reward(rewards.RewardModel(Interrupting(KeyboardInterrupt(), at), "len"))
        )
        for at in (2, 0)  # the env's plugin is interrupted on its second call, the twin's never
    )
    plan = [[eos_id, great, great], [great, eos_id, great], [great, great, eos_id], [great, great, great]]
    for env_ in (env, twin):
        env_.reset(seed=9)
        env_.step(np.array(plan[0]))  # row 0 ends: reward call 1
    if where != "plugin":  # the plugin is fine; the step is interrupted later, after the buffer was written
        env.task.reward_model.plugin.at = 0
        observation = env._observation
        calls = []

        def interrupted_observation():
            calls.append(1)
            if len(calls) == 1:
                raise KeyboardInterrupt
            return observation()

        monkeypatch.setattr(env, "_observation", interrupted_observation)
    state = snapshot(env)
    with pytest.raises(KeyboardInterrupt):
        env.step(np.array(plan[1]))
    assert_same_state(state, snapshot(env))
    for step, actions in enumerate(plan[1:]):  # the interrupted step was taken back: the env goes on like its twin
        assert_same(env.step(np.array(actions)), twin.step(np.array(actions)), f"step {step}")


def test_vector_env_pickles_and_keeps_working(tokenizer, eos_id):
    env = gym.make_vec("MossText-v0", num_envs=3, vectorization_mode="vector_entry_point", max_new_tokens=3)
    env.reset(seed=5)
    env.step(np.array([eos_id, 7, 7]))
    clone = pickle.loads(pickle.dumps(env))
    rng = np.random.default_rng(0)
    for _ in range(4):
        actions = random_actions(rng, 3, word_ids(tokenizer), eos_id)
        assert_same(env.step(actions), clone.step(actions))


def test_async_vector_env_of_single_envs_matches_sync(tokenizer, eos_id):
    fns = [lambda: TextGenerationEnv(**TASK) for _ in range(2)]
    async_env = AsyncVectorEnv(fns, context="fork")
    sync = SyncVectorEnv(fns)
    try:
        assert_same(async_env.reset(seed=1), sync.reset(seed=1))
        rng = np.random.default_rng(2)
        for step in range(8):
            actions = random_actions(rng, 2, word_ids(tokenizer), eos_id)
            assert_same(async_env.step(actions), sync.step(actions), f"step {step}")
    finally:
        async_env.close()


def test_sb3_subproc_vec_env_runs_single_envs(eos_id):
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = SubprocVecEnv([lambda: TextGenerationEnv(**TASK) for _ in range(2)], start_method="fork")
    try:
        obs = venv.reset()
        assert obs["input_ids"].shape == (2, 16)
        _, _, dones, infos = venv.step(np.array([eos_id, 5]))
        assert dones.tolist() == [True, False] and infos[0]["TimeLimit.truncated"] is False
        assert infos[0]["terminal_observation"]["input_ids"][12] == eos_id
        assert venv.env_method("action_masks")[0].shape == (49152,)
    finally:
        venv.close()


def test_fast_decode_equals_tokenizer_decode(tokenizer, eos_id):
    """TextTask.decode calls the Rust backend directly; it must give exactly what tokenizer.decode gives."""
    env = TextGenerationVectorEnv(1, **TASK)
    task = env.task
    assert task._fast_decode, "the SmolLM2 tokenizer should take the fast path"
    rng = np.random.default_rng(0)
    # random ids, spaces before punctuation (the clean-up rewrites " ." and " n't"), special and added tokens
    cases = [rng.integers(0, len(tokenizer), size).tolist() for size in (1, 5, 24, 200) for _ in range(10)]
    cases += [tokenizer("Hello , world . I do n't know ! it 's fine")["input_ids"], [0, 1, eos_id, 5, eos_id], []]
    for ids in cases:
        expected = tokenizer.decode([t for t in ids if t != eos_id], skip_special_tokens=True)
        assert task.decode(ids) == expected == task.decode(np.array(ids, dtype=np.int64)) == task.decode_ids(ids), ids
