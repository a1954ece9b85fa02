"""PPO improves the mean reward on MossText-v0 itself, through the top-k wrapper over SmolLM2-135M-Instruct (slow).

The recipe is examples/train_sb3.py's ``--env MossText-v0 --top-k 8``: 32 envs, action i = SmolLM2's i-th most
likely next token, frozen SmolLM2 input embeddings, PPO with ``TOP_K_PPO_HYPERPARAMS`` (all built by
``agents.sb3.make_top_k_sb3``), 60k steps (~11 min on one core). Measured on SB3's ``make_vec_env``; the test runs
on the native vector env, which gives the same episodes for a seed (tests/test_sb3_wrappers.py checks that for
``make_top_k_sb3``).
Measured with seed 0 (2,520 episodes): the mean VADER reward of the first 400 episodes 0.204, of the last 400
0.420; curve per tenth of training 0.21 0.20 0.18 0.22 0.29 0.29 0.37 0.39 0.42 0.41. A uniformly random
policy over the same top 8 scores 0.218 (+- 0.018 s.e., 480 episodes), so the asserted margin of 0.10 over
random sits half-way between random and the measured final mean (the s.e. of a 400-episode mean is ~0.02).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

import textenv  # noqa: E402,F401
from agents.sb3 import TopKVecEnvWrapper, make_sb3_env, make_top_k_sb3  # noqa: E402
from agents.sb3.evaluation import EpisodeRewardRecorder, random_vec_policy_rewards  # noqa: E402

STEPS, EPISODES = 60_000, 400


def moss_text_venv(seed: int):
    return make_sb3_env("MossText-v0", 32, seed=seed)  # the native vector env


@pytest.mark.slow
def test_ppo_with_top_k_wrapper_improves_moss_text_reward():
    torch.set_num_threads(1)
    baseline_venv = TopKVecEnvWrapper(moss_text_venv(seed=10_000), "smollm2-135m-instruct", k=8)
    random_mean = float(random_vec_policy_rewards(baseline_venv, EPISODES, seed=10_000).mean())
    assert 0.1 < random_mean < 0.35, random_mean  # the untrained baseline the margin is measured from

    model = make_top_k_sb3("ppo", moss_text_venv(seed=0), "smollm2-135m-instruct", k=8, seed=0)
    recorder = EpisodeRewardRecorder()
    model.learn(STEPS, callback=recorder)

    first = float(np.mean(recorder.rewards[:EPISODES]))
    final = recorder.last_mean(EPISODES)
    curve = recorder.curve(10, STEPS)[1].round(3).tolist()
    assert first < random_mean + 0.05, (first, random_mean, curve)  # it starts out about as good as random ...
    assert final > random_mean + 0.10, (final, random_mean, curve)  # ... and ends clearly above it
