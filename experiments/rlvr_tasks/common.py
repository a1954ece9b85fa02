"""What the study's scripts share: the envs it reports, held-out evaluation of a policy on an env's test split, and
a random-token policy.

Held-out = the env's ``split="test"``: the test questions of a reasoning-gym task (never in its train split, by
question text) or the held-out seeds of a TextArena game. Every test prompt is played ``samples`` times, sampled at
the policy's training temperature (1.0), in batches through the env's vector entry point, and scored by the env's
own reward: exact accuracy is the share of episodes whose ``correct`` component (the task's ``score_answer``) is 1.
"""

from __future__ import annotations

import json
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import rewards
import textenv  # noqa: F401  (registers the ids)
from agents.lm import RolloutEngine
from rewards.builtin.answer_extraction import EXTRACTIONS

# the "greedy" held-out reading samples at this temperature: every logit gap of 0.01 becomes 10 nats, so each token
# is the argmax unless two logits tie within about 0.005 (the engine samples; it has no argmax mode)
GREEDY_TEMPERATURE = 1e-3

# 2-term one-digit chain_sum: about 200 distinct questions, 50 held out
CHAIN_SUM = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
ENVS: dict[str, tuple[str, dict[str, Any]]] = {
    "chain_sum": (
        "textenv/ReasoningGym-v0",
        {"task": "chain_sum", "task_config": CHAIN_SUM, "test_size": 50, "max_new_tokens": 24},
    ),
    "letter_counting": (
        "textenv/ReasoningGym-v0",
        {"task": "letter_counting", "task_config": {"min_words": 1, "max_words": 3}, "test_size": 50,
         "max_new_tokens": 24},
    ),
    "spell_backward": (
        "textenv/ReasoningGym-v0",
        # 3-4 letter words: the reward's partial credit counts the letters in place, so a group of 4 replies usually
        # ranks something; 50 held-out words
        {"task": "spell_backward", "task_config": {"min_word_len": 3, "max_word_len": 4}, "test_size": 50,
         "max_new_tokens": 16},
    ),
    "guess_the_number": (
        "textenv/TextArena-v0",
        # 6 guesses of at most 8 tokens each, and the game's answers, fit 160 conversation slots: the game, not the
        # token budget, ends an episode (binary search needs at most 5 guesses for 1..20)
        {"game": "GuessTheNumber-v0", "game_kwargs": {"max_turns": 6}, "test_size": 50, "max_turn_tokens": 8,
         "max_total_tokens": 160},
    ),
}


def env_spec(name: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    env_id, kwargs = ENVS[name]
    return env_id, {**kwargs, **overrides}


def make_vec(env_id: str, env_kwargs: dict[str, Any], num_envs: int) -> Any:
    return gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED, **env_kwargs,
    )


def summary(scores: np.ndarray, components: dict[str, list[float]], texts: list[str], seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {"episodes": int(scores.size), "reward_mean": float(scores.mean()), "seconds": seconds}
    for name, values in components.items():
        result[f"{name}_mean"] = float(np.mean(values))
    if "correct" in components:
        result["exact_accuracy"] = float(np.mean(np.asarray(components["correct"]) >= 1.0))
    if "game_reward" in components:
        result["win_rate"] = float(np.mean(np.asarray(components["game_reward"]) >= 1.0))
    result["examples"] = texts[:6]
    return result


@torch.no_grad()
def held_out(
    policy: Any, env_id: str, env_kwargs: dict[str, Any], samples: int = 4, seed: int = 1234, batch: int = 50,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """The policy (a causal LM) on every test prompt ``samples`` times: reward components, exact accuracy."""
    started = time.perf_counter()
    kwargs = {**env_kwargs, "split": "test"}
    env = make_vec(env_id, kwargs, batch)
    n = len(env.unwrapped.task.prompts)
    generator = torch.Generator().manual_seed(seed)
    engine = RolloutEngine(env, policy, temperature=temperature)
    scores: list[float] = []
    components: dict[str, list[float]] = {}
    texts: list[str] = []
    references: list[str | None] = []
    for start in range(0, n * samples, batch):
        indices = np.arange(start, start + batch) % n
        rollout = engine.collect(generator, prompt_indices=indices)
        rows = min(batch, n * samples - start)
        scores += rollout.scores[:rows].tolist()
        for name, values in rollout.reward_components.items():
            components.setdefault(name, []).extend(values[:rows].tolist())
        texts += rollout.completions[:rows]
        references += [env.unwrapped.task.prompts[int(i)].reference for i in indices[:rows]]
    env.close()
    result = summary(np.asarray(scores), components, texts, time.perf_counter() - started)
    if env_id == "textenv/ReasoningGym-v0":
        result["exact_accuracy_by_extraction"] = exact_by_extraction(texts, references)
        result["exact_accuracy_by_answer"] = exact_by_answer(components.get("correct", []), references)
    return result


def exact_by_answer(correct: list[float], references: list[str | None]) -> dict[str, dict[str, float]]:
    """Exact accuracy per gold answer (``{answer: {"episodes": n, "exact_accuracy": a}}``): a policy that always
    gives the most common answer scores that answer's share of the split, and this shows it."""
    by_answer: dict[str, list[bool]] = {}
    for score, reference in zip(correct, references):
        answer = str(json.loads(reference)["entry"]["answer"]) if reference else "?"  # the episode's task entry
        by_answer.setdefault(answer, []).append(score >= 1.0)
    return {
        answer: {"episodes": len(hits), "exact_accuracy": float(np.mean(hits))}
        for answer, hits in sorted(by_answer.items(), key=lambda item: -len(item[1]))
    }


def exact_by_extraction(completions: list[str], references: list[str | None]) -> dict[str, float]:
    """The same completions' exact accuracy under every extraction: how much of a score is the answer format."""
    return {
        extraction: float(np.mean(rewards.make("reasoning_gym", extraction=extraction, partial_credit=False)(
            [""] * len(completions), completions, references=references
        )))
        for extraction in EXTRACTIONS
    }


def random_policy(env_id: str, env_kwargs: dict[str, Any], samples: int = 4, seed: int = 1234) -> dict[str, Any]:
    """Uniformly random tokens (EOS included) on every test prompt ``samples`` times, through the single env."""
    started = time.perf_counter()
    env = gym.make(env_id, **{**env_kwargs, "split": "test"})
    n = len(env.unwrapped.task.prompts)
    rng = np.random.default_rng(seed)
    vocab = env.action_space.n
    finished = []
    for episode in range(n * samples):
        env.reset(seed=seed + episode, options={"prompt_index": episode % n})
        while True:
            _, reward, terminated, truncated, info = env.step(int(rng.integers(vocab)))
            if terminated or truncated:
                break
        finished.append((reward, info))
    return episodes_summary(finished, time.perf_counter() - started)


def episodes_summary(finished: list[tuple[float, dict[str, Any]]], seconds: float) -> dict[str, Any]:
    """:func:`summary` of episodes played through a single env: each one's reward and last-step info."""
    components: dict[str, list[float]] = {}
    for _, info in finished:
        for name, value in info["reward_components"].items():
            components.setdefault(name, []).append(float(value))
    texts = [str(info.get("completion", info.get("conversation", ""))) for _, info in finished]
    return summary(np.asarray([float(reward) for reward, _ in finished]), components, texts, seconds)


def scripted_guesses(env_id: str, env_kwargs: dict[str, Any], strategy: str) -> dict[str, Any]:
    """A scripted player of GuessTheNumber on every held-out game seed once: ``"constant"`` guesses 10 every turn
    (its first guess is valid, the repeats are invalid moves that end the game with the game's closeness score),
    ``"binary_search"`` halves the range the game's "higher"/"lower" answers leave (it wins every game of 1..20 in
    at most 5 guesses). What a policy that learnt nothing about the hints, and one that learnt the game, score."""
    started = time.perf_counter()
    env = gym.make(env_id, **{**env_kwargs, "split": "test"})
    tokenizer = env.unwrapped.tokenizer
    n = len(env.unwrapped.task.prompts)
    finished = []
    for episode in range(n):
        env.reset(seed=episode, options={"prompt_index": episode})
        low, high = 1, 20
        while True:
            guess = 10 if strategy == "constant" else (low + high) // 2
            for token in tokenizer(f"[{guess}]", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]:
                _, reward, terminated, truncated, info = env.step(token)
                if terminated or truncated or "reply" in info:
                    break
            if terminated or truncated:
                break
            low, high = (guess + 1, high) if "higher" in info["reply"] else (low, guess - 1)
        finished.append((reward, info))
    env.close()
    return episodes_summary(finished, time.perf_counter() - started)
