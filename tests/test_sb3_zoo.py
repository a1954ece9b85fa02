"""rl-baselines3-zoo trains and saves a PPO agent on a textenv id with the shipped hyperparameter file.

The command is the published one (``python -m rl_zoo3.train --algo ppo --env ... --gym-packages textenv -conf
examples/rl_zoo3_textenv.yml``) with a tiny budget: on MossWords-v0 in the default suite, and on MossText-v0
(which loads SmolLM2-135M-Instruct as the top-k reference LM) in the slow suite.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rl_zoo3")

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "rl_zoo3_textenv.yml"


def zoo_train(env_id: str, steps: int, logs: Path) -> Path:
    """Run the zoo's training command in a subprocess; return the saved agent's path."""
    command = [
        sys.executable, "-m", "rl_zoo3.train",
        "--algo", "ppo", "--env", env_id, "--gym-packages", "textenv", "-conf", str(CONFIG),
        "-n", str(steps), "--seed", "0", "-f", str(logs), "--eval-freq", "-1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=logs.parent, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = logs / "ppo" / f"{env_id}_1" / f"{env_id}.zip"
    assert saved.is_file(), sorted(str(p) for p in logs.rglob("*"))
    assert re.search(rf"total_timesteps\s+\|\s+{steps}\s", done.stdout), done.stdout[-2000:]
    return saved


@pytest.mark.slow
def test_rl_zoo3_trains_and_saves_ppo_on_moss_text_with_the_top_k_wrapper(tmp_path):
    from stable_baselines3 import PPO

    saved = zoo_train("MossText-v0", 1024, tmp_path / "logs")  # one rollout: 32 envs x 32 steps
    model = PPO.load(saved, device="cpu")
    assert model.action_space.n == 8  # the top-k wrapper from the yml's vec_env_wrapper was applied


def test_rl_zoo3_trains_and_saves_ppo(tmp_path):
    saved = zoo_train("MossWords-v0", 1024, tmp_path / "logs")

    import gymnasium as gym
    from stable_baselines3 import PPO

    import textenv  # noqa: F401
    from agents.sb3.features import TokenFeaturesExtractor

    model = PPO.load(saved, device="cpu")
    assert isinstance(model.policy.features_extractor, TokenFeaturesExtractor)
    env = gym.make("MossWords-v0")
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))
