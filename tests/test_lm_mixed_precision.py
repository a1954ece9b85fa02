"""LM-PPO under ``accelerate launch --mixed_precision bf16`` (one CPU process): every model runs in bf16 autocast,
the weights and optimiser stay float32, and the untouched policy's KL to the reference is still ~0.

A subprocess, because ``accelerate`` fixes the mixed-precision mode once per process."""

from __future__ import annotations

from accelerate_launch import launch, tiny_ppo_script

SCRIPT = tiny_ppo_script(
    num_envs=8,
    body="""
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
    """,
)


def test_bf16_mixed_precision_runs_every_model_in_bf16_and_keeps_float32_weights(tmp_path):
    report = launch(tmp_path, SCRIPT, "--num_processes", "1", "--mixed_precision", "bf16")
    assert report["mixed_precision"] == "bf16"
    # rollout decoding, the loss forward, the reference and the value model all compute in bf16 ...
    assert report["linear_output_dtypes"] == {name: ["torch.bfloat16"] for name in ("policy", "reference", "value")}
    # ... while the weights and Adam's moments stay float32 (bf16 weights would round away 1e-6-sized updates)
    assert report["parameter_dtypes"] == ["torch.float32"]
    assert report["optimizer_state_dtypes"] == ["torch.float32"]
    assert report["finite"]
    # the untouched policy's KL is ~0, up to bf16 rounding: the rollout decodes one token at a time from its KV
    # cache and the reference forwards whole completions, and bf16 results depend on the CPU's kernels (per
    # 6-token completion: 1e-7 on an AVX512-BF16 CPU, 4e-4 on an AVX2-only one, where bf16 is emulated)
    assert abs(report["kl"][0]) < 2e-3, report["kl"]
    assert abs(report["kl"][1]) > 1e-3  # while a trained policy does move (the estimate may be negative)
