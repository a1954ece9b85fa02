"""LM-PPO under ``accelerate launch --mixed_precision bf16`` (one CPU process): every model runs in bf16 autocast,
the weights and optimiser stay float32, and the untouched policy's log-probs equal the reference's.

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
    with torch.no_grad():  # the untouched policy and the reference, through the same forward, on one rollout
        rollout = trainer.collect()
        reference_logprobs, _ = trainer.reference_logprobs(rollout)
        policy_logprobs, _ = trainer.policy_logprobs(trainer.policy, rollout)
        same_forward_gap = float((policy_logprobs - reference_logprobs)[rollout.mask > 0].abs().max())
    history = trainer.train(2)
    report = {
        "same_forward_gap": same_forward_gap,
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
    # The reference runs under the same autocast as the policy: the same weights through the same forward run the
    # same kernels on the same inputs, whatever the CPU (measured max |difference| 0.0 on an AVX2-only CPU), while a
    # float32 reference differs by the bf16-vs-fp32 gap (measured 2.3e-3 per token there).
    assert report["same_forward_gap"] < 1e-6
    # The logged KL compares the rollout's log-probs (KV-cache decoding) with the reference's full forward: two
    # bf16 computations that round differently, by up to 2**-8 of a ~3-nat log-prob per token. Its bound is that
    # rounding scale: measured |kl| 4.2e-4 with AVX2 (emulated bf16), 1e-7 with AVX512-BF16 ...
    assert abs(report["kl"][0]) < 1e-2
    # ... far below the KL of a policy after one update (measured 0.16 in magnitude; the estimate may be negative)
    assert abs(report["kl"][1]) > 5e-2
