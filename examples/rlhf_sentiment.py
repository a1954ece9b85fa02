"""RLHF on CPU: fine-tune SmolLM2-135M-Instruct on MossText-v0 (VADER sentiment) through the Gymnasium env.

The policy acts in a textenv vector env one token per step; an LM agent from :mod:`agents.lm` updates it.
Before and after training (and every ``--eval-every`` iterations), completions of the 40 held-out prompts
(``builtin:test``, never used in training) are scored: mean VADER compound, KL to the untuned model, perplexity
under the untuned model, and cross-sample diversity (distinct-n over all completions, share of completions holding
the most common 4-gram: a policy that writes one template for every prompt shows there). Results go to ``--out``:
``results.json``, ``learning_curves.png``, the trainer's ``progress.csv``/TensorBoard logs and one checkpoint,
written when training ends (``--save-every-minutes`` adds more).

    OMP_NUM_THREADS=1 python examples/rlhf_sentiment.py --minutes 20     # the real run (2 CPU cores)
    python examples/rlhf_sentiment.py --model tiny-random-smollm2 --minutes 1   # a smoke test
    ACCELERATE_MIXED_PRECISION=bf16 OMP_NUM_THREADS=1 python examples/rlhf_sentiment.py   # bf16 mixed precision

The training reward is ``sentiment + 1.0 * repetition + 0.5 * fluency`` by default: pure VADER
(``--repetition-weight 0 --fluency-weight 0``) is maximised by "love love love ..." and sentiment + repetition by
lists of positive words; the fluency term (mean log-prob per token under the untuned model) makes both
unprofitable. The trainer reads the fluency term from its reference forward (``reference_fluency_weight``: the
reference is the untuned model); ``--fluency-source plugin`` scores it with the env's ``fluency`` plugin instead.
The measured 20-minute runs (GRPO x3, LM-PPO) are in the README and ``examples/results/``. Held-out scores are
always pure VADER.

``--train-layers N`` trains only the top N transformer blocks (and the final norm; the config's
``trainable_blocks``): the backward pass then stops there, and the trainer runs the frozen blocks below once per
rollout, which is what makes a 135M-parameter policy affordable on two CPU cores. The trainer prints its execution
plan (what it trains, shares and runs) when training starts.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import rewards
import textenv
from agents import lm
from agents.runs.diversity import diversity_metrics
from agents.lm.callbacks import Callback
from agents.modeling.model_blocks import transformer_blocks
from agents.runs.machine import cpu_info

AGENTS = {
    "rloo": (lm.RLOOTrainer, lm.RLOOConfig),
    "grpo": (lm.GRPOTrainer, lm.GRPOConfig),
    "lm-ppo": (lm.LMPPOTrainer, lm.LMPPOConfig),
}


@torch.no_grad()
def evaluate(
    policy: Any, reference: Any, samples: int, seed: int, temperature: float, proxy: Any = None
) -> dict[str, float]:
    """Score one completion per held-out prompt (x ``samples``): VADER, KL to the reference, perplexity (and the
    learned ``proxy`` reward's score, when training optimises one)."""
    prompts = [p.text for p in textenv.load_prompts("builtin:test")] * samples
    env = gym.make_vec("MossText-v0", num_envs=len(prompts), vectorization_mode="vector_entry_point",
                       autoreset_mode=gym.vector.AutoresetMode.DISABLED, prompts=prompts)
    rollout = lm.RolloutEngine(env, policy, temperature).collect(
        torch.Generator().manual_seed(seed), prompt_indices=np.arange(len(prompts))
    )
    policy_lp = lm.sequence_logprobs(policy, rollout, temperature)
    reference_lp = lm.sequence_logprobs(reference, rollout, temperature)
    kl = ((policy_lp - reference_lp) * rollout.mask).sum(1)
    ref_natural = lm.sequence_logprobs(reference, rollout)
    env.close()
    proxy_scores = {} if proxy is None else {"proxy_mean": float(np.mean(proxy(rollout.prompts, rollout.completions)))}
    return {
        **proxy_scores,
        "sentiment_mean": float(rollout.scores.mean()),
        "sentiment_std": float(rollout.scores.std()),
        "kl_to_reference": float(kl.mean()),
        "perplexity_under_reference": math.exp(-float((ref_natural * rollout.mask).sum()) / rollout.num_tokens),
        "mean_length": float(rollout.lengths.float().mean()),
        **diversity_metrics(rollout.completions),
        "examples": [f"{p} >>> {c.strip()}" for p, c in zip(rollout.prompts[:4], rollout.completions[:4])],
    }


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", choices=sorted(AGENTS), default="grpo")
    parser.add_argument("--model", default=textenv.DEFAULT_MODEL)
    parser.add_argument("--minutes", type=float, default=20.0, help="training wall-time budget")
    parser.add_argument("--max-iterations", type=int, default=10_000)
    parser.add_argument("--num-envs", type=int, default=16, help="episodes per iteration")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt (rloo/grpo)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--critic-lr", type=float, default=1e-4, help="value model learning rate (lm-ppo)")
    parser.add_argument("--beta", type=float, default=0.04, help="KL coefficient to the reference (rloo/grpo)")
    parser.add_argument("--minibatches", type=int, default=4, help="optimiser steps per iteration")
    parser.add_argument("--repetition-weight", type=float, default=1.0,
                        help="train on sentiment + W * repetition (distinct-bigram penalty, in [-1, 0]) to stop the "
                             "policy from repeating one positive word; held-out scores stay pure VADER")
    parser.add_argument("--fluency-weight", type=float, default=0.5,
                        help="add W * fluency (mean log-prob per token under the untuned model) to the training "
                             "reward, so that lists of positive words stop paying")
    parser.add_argument("--fluency-source", choices=("reference", "plugin"), default="reference",
                        help="reference (default): the trainer adds the fluency term from the reference forward it "
                        "runs anyway (reference_fluency_weight; the reference is the untuned model), one whole-model "
                        "forward per iteration less; plugin: the env's `fluency` reward plugin, its own copy of the "
                        "untuned model over the re-tokenised text (as any other RL library would score it)")
    parser.add_argument("--proxy-reward", default=None, metavar="DIR",
                        help="train against this learned reward model (textenv train-rm) instead of VADER; held-out "
                        "scores stay VADER (the gold) beside the proxy's")
    parser.add_argument("--train-layers", type=int, default=8, help="top decoder blocks to train (0 = all)")
    parser.add_argument("--eval-samples", type=int, default=1, help="completions per held-out prompt")
    parser.add_argument("--eval-every", type=int, default=0, help="held-out evaluation every N iterations (0: off)"
                        "; it counts in the --minutes budget")
    parser.add_argument("--save-every-minutes", type=float, default=0.0,
                        help="checkpoint every N minutes (0: at the end)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/rlhf_sentiment")
    return parser


def training_reward(args: argparse.Namespace) -> Any:
    """The env's reward spec: ``sentiment``, plus the repetition and fluency terms whose weights are not 0 (the
    fluency term only with ``--fluency-source plugin``; otherwise the trainer adds it, :func:`make_trainer`)."""
    extra_rewards = [{"name": "repetition", "weight": args.repetition_weight}]
    if args.fluency_source == "plugin":  # the untuned model's mean log-prob per token of the re-tokenised text
        extra_rewards.append({"name": "fluency", "weight": args.fluency_weight, "kwargs": {"model": args.model}})
    parts = [part for part in extra_rewards if part["weight"]]
    main_part = proxy_reward(args) or "sentiment"
    return [main_part, *parts] if parts else main_part


def proxy_reward(args: argparse.Namespace) -> dict[str, Any] | None:
    """The learned reward that replaces VADER in training (``--proxy-reward DIR``, standardised by its training
    scores), or ``None``."""
    if not getattr(args, "proxy_reward", None):
        return None
    return {"name": "reward_model", "kwargs": {"path": args.proxy_reward, "normalize": True}}


def make_trainer(
    args: argparse.Namespace, output_dir: str | None, config_overrides: dict[str, Any] | None = None
) -> tuple[Any, int]:
    """The trainer the settings ask for, on the training prompts, its policy's lower blocks frozen
    (``trainable_blocks``); and the policy's trainable parameter count. ``config_overrides`` sets further fields of
    the agent's config."""
    trainer_class, config_class = AGENTS[args.agent]
    if args.agent == "lm-ppo":  # the KL penalty is MOSS-RLHF's per-token one in the reward (kl_coef 0.05)
        extra = {"critic_learning_rate": args.critic_lr}
    else:
        extra = {"num_generations": args.generations, "beta": args.beta}
    extra["reference_fluency_weight"] = args.fluency_weight if args.fluency_source == "reference" else 0.0
    policy = textenv.load_causal_lm(args.model)
    blocks = min(args.train_layers, len(transformer_blocks(policy)))  # all of a smaller model's (the tiny test model)
    config = config_class(
        seed=args.seed, num_envs=args.num_envs, learning_rate=args.lr, num_minibatches=args.minibatches,
        output_dir=output_dir, progress_bar=False, save_every_minutes=args.save_every_minutes,
        trainable_blocks=blocks or None,  # LM-PPO's critic trains the same blocks
        **{**extra, **(config_overrides or {})},
    )
    env_kwargs = {"prompts": "builtin:train", "reward": training_reward(args)}
    trainer = trainer_class("MossText-v0", policy, config, env_kwargs=env_kwargs)
    trainable = sum(p.numel() for p in trainer.unwrapped_policy.parameters() if p.requires_grad)
    return trainer, trainable


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
    print(trainer.execution_plan().line())

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
