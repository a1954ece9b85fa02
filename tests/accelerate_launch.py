"""Running a small LM-PPO script under ``accelerate launch`` from a test: a fresh process per run, because
accelerate fixes the distributed and mixed-precision setup once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Builds `trainer`: LM-PPO (with PPO-ptx) on the tiny model, rewarded for each occurrence of one token.
TINY_PPO_TRAINER = """
import hashlib, json, sys
import torch
torch.set_num_threads(1)
import torch.distributed as dist
import textenv
from agents.lm import LMPPOConfig, LMPPOTrainer

TARGET = 107

def count_target(prompts, completions, completion_ids, **info):
    return [float(ids.count(TARGET)) for ids in completion_ids]

config = LMPPOConfig(num_envs=NUM_ENVS, num_minibatches=2, update_epochs=1, learning_rate=2e-3,
                     critic_learning_rate=2e-3, ptx_coef=0.1, ptx_batch_size=2, ptx_block_size=8,
                     progress_bar=False, seed=0)
policy = textenv.load_causal_lm("tiny-random-smollm2")
policy.model.embed_tokens.requires_grad_(False)  # with FROZEN_BLOCKS > 0 the policy trains only the blocks above
for block in policy.model.layers[:FROZEN_BLOCKS]:
    block.requires_grad_(False)
trainer = LMPPOTrainer(
    "MossText-v0", policy if FROZEN_BLOCKS else "tiny-random-smollm2", config,
    pretrain_corpus=["A short corpus for the pretraining loss, long enough for a few blocks of tokens."],
    env_kwargs=dict(tokenizer="tiny-random-smollm2", prompts=["The movie was", "My friend said", "I think"],
                    reward=count_target, max_new_tokens=6, max_prompt_tokens=12,
                    allowed_token_ids=list(range(100, 115)) + [2]),
)
"""


def tiny_ppo_script(num_envs: int, body: str, frozen_blocks: int = 0) -> str:
    """:data:`TINY_PPO_TRAINER` with ``num_envs`` envs per process (and the policy's input embeddings and first
    ``frozen_blocks`` blocks frozen, when > 0), then ``body``; ``sys.argv[1]`` is the path the script writes its
    JSON report to."""
    script = TINY_PPO_TRAINER.replace("NUM_ENVS", str(num_envs)).replace("FROZEN_BLOCKS", str(frozen_blocks))
    return script + textwrap.dedent(body)


def launch(tmp_path: Path, script: str, *launch_args: str) -> Any:
    """Run ``script`` under ``accelerate launch <launch_args>`` on CPU threads; return the JSON it wrote."""
    path, out = tmp_path / "train.py", tmp_path / "report.json"
    path.write_text(script)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "accelerate.commands.launch", *launch_args, "--num_machines", "1",
               "--dynamo_backend", "no", str(path), str(out)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())
