"""Fine-tune SmolLM2-135M-Instruct with GRPO on MossChat-v0 (3 agent turns against the SmolLM2 simulated user;
reward = VADER sentiment of the user's last reply minus 0.005 per agent token), on 2 CPU cores in a wall-time budget.

    OMP_NUM_THREADS=1 python examples/moss_chat_train.py --minutes 20 --out runs/moss_chat
    python examples/moss_chat_eval.py --policy runs/moss_chat/checkpoint/policy --episodes 16

Trains on every shipped opening but the last ``--held-out`` (which ``moss_chat_eval.py`` evaluates on), groups of
``--generations`` conversations per opening, the top ``--train-layers`` blocks only. The trainer's log
(``OUT/progress.csv``) has the reward, its parts and the KL to the untuned model per iteration; the policy is saved
once, when the budget is spent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import textenv
from agents.lm import GRPOConfig, GRPOTrainer
from agents.reward_model.scoring import freeze_lower_blocks

OPENINGS = Path(textenv.__file__).with_name("data") / "moss_chat" / "openings.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=textenv.DEFAULT_MODEL)
    parser.add_argument("--minutes", type=float, default=20.0, help="training wall-time budget")
    parser.add_argument("--num-envs", type=int, default=8, help="conversations per iteration")
    parser.add_argument("--generations", type=int, default=4, help="conversations per opening (the GRPO group)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--beta", type=float, default=0.04, help="KL coefficient to the untuned model")
    parser.add_argument("--train-layers", type=int, default=8, help="top decoder blocks to train")
    parser.add_argument("--held-out", type=int, default=8, help="the last N openings are never trained on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/moss_chat")
    args = parser.parse_args()
    torch.set_num_threads(1)

    openings = [line for line in OPENINGS.read_text(encoding="utf-8").splitlines() if line.strip()]
    config = GRPOConfig(
        seed=args.seed, num_envs=args.num_envs, num_generations=args.generations, learning_rate=args.lr,
        beta=args.beta, output_dir=args.out, progress_bar=False,
    )
    policy = textenv.load_causal_lm(args.model)
    freeze_lower_blocks(policy, args.train_layers)  # the lower blocks and the embeddings stay as they are
    trainer = GRPOTrainer("MossChat-v0", policy, config, env_kwargs={"prompts": openings[: -args.held_out]})
    history = trainer.train(max_seconds=60 * args.minutes)
    trainer.close()
    keys = ("reward_mean", "kl", "reward_user_sentiment_mean", "reward_agent_tokens_mean")
    first, last = history[: max(1, len(history) // 5)], history[-max(1, len(history) // 5) :]
    summary = {
        "iterations": len(history),
        **{f"first_{k}": sum(m.get(k, float("nan")) for m in first) / len(first) for k in keys},
        **{f"last_{k}": sum(m.get(k, float("nan")) for m in last) / len(last) for k in keys},
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
