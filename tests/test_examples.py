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


def test_train_sb3_example(tmp_path):
    stdout = run_example(str(REPO / "examples" / "train_sb3.py"), "--steps", "512", "--random-episodes", "40",
                         "--episodes", "20", "--save", str(tmp_path / "agent"), cwd=tmp_path)
    assert "random policy on the same env: mean reward" in stdout and (tmp_path / "agent.zip").is_file()
