"""LM-PPO under ``accelerate launch --mixed_precision bf16`` (one CPU process): every model runs in bf16 autocast,
the weights and optimiser stay float32, and the untouched policy's KL to the reference is still ~0.

A subprocess, because ``accelerate`` fixes the mixed-precision mode once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from agents.lm import LMPPOConfig, LMPPOTrainer

    TARGET = 107

    def count_target(prompts, completions, completion_ids, **info):
        return [float(ids.count(TARGET)) for ids in completion_ids]

    config = LMPPOConfig(num_envs=8, num_minibatches=2, learning_rate=2e-3, critic_learning_rate=2e-3,
                         ptx_coef=0.1, ptx_batch_size=2, ptx_block_size=8, progress_bar=False, seed=0)
    trainer = LMPPOTrainer(
        "MossText-v0", "tiny-random-smollm2", config,
        pretrain_corpus=["A short corpus for the pretraining loss, long enough for a few blocks of tokens."],
        env_kwargs=dict(tokenizer="tiny-random-smollm2", prompts=["The movie was", "My friend said", "I think"],
                        reward=count_target, max_new_tokens=6, max_prompt_tokens=12,
                        allowed_token_ids=list(range(100, 115)) + [2]),
    )
    models = {"policy": trainer.unwrapped_policy, "reference": trainer.reference,
              "value": trainer.accelerator.unwrap_model(trainer.value_model)}
    seen = {name: set() for name in models}  # dtypes of every Linear output, per model
    for name, model in models.items():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(lambda m, args, out, name=name: seen[name].add(str(out.dtype)))
    history = trainer.train(2)
    report = {
        "mixed_precision": trainer.accelerator.mixed_precision,
        "linear_output_dtypes": {name: sorted(dtypes) for name, dtypes in seen.items()},
        "parameter_dtypes": sorted({str(p.dtype) for model in models.values() for p in model.parameters()}),
        "optimizer_state_dtypes": sorted({str(v.dtype) for opt in trainer.optimizers().values()
                                          for state in opt.state.values() for v in state.values()
                                          if torch.is_tensor(v) and v.dim() > 0}),
        "kl": [m["kl"] for m in history],
        "finite": all(all(v == v for v in m.values()) for m in history),
    }
    with open(sys.argv[1], "w") as f:
        json.dump(report, f)
    trainer.close()
    """
)


def test_bf16_mixed_precision_runs_every_model_in_bf16_and_keeps_float32_weights(tmp_path):
    script, out = tmp_path / "train.py", tmp_path / "report.json"
    script.write_text(SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "bf16", "--dynamo_backend", "no", str(script), str(out)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mixed_precision"] == "bf16"
    # rollout decoding, the loss forward, the reference and the value model all compute in bf16 ...
    assert report["linear_output_dtypes"] == {name: ["torch.bfloat16"] for name in ("policy", "reference", "value")}
    # ... while the weights and Adam's moments stay float32 (bf16 weights would round away 1e-6-sized updates)
    assert report["parameter_dtypes"] == ["torch.float32"]
    assert report["optimizer_state_dtypes"] == ["torch.float32"]
    assert report["finite"]
    # the reference runs under the same autocast as the policy, so the untouched policy's KL is ~0 (a float32
    # reference against the bf16 policy measured 1.9e-4 here: the precision gap, not a policy change)
    assert abs(report["kl"][0]) < 1e-5
    assert abs(report["kl"][1]) > 1e-3  # while a trained policy does move (the estimate may be negative)
