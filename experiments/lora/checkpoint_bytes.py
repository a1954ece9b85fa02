"""Bytes of an LM trainer's checkpoint, by what trains: the top-8-block fine-tune against LoRA adapters of several
ranks and targets, on SmolLM2-135M-Instruct.

Each checkpoint is written by :func:`agents.lm.checkpoint_io.write_trainer_checkpoint`, as a trainer writes it (the
policy or its adapter, the tokenizer beside it, the optimiser and RNG states, config and counters), after one AdamW
step on a stand-in loss (so that the optimiser holds its two moments per trained weight, as after any real step).
Bytes do not depend on the values, only on what is saved. Reported: total bytes, the weights' (``.safetensors``)
and the optimiser's (``.pt``), and the ratio of each total to the top-8-block fine-tune's.

    .venv/bin/python -m experiments.lora.checkpoint_bytes --out experiments/lora/checkpoint_bytes.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

import textenv
from agents.lm.checkpoint_io import write_trainer_checkpoint
from agents.lm.lora import LoRAAdapter, LoRASettings

ATTENTION = ["q_proj", "v_proj"]
VARIANTS: dict[str, dict[str, Any] | None] = {
    "top-8 blocks": None,
    "lora r=16 all-linear": {"r": 16, "alpha": 32},
    "lora r=8 all-linear": {"r": 8, "alpha": 16},
    "lora r=4 all-linear": {"r": 4, "alpha": 8},
    "lora r=8 q,v": {"r": 8, "alpha": 16, "target_modules": ATTENTION},
    "lora r=16 all-linear, top 8 blocks": {"r": 16, "alpha": 32, "blocks": 8},
}


def measure(model_name: str, lora: dict[str, Any] | None) -> dict[str, Any]:
    policy = textenv.load_causal_lm(model_name)
    if lora is None:
        policy.requires_grad_(False)
        for block in policy.model.layers[-8:]:
            block.requires_grad_(True)
        policy.model.norm.requires_grad_(True)
        saved: Any = policy
        params = list(policy.parameters())  # the trainer's parameter group without LoRA
    else:
        saved = LoRAAdapter(policy, LoRASettings.coerce(lora), base_model=model_name)
        params = saved.trainable_parameters()
    optimizer = torch.optim.AdamW([{"params": params, "lr": 1e-3}])
    trained = [p for p in params if p.requires_grad]
    loss = sum((p.float() ** 2).sum() for p in trained)
    loss.backward()
    optimizer.step()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_trainer_checkpoint(directory, models={"policy": saved}, optimizers={"optimizer": optimizer},
                                 state={"iteration": 1}, config_json="{}", tokenizer=textenv.load_tokenizer(model_name))
        files = [f for f in directory.rglob("*") if f.is_file()]
        return {
            "trained_parameters": sum(p.numel() for p in trained),
            "total_bytes": sum(f.stat().st_size for f in files),
            "weights_bytes": sum(f.stat().st_size for f in files if f.suffix == ".safetensors"),
            "optimizer_bytes": sum(f.stat().st_size for f in files if f.suffix == ".pt"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    args = parser.parse_args()
    results = {name: measure(args.model, lora) for name, lora in VARIANTS.items()}
    baseline = results["top-8 blocks"]["total_bytes"]
    print("| trains | parameters | checkpoint MB | weights MB | optimiser MB | / top-8 |")
    print("|---|---|---|---|---|---|")
    for name, row in results.items():
        row["fraction_of_top8"] = row["total_bytes"] / baseline
        print(f"| {name} | {row['trained_parameters'] / 1e6:.2f}M | {row['total_bytes'] / 1e6:.1f} | "
              f"{row['weights_bytes'] / 1e6:.1f} | {row['optimizer_bytes'] / 1e6:.1f} | "
              f"1/{1 / row['fraction_of_top8']:.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "results": results}, indent=2))


if __name__ == "__main__":
    main()
