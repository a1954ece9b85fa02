"""The multi-turn contract (textenv/dialogue_env.py, dialogue_vector_env.py) on scripted responders."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded

import rewards
import textenv
from rewards.conversation import Conversation
from textenv.dialogue_env import DialogueEnv
from textenv.dialogue_vector_env import DialogueVectorEnv
from textenv.responders import Reply, Responder, ScriptedResponder

OPENINGS = ["My flight got cancelled.", "I lost my keys today."]


def chat_env(**overrides):
    kwargs = dict(
        tokenizer="smollm2-135m-instruct",
        prompts=OPENINGS,
        responder="scripted",
        responder_kwargs={"replies": ["That helps a bit.", "Thanks, I feel better."]},
        reward="user_sentiment",
        max_turns=3,
        max_turn_tokens=8,
        max_total_tokens=64,
        max_prompt_tokens=48,
    )
    kwargs.update(overrides)
    return DialogueEnv(**kwargs)


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def agent_tokens(obs, info):
    real = obs["attention_mask"] > 0
    return obs["input_ids"][real & ~info["inserted_mask"]].tolist()


def test_observation_is_the_chat_template_and_inserted_mask_is_exact(tokenizer, eos_id):
    env = chat_env()
    obs, info = env.reset(seed=0, options={"prompt_index": 0})
    assert info["turn"] == 0 and agent_tokens(obs, info) == []
    assert info["inserted_mask"].sum() == obs["attention_mask"].sum()  # the opening is all inserted
    turns = ["Oh no, sorry!", "Let us rebook it."]
    written = []
    for k, text in enumerate(turns):
        ids = [*encode(tokenizer, text), eos_id]
        for i, token in enumerate(ids):
            obs, reward, terminated, truncated, info = env.step(token)
            written.append(token)
            assert not (terminated or truncated)
            assert info["turn"] == (k + 1 if i == len(ids) - 1 else k)
            assert agent_tokens(obs, info) == written  # the agent's tokens, exactly, in order
        assert info["reply"] == ["That helps a bit.", "Thanks, I feel better."][k]
    messages = [
        {"role": "user", "content": OPENINGS[0]},
        {"role": "assistant", "content": turns[0]},
        {"role": "user", "content": "That helps a bit."},
        {"role": "assistant", "content": turns[1]},
        {"role": "user", "content": "Thanks, I feel better."},
    ]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    real = obs["attention_mask"] > 0
    assert tokenizer.decode(obs["input_ids"][real]) == expected
    # the inserted tokens are exactly the template's frame around the replies, and the opening
    inserted_text = tokenizer.decode(obs["input_ids"][real & info["inserted_mask"]])
    assert inserted_text == expected.replace(turns[0] + "<|im_end|>", "").replace(turns[1] + "<|im_end|>", "")


def test_turn_budget_closes_the_turn_with_an_inserted_end_of_turn(tokenizer, eos_id):
    env = chat_env(max_turn_tokens=3)
    obs, info = env.reset(seed=0)
    word = encode(tokenizer, " la")[0]
    for i in range(3):
        obs, reward, terminated, truncated, info = env.step(word)
    assert info["turn"] == 1 and not (terminated or truncated)
    p = env.task.max_prompt_tokens
    # slot p+3 holds the end-of-turn token the env wrote, marked inserted
    assert obs["input_ids"][p + 3] == eos_id and info["inserted_mask"][p + 3]
    assert not info["inserted_mask"][p : p + 3].any()
    assert agent_tokens(obs, info) == [word] * 3


def test_episode_ends_after_max_turns_terminated_with_the_last_reply_scored(eos_id):
    env = chat_env(max_turns=2, responder_kwargs={"replies": ["meh", "I love it, wonderful!"]})
    env.reset(seed=0)
    steps = 0
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(eos_id)  # empty turns
        steps += 1
    assert (steps, terminated, truncated) == (2, True, False)
    conversation = info["conversation"]
    assert conversation.num_agent_turns == 2 and conversation.last_reply == "I love it, wonderful!"
    assert reward == pytest.approx(rewards.make("sentiment")([""], ["I love it, wonderful!"])[0])
    assert reward == info["reward_components"]["user_sentiment"] > 0.5
    with pytest.raises(ResetNeeded):
        env.step(eos_id)


def test_solved_task_terminates_early_and_total_budget_truncates():
    env = DialogueEnv(**textenv.registration.DIALOGUE_ENV_IDS["MossGuessWords-v0"][0])
    tok = env.tokenizer
    obs, info = env.reset(seed=0)
    secret = env.core.conversation(0).reference
    obs, reward, terminated, truncated, info = env.step(tok.convert_tokens_to_ids(secret))
    assert (terminated, truncated, reward) == (True, False, 1.0)
    assert info["conversation"].solved and info["conversation"].last_reply == "correct"

    env = chat_env(max_total_tokens=12, max_turn_tokens=8)
    env.reset(seed=0)
    word = encode(tok_smol := env.tokenizer, " la")[0]
    results = [env.step(word) for _ in range(8)]  # turn 1 ends by its budget; the reply does not fit in 12 slots
    flags = [(r[2], r[3]) for r in results]
    assert flags[:7] == [(False, False)] * 7 and flags[7] == (False, True)
    assert results[7][4]["conversation"].num_agent_turns == 1
    del tok_smol


def test_per_turn_rewards_and_their_components(eos_id):
    env = chat_env(turn_reward="agent_tokens", reward="agent_tokens", max_turns=2)
    env.reset(seed=0)
    obs, r1, *_ , info1 = env.step(eos_id)
    assert r1 == 1.0 and info1["turn_reward_components"] == {"agent_tokens": 1.0}
    env.step(5)
    obs, r2, terminated, truncated, info2 = env.step(eos_id)
    assert terminated and info2["turn_reward_components"] == {"agent_tokens": 3.0}
    assert r2 == 3.0 + info2["reward_components"]["agent_tokens"] == 6.0


class FlakyResponder(Responder):
    def __init__(self):
        self.fail = False

    def respond(self, conversations, rngs):
        for rng in rngs:
            rng.integers(100)  # consumes the row's generator before failing
        if self.fail:
            raise RuntimeError("responder down")
        return [Reply("ok") for _ in conversations]


def test_failing_responder_or_reward_leaves_the_env_as_before_the_step(eos_id):
    responder = FlakyResponder()
    env = chat_env(responder=responder, responder_kwargs=None)
    env.reset(seed=3)
    env.step(5)
    state = (env.core._input_ids.copy(), env.core._lengths.copy(), env.np_random.bit_generator.state)
    responder.fail = True
    with pytest.raises(RuntimeError, match="responder down"):
        env.step(eos_id)
    assert np.array_equal(env.core._input_ids, state[0]) and np.array_equal(env.core._lengths, state[1])
    assert env.np_random.bit_generator.state == state[2]
    responder.fail = False
    obs, reward, terminated, truncated, info = env.step(eos_id)
    assert info["turn"] == 1 and info["reply"] == "ok"

    def broken(prompts, completions, **info):
        raise ValueError("broken plugin")

    env = chat_env(reward=broken, max_turns=1)
    env.reset(seed=0)
    with pytest.raises(rewards.RewardPluginError, match="broken"):
        env.step(eos_id)
    assert env.core._lengths[0] == 0 and env.core._turns[0] == 0


@pytest.mark.parametrize("action, error", [(1.5, TypeError), (True, TypeError), (10**9, ValueError), (-1, ValueError)])
def test_bad_actions_raise_and_leave_the_env_usable(action, error, eos_id):
    env = chat_env()
    env.reset(seed=0)
    with pytest.raises(error):
        env.step(action)
    assert env.step(eos_id)[4]["turn"] == 1


def test_step_before_reset_and_bad_options():
    env = chat_env()
    with pytest.raises(ResetNeeded):
        env.step(5)
    with pytest.raises(ValueError, match="prompt_index"):
        env.reset(options={"prompt_index": 7})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"bogus": 1})
    with pytest.raises(ValueError, match="max_turns"):
        chat_env(max_turns=0)
    with pytest.raises(ValueError, match="responder"):
        chat_env(responder="nobody")


@pytest.mark.parametrize("env_id", ["MossGuess-v0", "MossGuessWords-v0"])
def test_gymnasium_and_sb3_env_checkers_pass(env_id):
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    gym_check_env(gym.make(env_id).unwrapped)
    sb3_check_env(gym.make(env_id).unwrapped)


def test_env_checkers_pass_on_moss_chat_with_a_tiny_simulated_user():
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    kwargs = {"responder_kwargs": {"model": textenv.TINY_MODEL, "max_new_tokens": 4}, "max_turn_tokens": 2}
    gym_check_env(gym.make("MossChat-v0", **kwargs).unwrapped)
    sb3_check_env(gym.make("MossChat-v0", **kwargs).unwrapped)


def _random_actions(rng, n, eos_id):
    # mostly ordinary tokens, often the end-of-turn token, so that turns end at different steps in each row
    return np.where(rng.random(n) < 0.3, eos_id, rng.integers(100, 2000, size=n)).astype(np.int64)


def test_vector_env_equals_sync_vector_env_of_single_envs(eos_id):
    kwargs = dict(
        tokenizer="smollm2-135m-instruct",
        prompts=OPENINGS,
        responder="scripted",
        responder_kwargs={"replies": ["yes", "no way", "I feel great now!", "hmm"], "shuffle": True},
        reward=["user_sentiment", ("agent_tokens", -0.01)],
        turn_reward="agent_tokens",
        max_turns=3,
        max_turn_tokens=4,
        max_total_tokens=30,
        max_prompt_tokens=48,
    )
    n = 4
    vector = DialogueVectorEnv(n, **kwargs)
    sync = gym.vector.SyncVectorEnv([lambda: DialogueEnv(**kwargs) for _ in range(n)])
    obs_v, info_v = vector.reset(seed=11)
    obs_s, info_s = sync.reset(seed=11)
    rng = np.random.default_rng(0)
    episodes = 0
    for _ in range(60):
        for key in obs_v:
            assert np.array_equal(obs_v[key], obs_s[key])
        for key in ("turn", "_turn", "inserted_mask", "prompt_index"):
            if key in info_v or key in info_s:
                assert np.array_equal(info_v[key], info_s[key]), key
        for key in ("reward_components", "turn_reward_components"):
            assert (key in info_v) == (key in info_s)
            if key in info_v:
                for name in info_v[key]:
                    assert np.array_equal(info_v[key][name], info_s[key][name]), (key, name)
        if "conversation" in info_v:
            assert list(info_v["conversation"]) == list(info_s["conversation"])
            episodes += int(info_v["_conversation"].sum())
        if "reply" in info_v:
            assert list(info_v["reply"]) == list(info_s["reply"])
        actions = _random_actions(rng, n, eos_id)
        obs_v, rew_v, term_v, trunc_v, info_v = vector.step(actions)
        obs_s, rew_s, term_s, trunc_s, info_s = sync.step(actions)
        assert np.allclose(rew_v, rew_s) and np.array_equal(term_v, term_s) and np.array_equal(trunc_v, trunc_s)
    assert episodes >= 8  # many episodes ended (and autoreset) on the way


def test_vector_env_disabled_mode_waits_for_reset(eos_id):
    env = DialogueVectorEnv(2, autoreset_mode="Disabled", **chat_env_kwargs())
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(np.array([eos_id, 5]))
    obs, r, term, trunc, info = env.step(np.array([eos_id, 5]))
    assert term.tolist() == [True, False]
    frozen = obs["input_ids"][0].copy()
    obs, r, term, trunc, info = env.step(np.array([7, 5]))
    assert term.tolist() == [True, False] and r[0] == 0 and np.array_equal(obs["input_ids"][0], frozen)
    obs, info = env.reset(options={"reset_mask": np.array([True, False])})
    assert info["turn"].tolist() == [0, 0] and info["_prompt"].tolist() == [True, False]
    with pytest.raises(ValueError, match="autoreset_mode"):
        DialogueVectorEnv(2, autoreset_mode="SameStep", **chat_env_kwargs())


def chat_env_kwargs():
    return dict(
        tokenizer="smollm2-135m-instruct",
        prompts=OPENINGS,
        responder=ScriptedResponder(["ok"]),
        max_turns=2,
        max_turn_tokens=8,
        max_total_tokens=40,
        max_prompt_tokens=48,
    )


def test_single_turn_plugins_score_the_agents_side_unchanged(tokenizer, eos_id):
    env = chat_env(reward="sentiment", max_turns=1)
    env.reset(seed=0)
    for token in [*encode(tokenizer, "Wonderful news!"), eos_id]:
        obs, reward, terminated, truncated, info = env.step(token)
    assert terminated and reward == pytest.approx(rewards.make("sentiment")([""], ["Wonderful news!"])[0])


def test_conversation_plugins_refuse_a_single_turn_call():
    with pytest.raises(rewards.RewardPluginError, match="conversations"):
        rewards.make("user_sentiment")(["p"], ["c"])
    conversation = Conversation(
        ({"role": "user", "content": "guess"}, {"role": "assistant", "content": "is it a Cat?"}), ((1, 2),), "cat"
    )
    assert rewards.make("guessed_word", turn_cost=0.25)([""], [""], conversations=[conversation]).tolist() == [1.0]


def test_envs_pickle_and_keep_working(eos_id):
    import pickle

    env = gym.make("MossChat-v0", responder_kwargs={"model": textenv.TINY_MODEL, "max_new_tokens": 3}).unwrapped
    env.reset(seed=0)
    env.step(eos_id)
    copy = pickle.loads(pickle.dumps(env))
    assert copy.task.responder._model is None  # the user model is reloaded by name, not pickled
    obs, reward, terminated, truncated, info = copy.step(eos_id)
    assert info["turn"] == 2 and isinstance(info["reply"], str)
    p = env.task.max_prompt_tokens
    assert np.array_equal(obs["input_ids"][:p], env.core._input_ids[0, :p])
