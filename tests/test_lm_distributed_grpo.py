"""GRPO with TRL 1.16's settings under ``accelerate launch`` (two CPU processes): the ``"rollout"`` dapo normaliser
counts every process's tokens, the linear learning-rate decay and the importance-weighted KL run in step, and the
replicas stay identical."""

from __future__ import annotations

import textwrap

import pytest

from accelerate_launch import launch
from test_lm_distributed import free_port

SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    import agents.lm.group as group
    from agents.lm import GRPOConfig, GRPOTrainer

    def count_target(prompts, completions, completion_ids, **info):
        return [float(ids.count(107)) for ids in completion_ids]

    config = GRPOConfig(num_envs=4, num_generations=2, num_minibatches=2, learning_rate=2e-3, beta=0.1,
                        lr_schedule="linear", experimental={"kl_importance_weight": True, "dapo_normalizer": "rollout"},
                        progress_bar=False, seed=0)
    trainer = GRPOTrainer(
        "MossText-v0", "tiny-random-smollm2", config,
        env_kwargs=dict(tokenizer="tiny-random-smollm2", prompts=["The movie was", "My friend said", "I think"],
                        reward=count_target, max_new_tokens=6, max_prompt_tokens=12,
                        allowed_token_ids=list(range(100, 115)) + [2]),
    )
    local_tokens, counts = [], []
    update, aggregate = trainer.policy_update, group.aggregate_token_loss

    def recording_update(rollout, **kwargs):
        local_tokens.append(float(kwargs["loss_mask"].sum()))
        return update(rollout, **kwargs)

    def recording_aggregate(*args):
        counts.append(float(args[5]))
        return aggregate(*args)

    trainer.policy_update, group.aggregate_token_loss = recording_update, recording_aggregate
    history = trainer.train(2)
    h = hashlib.sha256()
    for name, tensor in sorted(trainer.unwrapped_policy.state_dict().items()):
        h.update(name.encode()); h.update(tensor.detach().cpu().numpy().tobytes())
    report = {"policy": h.hexdigest(), "local_tokens": local_tokens, "counts": counts,
              "learning_rates": [m["learning_rate"] for m in history]}
    reports = [None] * trainer.accelerator.num_processes
    dist.all_gather_object(reports, report)
    if trainer.accelerator.is_main_process:
        with open(sys.argv[1], "w") as f:
            json.dump(reports, f)
    trainer.close()
""")


def test_two_process_grpo_with_trl_settings(tmp_path):
    rank0, rank1 = launch(tmp_path, SCRIPT, "--multi_gpu", "--num_processes", "2", "--mixed_precision", "no",
                          "--main_process_port", str(free_port()))
    assert rank0["policy"] == rank1["policy"]
    # each iteration's 2 steps divide by (both processes' tokens) / 2 on both processes (one process's own tokens
    # would give local / 2)
    for iteration in range(2):
        expected = (rank0["local_tokens"][iteration] + rank1["local_tokens"][iteration]) / 2
        assert rank0["counts"][2 * iteration: 2 * iteration + 2] == [expected, expected]
        assert rank1["counts"][2 * iteration: 2 * iteration + 2] == [expected, expected]
    # linear decay over 2 iterations x 2 steps: the last steps of the iterations run at 3/4 and 1/4 of 2e-3
    assert rank0["learning_rates"] == rank1["learning_rates"] == pytest.approx([1.5e-3, 5e-4])
