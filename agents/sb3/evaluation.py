"""Measuring SB3 agents on textenv: training curves from finished episodes, and the random-policy baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

# Step budgets per algorithm on MossWords-v0 (``make_sb3`` defaults, 4 envs): 10-25 s each on one CPU core, and
# enough for every seed of 0-4 to learn (``python -m experiments.sb3_comparison.compare_sb3 --budget-to-learn``
# runs them; tests/test_sb3_learning.py asserts them). The comparison of the algorithms gives all one budget instead.
MOSS_WORDS_STEPS = {
    "ppo": 30_000,
    "a2c": 40_000,
    "dqn": 25_000,
    "qrdqn": 30_000,
    "trpo": 20_000,
    "maskable_ppo": 30_000,
    "recurrent_ppo": 20_000,
}


class EpisodeRewardRecorder(BaseCallback):
    """Records ``(timestep, episode reward)`` for every episode that ends during ``learn``.

    It reads the ``episode`` entry SB3's ``VecMonitor`` / ``Monitor`` adds to the last step's info
    (:func:`agents.sb3.make_sb3_env` adds one on either vec-env path; the algorithms wrap a bare ``gym.Env`` in a
    ``Monitor``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.timesteps: list[int] = []
        self.rewards: list[float] = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            episode = info.get("episode")
            if episode is not None:
                self.timesteps.append(self.num_timesteps)
                self.rewards.append(float(episode["r"]))
        return True

    def last_mean(self, episodes: int) -> float:
        """Mean reward of the last ``episodes`` finished episodes."""
        if not self.rewards:
            raise RuntimeError("no episode has finished yet")
        return float(np.mean(self.rewards[-episodes:]))

    def curve(self, bins: int, total_timesteps: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean episode reward in ``bins`` equal slices of training: ``(slice ends, means)`` (NaN if empty)."""
        edges = np.linspace(0, total_timesteps, bins + 1)
        steps, rewards = np.asarray(self.timesteps), np.asarray(self.rewards)
        means = np.full(bins, np.nan)
        for i in range(bins):
            inside = (steps > edges[i]) & (steps <= edges[i + 1])
            if inside.any():
                means[i] = rewards[inside].mean()
        return edges[1:], means


def random_policy_rewards(env: gym.Env, episodes: int, seed: int = 0) -> np.ndarray:
    """Final rewards of ``episodes`` episodes of uniformly random actions (masked actions excluded when the
    env has ``action_masks()``)."""
    rng = np.random.default_rng(seed)
    has_masks = callable(getattr(env.unwrapped, "action_masks", None))
    rewards = np.empty(episodes)
    env.reset(seed=seed)
    for episode in range(episodes):
        env.reset()
        total, done = 0.0, False
        while not done:
            if has_masks:
                action = int(rng.choice(np.flatnonzero(env.get_wrapper_attr("action_masks")())))
            else:
                action = int(rng.integers(env.action_space.n))
            _, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        rewards[episode] = total
    return rewards


def random_vec_policy_rewards(venv: Any, episodes: int, seed: int = 0) -> np.ndarray:
    """Final rewards of the first ``episodes`` episodes finished by uniformly random actions on an SB3 ``VecEnv``
    (such as :class:`agents.sb3.TopKVecEnvWrapper`, whose random policy picks one of the reference LM's top k
    tokens), the baseline a trained agent on that same vec env is compared with."""
    rng = np.random.default_rng(seed)
    venv.seed(seed)
    venv.reset()
    rewards: list[float] = []
    while len(rewards) < episodes:
        actions = rng.integers(venv.action_space.n, size=venv.num_envs)
        _, _, dones, infos = venv.step(actions)
        rewards.extend(float(info["episode"]["r"]) for done, info in zip(dones, infos) if done and "episode" in info)
    return np.asarray(rewards[:episodes])


@dataclass
class TrainingRun:
    """One algorithm trained with one seed: the model, its training episodes, the wall time of ``learn`` and the
    process CPU time it used (the fairer measure on a shared machine: other jobs stretch wall time, not CPU time)."""

    algo: str
    seed: int
    timesteps: int
    seconds: float
    cpu_seconds: float
    model: Any = field(repr=False)
    recorder: EpisodeRewardRecorder = field(repr=False)


def train_and_record(
    algo: str,
    env_id: str,
    total_timesteps: int,
    seed: int = 0,
    n_envs: int = 4,
    env_kwargs: dict[str, Any] | None = None,
    **make_kwargs: Any,
) -> TrainingRun:
    """Build ``algo`` on ``n_envs`` envs of ``env_id`` with :func:`agents.make_sb3` (``make_kwargs`` are its other
    arguments, e.g. ``vec_env``), train it, and record every finished episode's reward."""
    import time

    from agents.sb3.factory import make_sb3

    model = make_sb3(algo, env_id, n_envs=n_envs, env_kwargs=env_kwargs, seed=seed, **make_kwargs)
    recorder = EpisodeRewardRecorder()
    start, start_cpu = time.perf_counter(), time.process_time()
    model.learn(total_timesteps, callback=recorder)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    return TrainingRun(algo, seed, total_timesteps, seconds, cpu_seconds, model, recorder)
