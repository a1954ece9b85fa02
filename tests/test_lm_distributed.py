"""LM-PPO under ``accelerate launch``: two CPU processes (gloo), data-parallel, replicas stay identical."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    from agents.lm import LMPPOConfig, LMPPOTrainer

    TARGET = 107

    def count_target(prompts, completions, completion_ids, **info):
        return [float(ids.count(TARGET)) for ids in completion_ids]

    def digest(model):
        h = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode()); h.update(tensor.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    config = LMPPOConfig(num_envs=4, num_minibatches=2, update_epochs=1, learning_rate=2e-3,
                         critic_learning_rate=2e-3, ptx_coef=0.1, ptx_batch_size=2, ptx_block_size=8,
                         progress_bar=False, seed=0)
    trainer = LMPPOTrainer(
        "MossText-v0", "tiny-random-smollm2", config,
        pretrain_corpus=["A short corpus for the pretraining loss, long enough for a few blocks of tokens."],
        env_kwargs=dict(tokenizer="tiny-random-smollm2", prompts=["The movie was", "My friend said", "I think"],
                        reward=count_target, max_new_tokens=6, max_prompt_tokens=12,
                        allowed_token_ids=list(range(100, 115)) + [2]),
    )
    initial = digest(trainer.unwrapped_policy)
    history = trainer.train(2)
    rollout = trainer.collect()  # one more batch, to show that the processes sample different episodes
    report = {
        "distributed_type": str(trainer.accelerator.distributed_type),
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "rank": trainer.accelerator.process_index,
        "initial": initial,
        "policy": digest(trainer.unwrapped_policy),
        "value": digest(trainer.accelerator.unwrap_model(trainer.value_model)),
        "completion_ids": rollout.completion_ids.tolist(),
        "logged_reward_mean": [m["reward_mean"] for m in history],
        "reward_running_mean": trainer.reward_moments.mean,
    }
    reports = [None] * trainer.accelerator.num_processes
    dist.all_gather_object(reports, report)
    if trainer.accelerator.is_main_process:
        with open(sys.argv[1], "w") as f:
            json.dump(reports, f)
    trainer.close()  # barrier, drop the DDP wrappers, destroy_process_group: a clean exit on every rank
    assert not dist.is_initialized()
    assert not isinstance(trainer.policy, torch.nn.parallel.DistributedDataParallel)
    assert not isinstance(trainer.value_model, torch.nn.parallel.DistributedDataParallel)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_data_parallel_run_keeps_replicas_identical(tmp_path):
    script, out = tmp_path / "train.py", tmp_path / "reports.json"
    script.write_text(SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(script), str(out)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = json.loads(out.read_text())
    assert [r["rank"] for r in reports] == [0, 1]
    assert {r["distributed_type"] for r in reports} == {"DistributedType.MULTI_CPU"}
    assert {r["backend"] for r in reports} == {"gloo"}
    rank0, rank1 = reports
    assert rank0["initial"] == rank1["initial"]
    assert rank0["policy"] == rank1["policy"] != rank0["initial"]  # trained, and bit-identical on both replicas
    assert rank0["value"] == rank1["value"]
    assert rank0["completion_ids"] != rank1["completion_ids"]  # each process collects its own episodes
    # batch statistics are global: both processes log the same reward and keep the same running statistics
    assert rank0["logged_reward_mean"] == rank1["logged_reward_mean"]
    assert rank0["reward_running_mean"] == rank1["reward_running_mean"]
