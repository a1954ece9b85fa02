"""RLHF on two CPU cores: fine-tune SmolLM2-135M-Instruct with textenv's GRPO to continue movie-review openings
positively (MossText-v0, VADER sentiment), then score the 40 held-out prompts it never trained on.

    OMP_NUM_THREADS=1 python examples/rlhf_sentiment.py --minutes 20
    python examples/rlhf_sentiment.py --model tiny-random-smollm2 --train-blocks 1 --max-iterations 2   # seconds

The settings are the ones that learn on SmolLM2 in a CPU budget (experiments/rlhf_seeds/REPORT.md, run C): 16
completions per iteration (4 per prompt), 4 optimiser steps, learning rate 2e-4, KL coefficient 0.04, and only the
top 8 of the 30 blocks trained (``--train-blocks``: the backward pass stops there). The training reward is VADER
plus two terms that keep the text readable: ``repetition`` (distinct bigrams; without it VADER is maximised by
"love love love ...") and the fluency term, the mean log-probability per token under the untuned model, which the
trainer reads from the reference forward it runs anyway (``reference_fluency_weight``; without it lists of positive
words pay). The trainer writes its log and the policy to ``--out``.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import textenv
from agents.lm import GRPOConfig, GRPOTrainer, RolloutEngine
from agents.reward_model.scoring import freeze_lower_blocks


@torch.no_grad()
def held_out(policy: torch.nn.Module) -> tuple[float, list[str]]:
    """Mean VADER of one completion per held-out prompt (``builtin:test``), and the first three completions."""
    prompts = [prompt.text for prompt in textenv.load_prompts("builtin:test")]
    env = gym.make_vec("MossText-v0", num_envs=len(prompts), vectorization_mode="vector_entry_point",
                       autoreset_mode=gym.vector.AutoresetMode.DISABLED, prompts=prompts)
    rows = np.arange(len(prompts))
    rollout = RolloutEngine(env, policy).collect(torch.Generator().manual_seed(0), prompt_indices=rows)
    env.close()
    return float(rollout.scores.mean()), [p + " >>>" + c for p, c in zip(rollout.prompts[:3], rollout.completions)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=textenv.DEFAULT_MODEL)
    parser.add_argument("--minutes", type=float, default=20.0, help="training wall-time budget")
    parser.add_argument("--max-iterations", type=int, default=None, help="stop after this many iterations")
    parser.add_argument("--train-blocks", type=int, default=8, help="top transformer blocks trained")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/rlhf_sentiment", help="where the trainer writes its log and policy")
    args = parser.parse_args()

    policy = textenv.load_causal_lm(args.model)
    freeze_lower_blocks(policy, args.train_blocks)  # the top blocks and the final norm train; the rest stays as it is
    config = GRPOConfig(
        num_envs=16, num_generations=4, num_minibatches=4, learning_rate=2e-4, beta=0.04,
        reference_fluency_weight=0.5, seed=args.seed, output_dir=args.out,
    )
    reward = ["sentiment", {"name": "repetition", "weight": 1.0}]
    trainer = GRPOTrainer("MossText-v0", policy, config, env_kwargs={"prompts": "builtin:train", "reward": reward})

    before, _ = held_out(trainer.unwrapped_policy)
    history = trainer.train(args.max_iterations, max_seconds=60 * args.minutes)
    after, examples = held_out(trainer.unwrapped_policy)
    trainer.close()
    print(f"{len(history)} iterations; held-out VADER {before:+.3f} -> {after:+.3f}")
    print("\n".join(examples))


if __name__ == "__main__":
    main()
