"""textenv GRPO on a task env, held-out before / during / after: one run (one seed) per call.

    OMP_NUM_THREADS=1 python -m experiments.rlvr_tasks.train_grpo --env chain_sum --seed 0 \\
        --out experiments/rlvr_tasks/results/grpo_chain_sum_seed0

SmolLM2-135M-Instruct, its top ``--train-layers`` blocks (and final norm) trainable, as the sentiment RLHF study
(examples/rlhf_sentiment.py): 16 episodes per iteration, k=4 completions per question, lr 2e-4, KL beta 0.04, 4
minibatches. The budget is CPU seconds of training (``time.process_time`` of this process, held-out evaluations
excluded): with one thread, 1800 s is 30 minutes of one core, so two seeds side by side fit 30 minutes of a 2-core
machine. Held-out evaluation (``common.held_out``) runs on the env's test split every ``--eval-every`` training CPU
seconds and at the end. ``results.json`` holds the settings, the machine, the per-iteration training metrics and
the held-out curve with wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

import textenv
from agents.lm import GRPOConfig, GRPOTrainer
from agents.lm.callbacks import Callback
from agents.modeling.model_blocks import freeze_lower_blocks
from agents.runs.machine import cpu_info
from experiments.rlvr_tasks.common import ENVS, GREEDY_TEMPERATURE, env_spec, held_out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=sorted(ENVS), default="chain_sum")
    parser.add_argument("--answer-format", default="whole", help="reasoning-gym envs: the extraction")
    parser.add_argument("--format-weight", type=float, default=0.0)
    parser.add_argument("--partial-credit", type=int, default=1, help="1: the task's partial credit; 0: exact")
    parser.add_argument("--env-kwargs", default="{}", help="JSON: more env arguments")
    parser.add_argument("--model", default=textenv.DEFAULT_MODEL)
    parser.add_argument("--cpu-seconds", type=float, default=1800.0, help="training budget (process CPU seconds)")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--minibatches", type=int, default=4)
    parser.add_argument("--train-layers", type=int, default=8)
    parser.add_argument("--eval-every", type=float, default=300.0, help="held-out every N training CPU seconds")
    parser.add_argument("--eval-samples", type=int, default=2, help="completions per held-out question")
    parser.add_argument("--eval-greedy", action="store_true",
                        help="also read the held-out split once per question at temperature 0.001 (near-greedy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    return parser


def env_settings(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    env_id, kwargs = env_spec(args.env, **json.loads(args.env_kwargs))
    if env_id == "textenv/ReasoningGym-v0":
        kwargs = {
            **kwargs, "answer_format": args.answer_format,
            "reward_kwargs": {"format_weight": args.format_weight, "partial_credit": bool(args.partial_credit)},
        }
    return env_id, kwargs


class Budget(Callback):
    """Held-out evaluation every ``eval_every`` training CPU seconds; stops at ``cpu_seconds``."""

    def __init__(self, args: argparse.Namespace, env_id: str, env_kwargs: dict[str, Any], policy: Any) -> None:
        self.args, self.env_id, self.env_kwargs, self.policy = args, env_id, env_kwargs, policy
        self.eval_cpu = 0.0
        self.eval_wall = 0.0
        self.started_cpu = time.process_time()
        self.started_wall = time.perf_counter()
        self.next_eval = args.eval_every
        self.curve: list[dict[str, Any]] = []
        self.history: list[dict[str, float]] = []

    def train_cpu(self) -> float:
        return time.process_time() - self.started_cpu - self.eval_cpu

    def train_wall(self) -> float:
        return time.perf_counter() - self.started_wall - self.eval_wall

    def evaluate(self, iteration: int) -> dict[str, Any]:
        cpu, wall = time.process_time(), time.perf_counter()
        result = held_out(self.policy, self.env_id, self.env_kwargs, samples=self.args.eval_samples)
        if self.args.eval_greedy:
            greedy = held_out(self.policy, self.env_id, self.env_kwargs, samples=1, temperature=GREEDY_TEMPERATURE)
            result["greedy"] = {**greedy, "examples": greedy["examples"][:3]}
        self.eval_cpu += time.process_time() - cpu
        self.eval_wall += time.perf_counter() - wall
        point = {"iteration": iteration, "train_cpu_seconds": self.train_cpu(), "train_wall_seconds": self.train_wall(),
                 **{k: v for k, v in result.items() if k != "examples"}, "examples": result["examples"][:3]}
        self.curve.append(point)
        shown = {k: round(v, 3) for k, v in point.items() if isinstance(v, float)}
        if "greedy" in point:
            shown["greedy_exact_accuracy"] = round(point["greedy"].get("exact_accuracy", float("nan")), 3)
        print(f"held-out @ it {iteration}: {shown}", flush=True)
        return point

    def on_iteration_end(self, trainer: Any, metrics: dict[str, float]) -> bool:
        return self.tick(trainer.iteration, metrics)

    def tick(self, iteration: int, metrics: dict[str, float]) -> bool:
        """After an iteration: log it, evaluate when due; True when the budget is spent (stop)."""
        self.history.append({"iteration": iteration, **metrics, "train_cpu_seconds": self.train_cpu()})
        parts = {k: round(v, 3) for k, v in metrics.items() if k.startswith("reward") or k in ("kl", "response_length")}
        print(f"it {iteration} cpu {self.train_cpu():.0f}s {parts}", flush=True)
        if self.train_cpu() >= self.args.cpu_seconds:
            return True
        if self.train_cpu() >= self.next_eval:
            self.evaluate(iteration)
            self.next_eval += self.args.eval_every
        return False

    def results(self, env_id: str, env_kwargs: dict[str, Any], trainable: int, iterations: int) -> dict[str, Any]:
        """The run's ``results.json``: settings, machine, held-out curve and per-iteration history."""
        return {
            "env": env_id, "env_kwargs": env_kwargs, "settings": vars(self.args), "machine": cpu_info(),
            "threads": torch.get_num_threads(), "trainable_parameters": trainable, "iterations": iterations,
            "train_cpu_seconds": self.train_cpu(), "train_wall_seconds": self.train_wall(),
            "before": self.curve[0], "after": self.curve[-1], "held_out_curve": self.curve, "history": self.history,
        }


def main() -> None:
    args = build_parser().parse_args()
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env_id, env_kwargs = env_settings(args)
    config = GRPOConfig(
        seed=args.seed, num_envs=args.num_envs, num_generations=args.generations, learning_rate=args.lr,
        beta=args.beta, num_minibatches=args.minibatches, temperature=args.temperature, progress_bar=False,
        output_dir=str(out / "trainer"),
    )
    policy = textenv.load_causal_lm(args.model)
    trainable = freeze_lower_blocks(policy, args.train_layers)
    trainer = GRPOTrainer(env_id, policy, config, env_kwargs=env_kwargs)
    print(f"GRPO on {env_id} {env_kwargs}: {trainable / 1e6:.1f}M trainable parameters", flush=True)
    budget = Budget(args, env_id, env_kwargs, trainer.unwrapped_policy)
    budget.evaluate(0)
    trainer.train(10**6, callbacks=[budget])
    budget.evaluate(trainer.iteration)
    write_results(out, budget.results(env_id, env_kwargs, trainable, trainer.iteration))


def write_results(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: results[k] for k in ("iterations", "train_cpu_seconds", "train_wall_seconds")}), flush=True)


if __name__ == "__main__":
    main()
