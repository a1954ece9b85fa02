"""textenv/TextArena-v0: single-player TextArena games as multi-turn envs, played by scripted agents.

The real textarena library (the ``tasks`` extra); each game's reward is checked against the same game played
directly in textarena with the same seed and moves.
"""

from __future__ import annotations

import json
import random
import sys

import gymnasium as gym
import numpy as np
import pytest

import textenv  # noqa: F401  (registers the ids)
from textenv.extras import MissingExtraError
from textenv.models import TINY_MODEL
from textenv.tasks.textarena_games import TEST_SEED_START, GameUnavailableError, NotSinglePlayerError
from vector_twins import run_twins

ENV_ID = "textenv/TextArena-v0"
BASE = dict(tokenizer=TINY_MODEL, max_turn_tokens=8, max_total_tokens=160, max_prompt_tokens=256)


def make(**kwargs):
    return gym.make(ENV_ID, **{**BASE, **kwargs})


def play_turn(env, text: str):
    """Write one agent turn (``text`` then the end-of-turn token); the step result that ends it."""
    tokenizer = env.unwrapped.tokenizer
    for token in tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]:
        result = env.step(token)
        if result[2] or result[3] or "reply" in result[4]:
            return result
    raise AssertionError(f"the turn {text!r} did not end")


def textarena_reward(game: str, seed: int, moves: list[str]) -> float:
    """The reward textarena itself gives for ``moves`` in ``game`` started with ``seed`` (its own registered
    wrappers, Python's global random, no textenv in between)."""
    import textarena as ta

    env = ta.make(game)
    env.reset(num_players=1, seed=seed)
    for move in moves:
        done, _ = env.step(move)
        if done:
            break
    rewards, _ = env.close()
    return float(rewards[0])


def test_gymnasium_and_sb3_env_checkers_pass():
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    gym_check_env(make(game="GuessTheNumber-v0").unwrapped)
    sb3_check_env(make(game="TowerOfHanoi-v0").unwrapped)


def test_a_game_played_to_its_end_gives_the_games_own_reward():
    env = make(game="GuessTheNumber-v0")
    before = random.getstate()
    _, info = env.reset(seed=3)
    assert "Guess The Number" in info["prompt"]
    low, high, moves = 1, 20, []
    while True:  # binary search: the game answers "higher" or "lower"
        guess = (low + high) // 2
        moves.append(str(guess))
        _, reward, terminated, truncated, info = play_turn(env, str(guess))  # "5" -> "[5]" (the game's wrapper)
        if terminated or truncated:
            break
        assert reward == 0.0 and np.any(info["inserted_mask"])  # the game's answer is in, masked
        low, high = (guess + 1, high) if "higher" in info["reply"] else (low, guess - 1)
    assert random.getstate() == before  # the game drew from its own generator, not the caller's
    assert terminated and not truncated
    outcome = info["conversation"].outcome
    assert reward == outcome["reward"] == info["reward_components"]["game_reward"] == 1.0
    assert outcome["turns"] == len(moves) and "Congratulations" in outcome["reason"]
    game_seed = json.loads(info["conversation"].reference)["seed"]  # the train-split seed reset(seed=3) drew
    assert reward == textarena_reward("GuessTheNumber-v0", game_seed, moves)


def test_a_lost_game_gives_the_games_own_score():
    """Two invalid moves in a row end GuessTheNumber, with the game's score of the guesses so far."""
    env = make(game="GuessTheNumber-v0")
    env.reset(seed=0)
    moves = ["7", "no idea", "still no idea"]
    for move in moves:
        _, reward, terminated, truncated, info = play_turn(env, move)
    assert terminated and not truncated
    assert "Invalid Move" in info["conversation"].outcome["reason"]
    game_seed = json.loads(info["conversation"].reference)["seed"]
    assert reward == textarena_reward("GuessTheNumber-v0", game_seed, moves)


def test_the_token_budget_truncates_an_unfinished_game_with_reward_zero():
    env = make(game="TowerOfHanoi-v0", max_total_tokens=30)
    env.reset(seed=0)
    for _ in range(10):
        _, reward, terminated, truncated, info = play_turn(env, "[A C]")
        if terminated or truncated:
            break
    assert truncated and not terminated and reward == 0.0
    assert info["conversation"].outcome is None


def test_the_same_seed_replays_the_same_game_and_splits_use_other_seeds():
    def transcript(seed):
        env = make(game="Minesweeper-v0-small", max_prompt_tokens=400)
        _, info = env.reset(seed=seed)
        replies = [info["prompt"]]
        for move in ("[3 3]", "[0 0]", "[5 2]"):
            _, _, terminated, truncated, info = play_turn(env, move)
            replies.append(info.get("reply", "") + str(info.get("conversation", "")))
            if terminated or truncated:
                break
        return replies

    assert transcript(4) == transcript(4)
    train = make(game="GuessTheNumber-v0", train_size=50).unwrapped.task.prompts
    test = make(game="GuessTheNumber-v0", split="test", test_size=20).unwrapped.task.prompts
    train_seeds = {train.seed(i) for i in range(len(train))}
    test_seeds = {test.seed(i) for i in range(len(test))}
    assert train_seeds == set(range(50)) and min(test_seeds) == TEST_SEED_START and len(test_seeds) == 20


def test_vector_env_equals_sync_vector_env(eos_id):
    kwargs = {**BASE, "game": "GuessTheNumber-v0", "max_turn_tokens": 3, "max_total_tokens": 60}
    n = 3
    vector = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)
    sync = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync", **kwargs)
    tokenizer = vector.unwrapped.tokenizer
    vocabulary = np.array(tokenizer("[ ] 1 2 3 5 8 9 10 13 17", add_special_tokens=False)["input_ids"] + [eos_id])
    rng = np.random.default_rng(1)
    assert run_twins(vector, sync, 2, lambda: rng.choice(vocabulary, size=n), steps=80) >= 4


def test_games_that_cannot_run_here_say_why_in_one_line(monkeypatch):
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    cases = [
        ("Wordle-v0", GameUnavailableError, "needs the NLTK data"),  # would download at import: refused offline
        ("Hangman-v0", GameUnavailableError, "python -m nltk.downloader words"),
        ("GuessWho-v0", GameUnavailableError, "needs an API key"),
        ("TicTacToe-v0", NotSinglePlayerError, "not a single-player game"),
        ("NoSuchGame-v0", GameUnavailableError, "unknown TextArena game 'NoSuchGame-v0'"),
    ]
    for game, error, message in cases:
        with pytest.raises(error) as caught:
            make(game=game)
        assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    monkeypatch.setitem(sys.modules, "textarena", None)  # as if the extra were not installed
    with pytest.raises(MissingExtraError) as caught:
        make(game="GuessTheNumber-v0")
    assert str(caught.value).endswith('pip install "textenv[tasks]"')
