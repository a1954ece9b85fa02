"""Responders: the simulated user (a real causal LM; the tiny random model here) and the word-game master."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import textenv
from rewards.conversation import Conversation
from textenv.responders import SimulatedUser, WordGameResponder, make_responder


def moss_chat_vector(num_envs, **overrides):
    kwargs = {
        "responder_kwargs": {"model": textenv.TINY_MODEL, "max_new_tokens": 6},
        "max_turn_tokens": 3,
        **overrides,
    }
    return gym.make_vec("MossChat-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


def run(env, seed, steps, eos_id):
    """Step with the end-of-turn token in a row-dependent rhythm; return the replies and the generate calls."""
    env.reset(seed=seed)
    replies, turn_end_steps = [], 0
    for step in range(steps):
        actions = np.array([eos_id if (step + row) % 2 == 0 else 600 + row for row in range(env.num_envs)])
        obs, rewards, terminated, truncated, info = env.step(actions)
        if "reply" in info:
            turn_end_steps += 1
            replies.append([r if m else None for r, m in zip(info["reply"], info["_reply"])])
    return replies, turn_end_steps, obs


def test_simulated_user_is_reproducible_under_a_seed_and_batched_per_step(eos_id):
    first = moss_chat_vector(3)
    replies_a, turn_end_steps, obs_a = run(first, seed=5, steps=7, eos_id=eos_id)
    user = first.unwrapped.task.responder
    assert isinstance(user, SimulatedUser)
    # one batched generate per step in which any row's turn ended (rows end turns on different steps here)
    assert user.generate_calls == turn_end_steps >= 4
    assert any(sum(r is not None for r in step) > 1 for step in replies_a)  # some calls answered several rows

    second = moss_chat_vector(3)
    replies_b, _, obs_b = run(second, seed=5, steps=7, eos_id=eos_id)
    assert replies_a == replies_b and np.array_equal(obs_a["input_ids"], obs_b["input_ids"])
    replies_c, _, _ = run(second, seed=6, steps=7, eos_id=eos_id)
    assert replies_c != replies_a  # the seed drives the sampling


def test_simulated_user_sees_the_conversation_from_the_users_side():
    user = SimulatedUser(model=textenv.TINY_MODEL, persona="You complained: {opening}")
    conversation = Conversation(
        ({"role": "user", "content": "My bike was stolen."}, {"role": "assistant", "content": "Sorry!"}), ((1,),)
    )
    assert user.user_view(conversation) == [
        {"role": "system", "content": "You complained: My bike was stolen."},
        {"role": "assistant", "content": "My bike was stolen."},
        {"role": "user", "content": "Sorry!"},
    ]


def test_word_game_master_answers_by_the_secrets_attributes():
    master = WordGameResponder()
    rngs = [np.random.default_rng(0)] * 3

    def ask(text):
        messages = ({"role": "user", "content": "guess"}, {"role": "assistant", "content": text})
        return Conversation(messages, ((1,),), "cat")

    replies = master.respond([ask("Is it a pet?"), ask("Does it fly?"), ask("It is a CAT!")], rngs)
    assert [(r.text, r.solved) for r in replies] == [("yes", False), ("no", False), ("correct", True)]
    with pytest.raises(ValueError, match="no entry"):
        unknown = ask("x").messages
        master.respond([Conversation(unknown, ((1,),), "unicorn")], rngs)


def test_bad_responder_arguments_are_named():
    with pytest.raises(ValueError, match="max_new_tokens"):
        SimulatedUser(max_new_tokens=0)
    with pytest.raises(ValueError, match="replies"):
        make_responder("scripted", replies=[])
    with pytest.raises(ValueError, match="expected one of"):
        make_responder("oracle")
