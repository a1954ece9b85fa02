"""The sentiment-RLHF setup the studies share: SmolLM2-135M-Instruct fine-tuned on MossText-v0 through the
Gymnasium env, and its held-out evaluation.

* :func:`build_parser` / :func:`make_trainer`: the run's settings (agent, learning rate, KL coefficient, k
  completions per prompt, optimiser steps per round, the top ``--train-layers`` blocks trained) and the trainer they
  build. The training reward is ``sentiment + 1.0 * repetition + 0.5 * fluency`` by default: pure VADER
  (``--repetition-weight 0 --fluency-weight 0``) is maximised by "love love love ..." and sentiment + repetition by
  lists of positive words; the fluency term (mean log-prob per token under the untuned model) makes both
  unprofitable. The trainer reads the fluency term from its reference forward (``reference_fluency_weight``: the
  reference is the untuned model); ``--fluency-source plugin`` scores it with the env's ``fluency`` plugin instead.
  ``--proxy-reward DIR`` replaces VADER in training with a learned reward model.
* :func:`evaluate`: completions of the 40 held-out prompts (``builtin:test``, never used in training) scored with
  pure VADER, KL to the untuned model, perplexity under it, and cross-sample diversity (distinct-n over all
  completions, share of completions holding the most common 4-gram: a policy that writes one template for every
  prompt shows there).
* :func:`add_run_arguments` / :func:`example_args` / ``RUN_SETTINGS``: the settings the round-based studies
  (time to target, GRPO ablation, round cost, fluency agreement) share, as :func:`build_parser`'s command line.
* ``GRPO_VARIANTS``: textenv GRPO configs with one TRL setting moved onto them (the GRPO ablation's variants, which
  the time-to-target study runs as ``grpo@<variant>``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import rewards
import textenv
from agents import lm
from agents.modeling.model_blocks import transformer_blocks
from agents.modeling.model_blocks import freeze_lower_blocks, transformer_blocks
from agents.runs.diversity import diversity_metrics

AGENTS = {
    "rloo": (lm.RLOOTrainer, lm.RLOOConfig),
    "grpo": (lm.GRPOTrainer, lm.GRPOConfig),
    "lm-ppo": (lm.LMPPOTrainer, lm.LMPPOConfig),
}


def freeze_lower_layers(model: Any, train_layers: int) -> int:
    """Train only the top ``train_layers`` transformer blocks of ``model`` (all of them if it has fewer) and its final
    norm; 0 trains every parameter. Returns the trainable parameter count."""
    blocks = len(transformer_blocks(model))
    return freeze_lower_blocks(model, min(train_layers, blocks) if train_layers > 0 else None)


EVAL_CHUNK = 8  # held-out rows per log-prob forward


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
    kls, ref_natural = [], 0.0
    for rows in np.array_split(np.arange(len(prompts)), math.ceil(len(prompts) / EVAL_CHUNK)):
        part = rollout.select(rows)  # a few rows at a time: the evaluation's logits never set a run's peak memory
        policy_lp = lm.sequence_logprobs(policy, part, temperature)
        reference_lp = lm.sequence_logprobs(reference, part, temperature)
        kls.append(((policy_lp - reference_lp) * part.mask).sum(1))
        ref_natural += float((lm.sequence_logprobs(reference, part) * part.mask).sum())
    kl = torch.cat(kls)
    env.close()
    proxy_scores = {} if proxy is None else {"proxy_mean": float(np.mean(proxy(rollout.prompts, rollout.completions)))}
    return {
        **proxy_scores,
        "sentiment_mean": float(rollout.scores.mean()),
        "sentiment_std": float(rollout.scores.std()),
        "kl_to_reference": float(kl.mean()),
        "perplexity_under_reference": math.exp(-ref_natural / rollout.num_tokens),
        "mean_length": float(rollout.lengths.float().mean()),
        **diversity_metrics(rollout.completions),
        "examples": [f"{p} >>> {c.strip()}" for p, c in zip(rollout.prompts[:4], rollout.completions[:4])],
    }


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
    """The trainer the settings ask for, on the training prompts, training the top ``--train-layers`` blocks
    (``trainable_blocks``); and the
    policy's trainable parameter count. ``config_overrides`` sets further fields of the agent's config."""
    trainer_class, config_class = AGENTS[args.agent]
    if args.agent == "lm-ppo":  # the KL penalty is MOSS-RLHF's per-token one in the reward (kl_coef 0.05)
        extra = {"critic_learning_rate": args.critic_lr}
    else:
        extra = {"num_generations": args.generations, "beta": args.beta}
    extra["reference_fluency_weight"] = args.fluency_weight if args.fluency_source == "reference" else 0.0
    policy = textenv.load_causal_lm(args.model)
    blocks = min(args.train_layers, len(transformer_blocks(policy))) if args.train_layers > 0 else None
    config = config_class(
        seed=args.seed, num_envs=args.num_envs, learning_rate=args.lr, num_minibatches=args.minibatches,
        output_dir=output_dir, progress_bar=False, save_every_minutes=args.save_every_minutes,
        trainable_blocks=blocks,  # LM-PPO's critic trains the same blocks
        **{**extra, **(config_overrides or {})},
    )
    env_kwargs = {"prompts": "builtin:train", "reward": training_reward(args)}
    trainer = trainer_class("MossText-v0", policy, config, env_kwargs=env_kwargs)
    trainable = sum(p.numel() for p in trainer.unwrapped_policy.parameters() if p.requires_grad)
    return trainer, trainable


def example_args(settings: argparse.Namespace, agent: str) -> list[str]:
    """:func:`build_parser`'s command line for the run settings of :func:`add_run_arguments` (and ``seed``)."""
    return [
        "--agent", agent, "--model", settings.model, "--num-envs", str(settings.num_envs),
        "--generations", str(settings.generations), "--minibatches", str(settings.minibatches),
        "--lr", str(settings.lr), "--critic-lr", str(settings.critic_lr), "--beta", str(settings.beta),
        "--train-layers", str(settings.train_layers), "--eval-samples", str(settings.eval_samples),
        "--seed", str(settings.seed),
    ]


# the settings that shape a run (what add_run_arguments defines and example_args passes on, less the critic's
# learning rate, which only LM-PPO reads): runs compared or merged must agree on them
RUN_SETTINGS = ("model", "rounds", "num_envs", "generations", "minibatches", "lr", "beta", "train_layers",
                "eval_samples", "precision")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The run settings the round-based studies share (what :func:`example_args` passes on, and the threads)."""
    parser.add_argument("--model", default=textenv.DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=86)
    parser.add_argument("--eval-samples", type=int, default=1, help="completions per held-out prompt")
    parser.add_argument("--num-envs", type=int, default=16, help="completions per round")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt (grpo, trl)")
    parser.add_argument("--minibatches", type=int, default=4, help="optimiser steps per round")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--critic-lr", type=float, default=1e-4, help="value-model learning rate (lm-ppo)")
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--train-layers", type=int, default=8)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=1)


def parse_round_settings(
    parser: argparse.ArgumentParser, argv: list[str] | None, rounds: int, smoke_rounds: int
) -> argparse.Namespace:
    """The settings of a study that times ``rounds`` rounds (its own arguments already in ``parser``): the run
    settings, ``--seed``, ``--json`` and ``--smoke`` (the tiny model, ``smoke_rounds`` rounds, its top block
    trained); torch's threads set to ``--threads``."""
    add_run_arguments(parser)
    parser.set_defaults(rounds=rounds)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny random model, {smoke_rounds} round(s): checks the pipeline only")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    settings = parser.parse_args(argv)
    if settings.smoke:
        settings.model, settings.rounds, settings.train_layers = textenv.TINY_MODEL, smoke_rounds, 1
    torch.set_num_threads(settings.threads)
    return settings


def write_results(path: Path | None, results: dict[str, Any]) -> None:
    """A study's ``--json`` file: ``results`` as JSON at ``path``, its folder made (nothing when ``None``)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1, default=str))


def start_module(module: str, args: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """``python -m module args`` in a child process that imports this checkout's ``experiments`` package whatever
    its working directory."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(popen_kwargs.pop("env", None) or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, **popen_kwargs)


# variant -> (GRPOConfig fields it changes, where the setting comes from); the loss variants no default adopted are
# study switches, in the config's `experimental`
GRPO_VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "baseline": ({}, "textenv GRPOConfig defaults"),
    "linear_lr": ({"lr_schedule": "linear"}, "TRL: TrainingArguments.lr_scheduler_type='linear', no warm-up"),
    "kl_is_weight": ({"experimental": {"kl_importance_weight": True}}, "TRL 1.16: use_bias_correction_kl=True"),
    "dapo_rollout": (
        {"experimental": {"dapo_normalizer": "rollout"}}, "TRL 1.16: dapo divides by generation-batch tokens / steps"
    ),
    "trl_all": (
        {"lr_schedule": "linear", "experimental": {"kl_importance_weight": True, "dapo_normalizer": "rollout"}},
        "all three TRL settings",
    ),
    # candidates where textenv already matches TRL: moved away from both
    "scale_none": ({"scale_rewards": "none"}, "Dr. GRPO: no std scaling (TRL/textenv: group)"),
    "scale_batch": ({"scale_rewards": "batch"}, "batch std scaling (TRL/textenv: group)"),
    "loss_grpo": ({"loss_type": "grpo"}, "per-sequence mean (TRL/textenv: dapo)"),
    "loss_dr_grpo": ({"loss_type": "dr_grpo"}, "Dr. GRPO constant normaliser (TRL/textenv: dapo)"),
    "kl_k1": ({"experimental": {"kl_estimator": "k1"}}, "k1 KL estimator (TRL/textenv: k3)"),
    "kl_k2": ({"experimental": {"kl_estimator": "k2"}}, "k2 KL estimator (TRL/textenv: k3)"),
    "adam_moss": ({"adam_betas": (0.9, 0.95), "adam_eps": 1e-6}, "MOSS-RLHF AdamW (TRL/textenv: 0.9/0.999, 1e-8)"),
    "no_grad_clip": ({"max_grad_norm": None}, "no gradient clipping (TRL/textenv: 1.0)"),
}
