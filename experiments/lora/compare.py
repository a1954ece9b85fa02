"""LoRA against the top-8-block fine-tune (and TRL's GRPOTrainer with the same ``peft_config``) on the RLHF example's
setup: peak RSS, checkpoint bytes, process CPU seconds per round, held-out VADER and KL at matched rounds.

Every side trains SmolLM2-135M-Instruct with GRPO on the RLHF studies' setup (:mod:`experiments.rlhf_common`:
MossText-v0, the training prompts, reward ``sentiment + 1.0 * repetition + 0.5 * fluency``, 16 completions per
round, 4 per prompt, 4 optimiser steps per round, KL weight 0.04), for ``--rounds`` rounds:

* ``top8``: the setup as it is: the top 8 of 30 blocks (and the final norm) train; the reference is a frozen copy;
* ``lora``: the same with ``GRPOConfig.lora`` (``--rank``, ``--alpha``, every linear layer of every block, no
  dropout) at ``--lora-lr``; the reference is the policy with its adapter off;
* ``trl``: TRL's ``GRPOTrainer`` with ``peft_config=LoraConfig`` of the same values, the same rounds, batch, learning
  rate and KL weight (TRL's fluency term comes from the env's ``fluency`` plugin, its own copy of the untuned model,
  as in ``benchmarks/rlhf_time_to_target.py``; its other settings are TRL's defaults).

Each (side, seed) runs in its own process (``OMP_NUM_THREADS=1``), ``--parallel`` at a time; the parent reads each
child's peak RSS and CPU time from ``wait4``. The child reports the CPU seconds of its training rounds (held-out
evaluations left out), the held-out VADER and KL to the untuned model every ``--eval-every`` rounds (one completion
per ``builtin:test`` prompt, seed 1234, as the example), and the bytes of the checkpoint it writes at the end.

    OMP_NUM_THREADS=1 .venv/bin/python -m experiments.lora.compare \\
        --sides top8,lora,trl --seeds 0,1,2 --out runs/lora_study
    .venv/bin/python -m experiments.lora.compare --sides lora --seeds 0 --rounds 2 --eval-every 1 \\
        --model tiny-random-smollm2 --out /tmp/lora_smoke            # seconds
    .venv/bin/python -m experiments.lora.compare --summarise runs/lora_study     # the table from the results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SIDES = ("top8", "lora", "trl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", default="top8,lora,trl", help=f"comma-separated, of {SIDES}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--lr", type=float, default=2e-4, help="learning rate of the top-8 fine-tune (the example's)")
    parser.add_argument("--lora-lr", type=float, default=2e-3, help="learning rate of the LoRA sides")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--lora-blocks", type=int, default=None, help="adapters in the top N blocks only")
    parser.add_argument("--parallel", type=int, default=2, help="children at a time (one thread each)")
    parser.add_argument("--no-initial-eval", action="store_true",
                        help="skip the round-0 evaluation (the untuned model's: the same for every side and seed)")
    parser.add_argument("--out", default="runs/lora_study")
    parser.add_argument("--one", choices=SIDES, default=None, help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--summarise", nargs="+", default=None, metavar="DIR",
                        help="print the table of the results in these directories (summary.json goes to the first)")
    return parser


# -- one side, one seed (a child process) ------------------------------------------------------------------------
def example_args(settings: argparse.Namespace, side: str) -> list[str]:
    return ["--agent", "grpo", "--model", settings.model, "--seed", str(settings.seed),
            "--lr", str(settings.lora_lr if side != "top8" else settings.lr),
            "--train-layers", "8" if side == "top8" else "0"]


def lora_values(settings: argparse.Namespace) -> dict[str, Any]:
    return {"r": settings.rank, "alpha": settings.alpha, "target_modules": "all-linear", "blocks": settings.lora_blocks}


class Curve:
    """Held-out VADER and KL against the training CPU seconds (evaluations' own CPU time left out)."""

    def __init__(self, settings: argparse.Namespace) -> None:
        self.settings = settings
        self.points: list[dict[str, float]] = []
        self.eval_cpu = 0.0
        self.started = time.process_time()

    def __call__(self, policy: Any, reference: Any, round_: int) -> None:
        from experiments.rlhf_common import evaluate

        before = time.process_time()
        result = evaluate(policy, reference, 1, seed=1234, temperature=1.0)
        self.points.append({"round": round_, "train_cpu_seconds": before - self.started - self.eval_cpu,
                            "held_out_vader": result["sentiment_mean"], "kl_to_reference": result["kl_to_reference"],
                            "distinct_2_all": result["distinct_2_all"]})
        self.eval_cpu += time.process_time() - before
        print(f"  {round_:3d}  VADER {result['sentiment_mean']:+.3f}  KL {result['kl_to_reference']:.2f}", flush=True)

    def due(self, round_: int) -> bool:
        return round_ % self.settings.eval_every == 0 or round_ == self.settings.rounds


def directory_bytes(path: Path) -> dict[str, int]:
    files = [f for f in path.rglob("*") if f.is_file()]
    return {"total": sum(f.stat().st_size for f in files),
            "weights": sum(f.stat().st_size for f in files if f.suffix == ".safetensors"),
            "optimizer_and_rng": sum(f.stat().st_size for f in files if f.suffix == ".pt")}


def run_textenv(settings: argparse.Namespace, side: str, out: Path) -> dict[str, Any]:
    from agents.lm.callbacks import Callback
    from experiments.rlhf_common import build_parser as example_parser
    from experiments.rlhf_common import make_trainer

    args = example_parser().parse_args(example_args(settings, side))
    overrides = {"lora": lora_values(settings)} if side == "lora" else {}
    trainer, _ = make_trainer(args, output_dir=None, config_overrides=overrides)
    curve = Curve(settings)

    class EvaluateEvery(Callback):
        def on_iteration_end(self, trainer: Any, metrics: dict[str, float]) -> None:
            print(f"round {trainer.iteration}  reward {metrics['reward_mean']:+.3f}  "
                  f"{time.process_time() - curve.started:.0f} CPU s", flush=True)
            if curve.due(trainer.iteration):
                curve(trainer.unwrapped_policy, trainer.reference, trainer.iteration)

    if not settings.no_initial_eval:
        curve(trainer.unwrapped_policy, trainer.reference, 0)
    history = trainer.train(settings.rounds, callbacks=[EvaluateEvery()])
    checkpoint = trainer.save_checkpoint(out / "checkpoint_out")
    trainable = sum(p.numel() for p in trainer.unwrapped_policy.parameters() if p.requires_grad)
    trainer.close()
    return {"curve": curve.points, "checkpoint_bytes": directory_bytes(checkpoint), "trainable_parameters": trainable,
            "train_reward_mean": [h["reward_mean"] for h in history]}


def run_trl(settings: argparse.Namespace, out: Path) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    import rewards
    import textenv
    from agents.lm.lora import AdapterOff
    from experiments.rlhf_common import build_parser as example_parser
    from experiments.rlhf_common import training_reward
    from textenv.prompts import load_prompts

    example = example_parser().parse_args([*example_args(settings, "trl"), "--fluency-source", "plugin"])
    reward = rewards.make(training_reward(example))

    def reward_function(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return [float(x) for x in reward(list(prompts), list(completions))]

    blocks = settings.lora_blocks
    peft_config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                             target_modules="all-linear" if blocks is None else
                             ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                             layers_to_transform=None if blocks is None else list(range(30 - blocks, 30)))
    steps_per_round = example.minibatches
    args = GRPOConfig(
        output_dir=str(out / "trl"), seed=settings.seed,
        per_device_train_batch_size=example.num_envs // steps_per_round, gradient_accumulation_steps=1,
        steps_per_generation=steps_per_round, num_generations=example.generations,
        num_iterations=1, max_completion_length=24, temperature=1.0, learning_rate=settings.lora_lr,
        beta=example.beta, max_steps=settings.rounds * steps_per_round, logging_strategy="no", save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=textenv.load_causal_lm(settings.model), reward_funcs=[reward_function], args=args,
        train_dataset=Dataset.from_dict({"prompt": [p.text for p in load_prompts("builtin:train")]}),
        processing_class=textenv.load_tokenizer(settings.model), peft_config=peft_config,
    )
    peft_model = trainer.model
    policy = peft_model.base_model.model  # the transformers model the adapter sits in

    class Off:  # what AdapterOff needs: the model, and a context with its adapter off
        model = policy

        @staticmethod
        def disabled() -> Any:
            return peft_model.disable_adapter()

    reference = AdapterOff(Off())  # type: ignore[arg-type]
    curve = Curve(settings)

    def evaluate_now(round_: int) -> None:
        training = policy.training
        policy.eval()
        curve(policy, reference, round_)
        policy.train(training)

    class EvaluateEvery(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % steps_per_round:
                return
            round_ = state.global_step // steps_per_round
            print(f"round {round_}  {time.process_time() - curve.started:.0f} CPU s", flush=True)
            if curve.due(round_):
                evaluate_now(round_)

    trainer.add_callback(EvaluateEvery())
    if not settings.no_initial_eval:
        evaluate_now(0)
    trainer.train()
    checkpoint = out / "checkpoint_out"
    trainer.save_model(str(checkpoint))  # the adapter (TRL's save of a PEFT model)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    return {"curve": curve.points, "checkpoint_bytes": directory_bytes(checkpoint), "trainable_parameters": trainable}


def run_child(settings: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(settings.seed)
    side, out = settings.one, Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = run_trl(settings, out) if side == "trl" else run_textenv(settings, side, out)
    points = result["curve"]
    result.update(side=side, seed=settings.seed, rounds=settings.rounds, wall_seconds=time.perf_counter() - started,
                  cpu_seconds_per_round=points[-1]["train_cpu_seconds"] / max(points[-1]["round"], 1),
                  threads=torch.get_num_threads())
    (out / "result.json").write_text(json.dumps(result, indent=2))


# -- the parent: every (side, seed) in its own process -------------------------------------------------------------
def run_all(settings: argparse.Namespace) -> None:
    from agents.runs.machine import cpu_info

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(side, int(seed)) for seed in settings.seeds.split(",") for side in settings.sides.split(",")]
    unknown = sorted({side for side, _ in jobs} - set(SIDES))
    if unknown:
        raise SystemExit(f"unknown sides {unknown}; expected some of {SIDES}")
    common = ["--rounds", str(settings.rounds), "--eval-every", str(settings.eval_every), "--model", settings.model,
              "--lr", str(settings.lr), "--lora-lr", str(settings.lora_lr), "--rank", str(settings.rank),
              "--alpha", str(settings.alpha)] + (["--no-initial-eval"] if settings.no_initial_eval else [])
    if settings.lora_blocks is not None:
        common += ["--lora-blocks", str(settings.lora_blocks)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "TRANSFORMERS_VERBOSITY": "error"}
    running: dict[int, tuple[str, int, Path, Any]] = {}
    while jobs or running:
        while jobs and len(running) < settings.parallel:
            side, seed = jobs.pop(0)
            directory = out / f"{side}_seed{seed}"
            directory.mkdir(parents=True, exist_ok=True)
            log = (directory / "log.txt").open("w")
            process = subprocess.Popen([sys.executable, "-m", "experiments.lora.compare", "--one", side, "--seed",
                                        str(seed), "--out", str(directory), *common], env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
            running[process.pid] = (side, seed, directory, log)
            print(f"started {side} seed {seed}", flush=True)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        side, seed, directory, log = running.pop(pid)
        log.close()
        process_stats = {"exit_status": os.waitstatus_to_exitcode(status), "peak_rss_bytes": usage.ru_maxrss * 1024,
                         "process_cpu_seconds": usage.ru_utime + usage.ru_stime}
        (directory / "process.json").write_text(json.dumps(process_stats, indent=2))
        print(f"finished {side} seed {seed}: {process_stats}", flush=True)
    (out / "machine.json").write_text(json.dumps({"cpu": cpu_info(), "parallel": settings.parallel}, indent=2))
    print(summarise(out))


# -- the table ---------------------------------------------------------------------------------------------------
def mean_sd(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def summarise(out: Path, *more: Path) -> str:
    """A Markdown table (mean ± sd over seeds) of every side in ``out`` (and ``more``), and ``summary.json`` in
    ``out``. CPU seconds per round are counted over the rounds before the last evaluation every side reached."""
    results: dict[str, list[dict[str, Any]]] = {}
    for directory in sorted(d for base in (out, *more) for d in base.glob("*_seed*")):
        if (directory / "result.json").is_file() and (directory / "process.json").is_file():
            result = json.loads((directory / "result.json").read_text())
            result.update(json.loads((directory / "process.json").read_text()))
            results.setdefault(result["side"], []).append(result)
    rounds = sorted({p["round"] for runs in results.values() for r in runs for p in r["curve"]})
    common = min(max(p["round"] for p in run["curve"]) for runs in results.values() for run in runs)
    head = ["side", "seeds", "peak RSS (MB)", "checkpoint (MB)", f"CPU s / round (rounds 1-{common})",
            *[f"VADER @ {r}" for r in rounds if r], *[f"KL @ {r}" for r in rounds if r]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary: dict[str, Any] = {}
    for side in [s for s in SIDES if s in results]:
        runs = results[side]
        at = {r: [p for run in runs for p in run["curve"] if p["round"] == r] for r in rounds}
        row = {
            "seeds": sorted(run["seed"] for run in runs),
            "trainable_parameters": runs[0]["trainable_parameters"],
            "peak_rss_mb": [run["peak_rss_bytes"] / 1e6 for run in runs],
            "checkpoint_mb": [run["checkpoint_bytes"]["total"] / 1e6 for run in runs],
            "cpu_seconds_per_round": [p["train_cpu_seconds"] / common for p in at[common]],
            "held_out_vader": {r: [p["held_out_vader"] for p in at[r]] for r in rounds},
            "kl_to_reference": {r: [p["kl_to_reference"] for p in at[r]] for r in rounds},
        }
        summary[side] = row
        cells = [side, str(len(runs)), mean_sd(row["peak_rss_mb"]),
                 mean_sd(row["checkpoint_mb"]), mean_sd(row["cpu_seconds_per_round"]),
                 *[mean_sd(row["held_out_vader"][r]) for r in rounds if r],
                 *[mean_sd(row["kl_to_reference"][r]) for r in rounds if r]]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return "\n".join(lines)


def main() -> None:
    settings = build_parser().parse_args()
    if settings.summarise:
        print(summarise(*[Path(d) for d in settings.summarise]))
    elif settings.one:
        run_child(settings)
    else:
        run_all(settings)


if __name__ == "__main__":
    main()
