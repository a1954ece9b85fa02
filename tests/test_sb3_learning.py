"""Each of the seven SB3 / sb3-contrib algorithms learns MossWords-v0 from scratch within a fixed step budget.

MossWords-v0: write 4 distinct words of the topic the prompt names, from a 398-word vocabulary; reward =
distinct topic words / 4. A uniformly random policy scores 0.031 (2000 episodes x 5 seeds).

The assertion: the mean reward of the last 200 training episodes beats the random policy's mean by MARGIN.
The budgets are ``MOSS_WORDS_STEPS``, measured with ``python -m experiments.sb3_comparison.compare_sb3
--budget-to-learn --seeds 0 1 2 3 4`` (agents.make_sb3 defaults, 4 envs, 1 torch thread; raw numbers in
experiments/sb3_comparison/results/budget_to_learn.json). Both vec-env paths of ``make_sb3`` give the same episodes
for a seed (tests/test_sb3_vecenv.py), so these numbers hold for the default native vector env the test trains on:

    algorithm       steps   final mean of the last 200 episodes, seeds 0-4    lowest - random   MARGIN
    ppo             30000   0.54  0.51  0.45  0.54  0.50                      0.42              0.25
    a2c             40000   0.33  0.40  0.33  0.31  0.21                      0.18              0.12
    dqn             25000   0.28  0.29  0.34  0.31  0.39                      0.25              0.15
    qrdqn           30000   0.21  0.20  0.20  0.19  0.20                      0.16              0.10
    trpo            20000   0.18  0.20  0.17  0.19  0.19                      0.14              0.10
    maskable_ppo    30000   0.53  0.56  0.50  0.53  0.53                      0.47              0.25
    recurrent_ppo   20000   0.25  0.36  0.27  0.38  0.42                      0.22              0.10

MARGIN is below every measured final mean minus the random mean (the "lowest" column), with room for the
seed-to-seed spread; the test trains seed 0 of each.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sb3_contrib")

import gymnasium as gym  # noqa: E402

import textenv  # noqa: E402,F401
from agents.sb3.evaluation import (  # noqa: E402
    MOSS_WORDS_STEPS,
    random_policy_rewards,
    random_vec_policy_rewards,
    train_and_record,
)
from agents.sb3.factory import VEC_ENVS, make_sb3_env  # noqa: E402

RANDOM_MEAN = 0.031  # checked below, so a change of the task that makes random play score higher fails loudly
LAST_EPISODES = 200

SEED = 0
# algorithm -> margin over the random mean (the step budgets are MOSS_WORDS_STEPS, the ones measured above)
MARGINS = {
    "ppo": 0.25,
    "a2c": 0.12,
    "dqn": 0.15,
    "qrdqn": 0.10,
    "trpo": 0.10,
    "maskable_ppo": 0.25,
    "recurrent_ppo": 0.10,
}


def test_random_policy_scores_low():
    rewards = random_policy_rewards(gym.make("MossWords-v0"), episodes=1000, seed=7)
    assert abs(rewards.mean() - RANDOM_MEAN) < 0.01, rewards.mean()


@pytest.mark.parametrize("vec_env", VEC_ENVS)
def test_random_policy_on_a_vec_env_scores_the_same(vec_env):
    venv = make_sb3_env("MossWords-v0", 4, seed=0, vec_env=vec_env)
    rewards = random_vec_policy_rewards(venv, episodes=1000, seed=7)
    assert len(rewards) == 1000
    assert abs(rewards.mean() - RANDOM_MEAN) < 0.01, rewards.mean()


@pytest.mark.parametrize("algo", list(MARGINS))
def test_algorithm_learns_moss_words(algo):
    steps, margin = MOSS_WORDS_STEPS[algo], MARGINS[algo]
    run = train_and_record(algo, "MossWords-v0", steps, seed=SEED, n_envs=4)
    first = float(np.mean(run.recorder.rewards[:LAST_EPISODES]))
    final = run.recorder.last_mean(LAST_EPISODES)
    assert len(run.recorder.rewards) >= steps // 4 - 10  # 4-token episodes (an early <eos> makes them shorter)
    assert first < RANDOM_MEAN + 0.03, (algo, first)  # it starts out no better than random ...
    assert final > RANDOM_MEAN + margin, (algo, final, run.recorder.curve(10, steps)[1].round(2).tolist())
