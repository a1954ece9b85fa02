"""One sentiment-RLHF run (runs A-E of the RLHF seeds study): SmolLM2-135M-Instruct fine-tuned on MossText-v0 for a
wall-time budget, scored on the 40 held-out prompts before and after (and every ``--eval-every`` iterations).

    OMP_NUM_THREADS=1 python -m experiments.rlhf_seeds.rlhf_sentiment --minutes 20     # one 20-minute run
    python -m experiments.rlhf_seeds.rlhf_sentiment --model tiny-random-smollm2 --max-iterations 2   # smoke
    ACCELERATE_MIXED_PRECISION=bf16 OMP_NUM_THREADS=1 python -m experiments.rlhf_seeds.rlhf_sentiment --agent lm-ppo

The settings, the training reward and the held-out evaluation are :mod:`experiments.rlhf_common`'s. Results go to
``--out``: ``results.json``, ``learning_curves.png``, the trainer's ``progress.csv``/TensorBoard logs and one
checkpoint, written when training ends (``--save-every-minutes`` adds more). ``rlhf_seeds.py`` runs this over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rewards
import textenv
from agents.lm.callbacks import Callback
from agents.runs.machine import cpu_info
from experiments.rlhf_common import build_parser, evaluate, make_trainer, proxy_reward, training_reward


class Report(Callback):
    """Prints each iteration's training metrics; every ``eval_every`` iterations (0: never) also evaluates on the
    held-out prompts, logs the held-out VADER and diversity with the iteration, and keeps the curve."""

    def __init__(
        self, policy: Any, reference: Any, args: argparse.Namespace, temperature: float, proxy: Any = None
    ) -> None:
        self.policy, self.reference, self.args, self.temperature = policy, reference, args, temperature
        self.proxy = proxy
        self.held_out: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    def on_iteration_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        minutes = (time.perf_counter() - self.started) / 60
        print(f"it {trainer.iteration:3d}  {minutes:5.1f} min  reward {metrics['reward_mean']:+.3f}"
              f"  kl {metrics.get('kl', math.nan):.3f}  len {metrics.get('response_length', math.nan):.1f}", flush=True)
        if self.args.eval_every and trainer.iteration % self.args.eval_every == 0:
            result = evaluate(self.policy, self.reference, self.args.eval_samples, seed=1234,
                              temperature=self.temperature, proxy=self.proxy)
            self.held_out.append({"iteration": trainer.iteration, "train_minutes": minutes,
                                  **{k: v for k, v in result.items() if k != "examples"}})
            for key in ("sentiment_mean", "proxy_mean", "kl_to_reference", "distinct_2_all", "top_4gram_share"):
                if key in result:
                    metrics[f"held_out_{key}"] = result[key]
            proxy = f"  proxy {result['proxy_mean']:+.3f}" if "proxy_mean" in result else ""
            print(f"    held-out: sentiment {result['sentiment_mean']:+.3f}{proxy}  KL {result['kl_to_reference']:.2f}"
                  f"  distinct-2 (all) {result['distinct_2_all']:.3f}  top 4-gram share "
                  f"{result['top_4gram_share']:.2f}", flush=True)


def plot(
    history: list[dict[str, float]], before: dict[str, Any], after: dict[str, Any], path: Path, composite: bool
) -> None:
    """Training curves (minutes on x) with the held-out VADER before/after; ``composite``: trained on more than
    VADER."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = np.cumsum([h["iteration_seconds"] for h in history]) / 60
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
    if "reward_sentiment_mean" in history[0]:  # the VADER part of the training reward, logged by the trainer
        axes[0].plot(minutes, [h["reward_sentiment_mean"] for h in history], label="training batch, VADER")
    if composite:
        axes[0].plot(minutes, [h["reward_mean"] for h in history], alpha=0.6, label="training batch, whole reward")
    elif "reward_sentiment_mean" not in history[0]:
        axes[0].plot(minutes, [h["reward_mean"] for h in history], label="training batch, VADER")
    axes[0].axhline(before["sentiment_mean"], color="grey", ls="--", label="held-out VADER, before")
    axes[0].axhline(after["sentiment_mean"], color="green", ls="--", label="held-out VADER, after")
    axes[0].axhline(0.8, color="red", ls=":", label="target 0.8")
    axes[0].set_ylabel("reward" if composite else "VADER compound")
    axes[1].plot(minutes, [h.get("kl", math.nan) for h in history])
    axes[1].set_ylabel("KL to reference (per sequence)")
    axes[2].plot(minutes, [h.get("ref_perplexity", math.nan) for h in history])
    axes[2].set_ylabel("perplexity under reference")
    for ax in axes:
        ax.set_xlabel("training minutes")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("SmolLM2-135M-Instruct on MossText-v0 (2 CPU cores)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    args = build_parser().parse_args()
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer, trainable = make_trainer(args, str(out))
    policy, config = trainer.unwrapped_policy, trainer.config
    reference = trainer.reference if trainer.reference is not None else textenv.load_causal_lm(args.model)
    print(f"{args.agent} on MossText-v0 with {args.model}: {trainable / 1e6:.1f}M trainable parameters, "
          f"{args.num_envs} episodes per iteration, budget {args.minutes} min")

    proxy_spec = proxy_reward(args)
    proxy = rewards.make(proxy_spec) if proxy_spec else None
    before = evaluate(policy, reference, args.eval_samples, seed=1234, temperature=config.temperature, proxy=proxy)
    print(f"held-out before: sentiment {before['sentiment_mean']:+.3f}  distinct-2 (all) {before['distinct_2_all']:.3f}"
          f"  top 4-gram share {before['top_4gram_share']:.2f}")
    report = Report(policy, reference, args, config.temperature, proxy=proxy)
    started = time.perf_counter()
    # checkpoints at the end
    history = trainer.train(args.max_iterations, max_seconds=args.minutes * 60, callbacks=[report])
    train_minutes = (time.perf_counter() - started) / 60
    after = evaluate(policy, reference, args.eval_samples, seed=1234, temperature=config.temperature, proxy=proxy)
    results = {
        "agent": args.agent, "model": args.model, "cpu": cpu_info(), "threads": torch.get_num_threads(),
        "iterations": len(history), "train_minutes": train_minutes,
        "episodes": len(history) * args.num_envs, "mixed_precision": trainer.accelerator.mixed_precision,
        "settings": vars(args), "before": before, "after": after, "held_out_curve": report.held_out,
        "perplexity_ratio": after["perplexity_under_reference"] / before["perplexity_under_reference"],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    composite = training_reward(args) != "sentiment" or config.reference_fluency_weight > 0
    plot(history, before, after, out / "learning_curves.png", composite=composite)
    print(json.dumps({k: v for k, v in results.items() if k != "settings"}, indent=2))


if __name__ == "__main__":
    main()
