"""The examples (standalone scripts a user copies) run end to end on tiny budgets (tiny random-init model, a few
hundred SB3 steps) and write what they promise; this only guards them against rot. The studies' scripts are
tested in test_experiments.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_example(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_rlhf_sentiment_example(tmp_path):
    out = tmp_path / "run"
    stdout = run_example(str(REPO / "examples" / "rlhf_sentiment.py"), "--model", "tiny-random-smollm2",
                         "--train-blocks", "1", "--max-iterations", "2", "--out", str(out), cwd=tmp_path)
    assert "2 iterations; held-out VADER" in stdout and stdout.count(" >>>") == 3
    # one checkpoint, written when training ended, and the log with the reward's parts
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["iteration"] == 2
    header = (out / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"reward_sentiment_mean", "reward_repetition_mean", "reward_reference_fluency_mean"} <= set(header)


def test_train_sb3_example(tmp_path):
    stdout = run_example(str(REPO / "examples" / "train_sb3.py"), "--steps", "512", "--random-episodes", "40",
                         "--episodes", "20", "--save", str(tmp_path / "agent"), cwd=tmp_path)
    assert "random policy on the same env: mean reward" in stdout and (tmp_path / "agent.zip").is_file()
