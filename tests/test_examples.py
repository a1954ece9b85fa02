"""The examples run end to end on tiny budgets (tiny random-init model, a few hundred SB3 steps) and write what
they promise. Their measured, full-size results are in the README; this only guards them against rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_example(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("agent", ["grpo", "lm-ppo"])
def test_rlhf_sentiment_example(tmp_path, agent):
    out = tmp_path / "run"
    run_example(str(REPO / "examples" / "rlhf_sentiment.py"), "--agent", agent, "--model", "tiny-random-smollm2",
                "--max-iterations", "2", "--num-envs", "8", "--eval-every", "1", "--out", str(out), cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert results["iterations"] == 2 and results["episodes"] == 16
    for side in ("before", "after"):
        assert -1 <= results[side]["sentiment_mean"] <= 1 and 0 < results[side]["distinct_2_per_completion"] <= 1
        assert 0 < results[side]["distinct_2_all"] <= 1 and 0 <= results[side]["top_4gram_share"] <= 1
    assert results["before"]["kl_to_reference"] == 0.0
    assert [point["iteration"] for point in results["held_out_curve"]] == [1, 2]
    # one checkpoint, written when training ended
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["iteration"] == 2
    assert (out / "learning_curves.png").stat().st_size > 10_000
    progress = (out / "progress.csv").read_text().splitlines()
    assert len(progress) == 3 and "reward_fluency_mean" in progress[0]  # the default composite reward's parts


def test_train_and_compare_sb3_examples(tmp_path):
    stdout = run_example(str(REPO / "examples" / "train_sb3.py"), "--steps", "512", "--random-episodes", "40",
                         "--episodes", "20", "--save", str(tmp_path / "agent"), cwd=tmp_path)
    assert "random policy on the same env: mean reward" in stdout and (tmp_path / "agent.zip").is_file()
    out = tmp_path / "compare"
    run_example(str(REPO / "examples" / "compare_sb3.py"), "--algos", "ppo", "dqn", "--seeds", "0", "--steps", "512",
                "--random-episodes", "40", "--last", "20", "--out", str(out), cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"ppo", "dqn"}
    assert (out / "learning_curves.png").stat().st_size > 10_000


def test_rlhf_sentiment_against_a_learned_proxy_reward(tmp_path):
    """``--proxy-reward DIR``: the training reward is the reward model (standardised), held-out scores are VADER
    (the gold) beside the proxy's."""
    from agents.reward_model import RewardModelConfig, train_reward_model
    from textenv.preferences import PreferencePair

    pairs = [PreferencePair(prompt=f"Review {i}:", chosen=" a wonderful film", rejected=" a dull film")
             for i in range(8)]
    train_reward_model(pairs, RewardModelConfig(model="tiny-random-smollm2", trainable_blocks=1, num_train_epochs=1,
                                                progress_bar=False, output_dir=str(tmp_path / "rm")))
    out = tmp_path / "run"
    run_example(str(REPO / "examples" / "rlhf_sentiment.py"), "--agent", "grpo", "--model", "tiny-random-smollm2",
                "--max-iterations", "1", "--num-envs", "8", "--eval-every", "1", "--proxy-reward",
                str(tmp_path / "rm"), "--out", str(out), cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert "proxy_mean" in results["before"] and "proxy_mean" in results["held_out_curve"][0]
    header = (out / "progress.csv").read_text().splitlines()[0]
    assert "reward_reward_model_mean" in header and "reward_sentiment_mean" not in header
