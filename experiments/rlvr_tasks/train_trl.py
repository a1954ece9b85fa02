"""TRL's ``GRPOTrainer`` on a reasoning-gym task env's questions, held-out as ``train_grpo`` reads it: the TRL side of
the side-by-side. One run (one seed) per call; the same arguments as ``train_grpo``.

    OMP_NUM_THREADS=1 python -m experiments.rlvr_tasks.train_trl --env chain_sum --answer-format last_number \\
        --seed 0 --cpu-seconds 1200 --eval-greedy --out experiments/rlvr_tasks/results/trl_chain_sum_seed0

What TRL gets is what textenv's GRPO gets: the env's train-split prompts as the env renders them (as chat messages,
which TRL renders with the same chat template; the script checks the two texts agree) with each question's
``reference`` as a dataset column, the env's reward as
``rewards.trl_functions.trl_reward_funcs`` (the task's own ``score_answer`` on the same extraction), the same model
with the same top blocks trainable, 16 completions per round in groups of 4 (``per_device_train_batch_size`` 4 ×
``steps_per_generation`` 4), one optimiser step per minibatch, lr, KL beta, temperature, at most ``max_new_tokens``
tokens; AdamW's betas, epsilon, weight decay, gradient clipping and the constant learning rate are set to textenv's
defaults (TRL's own default schedule decays over a fixed step count, which a CPU-seconds budget does not have). The
budget, the held-out evaluations and ``results.json`` are ``train_grpo``'s (``Budget``): held-out runs the policy
through the env's test split with textenv's rollout engine, so both sides are scored by one evaluator.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import textenv
from agents.lm import GRPOConfig as TextenvGRPOConfig
from agents.modeling.model_blocks import freeze_lower_blocks
from experiments.rlvr_tasks.train_grpo import Budget, build_parser, env_settings, write_results
from rewards.trl_functions import REFERENCE_COLUMN, trl_reward_funcs


def train_rows(env_id: str, env_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every train-split prompt of the env as a TRL row: the prompt as the env shows it to the model (chat messages
    where the env applies the chat template, which TRL then applies the same way; checked on the first prompt) and
    its reference."""
    env = gym.make(env_id, **{**env_kwargs, "split": "train"})
    task = env.unwrapped.task
    pool = task.prompts

    def prompt(text: str) -> Any:
        if not task.chat_template:
            return text
        system = [{"role": "system", "content": task.system_prompt}] if task.system_prompt else []
        return [*system, {"role": "user", "content": text}]

    rows = [{"prompt": prompt(pool[i].text), REFERENCE_COLUMN: pool[i].reference} for i in range(len(pool))]
    obs, _ = env.reset(seed=0, options={"prompt_index": 0})
    shown = task.tokenizer.decode(obs["input_ids"][obs["attention_mask"].astype(bool)])
    first = rows[0]["prompt"]
    trl_sees = (task.tokenizer.apply_chat_template(first, add_generation_prompt=True, tokenize=False)
                if task.chat_template else first)
    if trl_sees != shown:
        raise SystemExit(f"TRL's prompt {trl_sees!r:.200} differs from the env's {shown!r:.200}")
    env.close()
    return rows


def main() -> None:
    args: argparse.Namespace = build_parser().parse_args()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env_id, env_kwargs = env_settings(args)
    if env_id != "textenv/ReasoningGym-v0":
        raise SystemExit(f"--env {args.env}: the TRL side runs reasoning-gym envs only (single-turn)")
    reward_kwargs = env_kwargs["reward_kwargs"]
    functions, weights = trl_reward_funcs(
        "reasoning_gym", extraction=args.answer_format, format_weight=reward_kwargs["format_weight"],
        partial_credit=reward_kwargs["partial_credit"],
    )
    defaults = TextenvGRPOConfig()
    untuned = out / "untuned"  # TRL builds its reference model from the policy's directory
    textenv.load_causal_lm(args.model).save_pretrained(untuned)
    policy = AutoModelForCausalLM.from_pretrained(untuned)
    trainable = freeze_lower_blocks(policy, args.train_layers)
    steps_per_round = args.minibatches
    config = GRPOConfig(
        output_dir=str(out / "trainer"), seed=args.seed,
        per_device_train_batch_size=args.num_envs // steps_per_round, gradient_accumulation_steps=1,
        steps_per_generation=steps_per_round, num_generations=args.generations, num_iterations=1,
        max_completion_length=env_kwargs["max_new_tokens"], temperature=args.temperature,
        learning_rate=args.lr, lr_scheduler_type="constant", beta=args.beta,
        adam_beta1=defaults.adam_betas[0], adam_beta2=defaults.adam_betas[1], adam_epsilon=defaults.adam_eps,
        weight_decay=defaults.weight_decay, max_grad_norm=defaults.max_grad_norm,
        reward_weights=weights, max_steps=10**6, logging_strategy="steps", logging_steps=steps_per_round,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=policy, reward_funcs=functions, args=config, train_dataset=Dataset.from_list(train_rows(env_id, env_kwargs)),
        processing_class=textenv.load_tokenizer(args.model),
    )
    print(f"TRL GRPO on {env_id} {env_kwargs}: {trainable / 1e6:.1f}M trainable parameters", flush=True)
    budget = Budget(args, env_id, env_kwargs, trainer.model)

    class Rounds(TrainerCallback):
        """A round = ``steps_per_round`` optimiser steps, logged once: the budget's tick after each."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> Any:
            if logs is None or "loss" not in logs or state.global_step % steps_per_round:
                return control
            metrics = {key.replace("/", "_"): float(value) for key, value in logs.items()
                       if isinstance(value, (int, float))}
            if budget.tick(state.global_step // steps_per_round, metrics):
                control.should_training_stop = True
            return control

    trainer.add_callback(Rounds())
    budget.evaluate(0)
    trainer.train()
    iterations = trainer.state.global_step // steps_per_round
    budget.evaluate(iterations)
    write_results(out, budget.results(env_id, env_kwargs, trainable, iterations))
    shutil.rmtree(untuned)  # the untuned copy is the public model: not a result


if __name__ == "__main__":
    main()
