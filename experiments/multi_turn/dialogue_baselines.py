"""Baselines of the multi-turn tasks: a uniformly random policy on each, a scripted good policy on
MossGuessWords-v0, and (``--sb3-steps N``) SB3 PPO trained on MossGuessWords-v0.

    python -m experiments.multi_turn.dialogue_baselines --episodes 200 --chat-episodes 32 --sb3-steps 30000

Prints one JSON object: mean episode reward (and its standard error) per task and policy.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np

import textenv  # noqa: F401  (registers the env ids)


def random_episodes(env_id: str, episodes: int, num_envs: int, seed: int, **env_kwargs) -> dict[str, float]:
    """Mean episode reward of uniformly random tokens (the allowed ones) over ``episodes`` episodes."""
    env = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED, **env_kwargs,
    )
    rng = np.random.default_rng(seed)
    allowed = np.flatnonzero(env.unwrapped.task.text.allowed)
    scores: list[float] = []
    started = time.perf_counter()
    batch = 0
    while len(scores) < episodes:
        env.reset(seed=seed + 1000 * batch)
        batch += 1
        totals = np.zeros(num_envs)
        done = np.zeros(num_envs, dtype=bool)
        while not done.all():
            _, rewards, terminated, truncated, _ = env.step(rng.choice(allowed, size=num_envs))
            totals += np.where(done, 0.0, rewards)
            done |= terminated | truncated
        scores.extend(totals.tolist())
    scores = scores[:episodes]
    return _summary(scores, time.perf_counter() - started)


def scripted_guess_words(episodes: int, seed: int) -> dict[str, float]:
    """MossGuessWords-v0 played well: ask "small"; guess cat/mouse on yes, dog/cow on no; then the other one."""
    env = gym.make("MossGuessWords-v0")
    tok = env.unwrapped.tokenizer
    scores = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        _, reward, terminated, truncated, info = env.step(tok.convert_tokens_to_ids("small"))
        pair = ("cat", "mouse") if info["reply"] == "yes" else ("dog", "cow")
        _, reward, terminated, truncated, info = env.step(tok.convert_tokens_to_ids(pair[0]))
        if not terminated:
            _, reward, terminated, truncated, info = env.step(tok.convert_tokens_to_ids(pair[1]))
        scores.append(reward)
    return _summary(scores, 0.0)


def sb3_guess_words(steps: int, episodes: int, seed: int) -> dict[str, float]:
    """SB3 PPO (default MultiInputPolicy) trained ``steps`` steps on MossGuessWords-v0, evaluated greedily."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    started = time.perf_counter()
    # render_mode=None: make_vec_env asks for "rgb_array" frames by default, which the dialogue env does not draw
    vec_env = make_vec_env("MossGuessWords-v0", n_envs=8, seed=seed, env_kwargs={"render_mode": None})
    model = PPO("MultiInputPolicy", vec_env, n_steps=64,
                batch_size=128, ent_coef=0.01, seed=seed, verbose=0)
    model.learn(steps)
    mean, std = evaluate_policy(model, gym.make("MossGuessWords-v0"), n_eval_episodes=episodes, deterministic=True)
    return {"mean": float(mean), "std": float(std), "episodes": episodes, "steps": steps,
            "seconds": time.perf_counter() - started}


def _summary(scores: list[float], seconds: float) -> dict[str, float]:
    array = np.asarray(scores, dtype=np.float64)
    return {"mean": float(array.mean()), "stderr": float(array.std(ddof=1) / np.sqrt(array.size)),
            "episodes": int(array.size), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200, help="episodes per word-game baseline")
    parser.add_argument("--chat-episodes", type=int, default=32, help="MossChat-v0 random episodes (0: skip)")
    parser.add_argument("--sb3-steps", type=int, default=0, help="train SB3 PPO on MossGuessWords-v0 this long")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {
        "MossGuessWords-v0/random": random_episodes("MossGuessWords-v0", args.episodes, 16, args.seed),
        "MossGuessWords-v0/scripted": scripted_guess_words(args.episodes, args.seed),
        "MossGuess-v0/random": random_episodes("MossGuess-v0", args.episodes, 16, args.seed),
    }
    if args.chat_episodes:
        results["MossChat-v0/random"] = random_episodes("MossChat-v0", args.chat_episodes, 16, args.seed)
    if args.sb3_steps:
        results["MossGuessWords-v0/sb3_ppo"] = sb3_guess_words(args.sb3_steps, args.episodes, args.seed)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
