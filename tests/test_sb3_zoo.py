"""rl-baselines3-zoo trains and saves a PPO agent on a textenv id with the shipped hyperparameter file.

The command is the issue's (``python -m rl_zoo3.train --algo ppo --env ... --gym-packages textenv -conf
examples/rl_zoo3_textenv.yml``) with a tiny budget, on MossWords-v0 (the MossText-v0 entry loads SmolLM2 as
its reference LM: checked by hand, see agents/sb3/README.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rl_zoo3")

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "rl_zoo3_textenv.yml"


def test_rl_zoo3_trains_and_saves_ppo(tmp_path):
    logs = tmp_path / "logs"
    command = [
        sys.executable, "-m", "rl_zoo3.train",
        "--algo", "ppo", "--env", "MossWords-v0", "--gym-packages", "textenv", "-conf", str(CONFIG),
        "-n", "1024", "--seed", "0", "-f", str(logs), "--eval-freq", "-1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = logs / "ppo" / "MossWords-v0_1" / "MossWords-v0.zip"
    assert saved.is_file(), sorted(str(p) for p in logs.rglob("*"))
    assert "total_timesteps      | 1024" in done.stdout

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
