"""RLHF time to target: held-out reward against CPU seconds, textenv's GRPO and LM-PPO beside TRL's GRPOTrainer.

Every side trains SmolLM2-135M-Instruct (its top ``--train-layers`` blocks) on the same reward, ``sentiment +
1.0 * repetition + 0.5 * fluency`` (:mod:`experiments.rlhf_common`'s default; textenv's sides read the fluency
term from their reference forward, as the example does by default, TRL's from the env's ``fluency`` plugin), from
the training prompts (``builtin:train``), with matched settings: ``--num-envs`` completions per round
(``--generations`` per prompt for the group methods), ``--minibatches`` optimiser steps per round, learning rate,
KL coefficient ``--beta`` (GRPO and TRL; LM-PPO uses its per-token KL penalty), the same precision. TRL keeps
its other defaults (AdamW, linear learning-rate decay, gradient checkpointing), as a TRL user would. One TRL
round is ``--minibatches`` optimiser steps on one generation batch of ``--num-envs`` completions
(``steps_per_generation``).

Every ``--eval-every`` rounds each policy writes one completion per held-out prompt (``builtin:test``, never trained
on; in float32 whatever ``--precision`` trains in) and the mean VADER compound is recorded against the process CPU
seconds (user + sys) spent training so far, counted from the first evaluation (after each side's setup); the
evaluations' own CPU time is left out. The sides run one after the other in this process, on the same threads
(``--threads``), or with ``--side-by-side`` all at once, one process per side (each with ``--threads``; the issue's
setup: two sides, one thread each, on 2 cores), so that machine load hits every side alike. Reported: the curves
(JSON + plot) and, for each textenv agent, the CPU seconds to first reach the target held-out reward (``--target``;
default: TRL's final held-out reward) divided by TRL's. The issue's target is a ratio <= 0.5.

    # the real run (~50 min on 2 cores): textenv's GRPO, the same with TRL's KL weighting, and TRL, side by side
    python -m experiments.grpo_vs_trl.rlhf_time_to_target --agents grpo,grpo@kl_is_weight,trl --side-by-side \\
        --out runs/time_to_target
    python -m experiments.grpo_vs_trl.rlhf_time_to_target --smoke --out /tmp/ttt          # tiny model, seconds
    # runs of several seeds (each made with --seed S): mean and spread of every figure per side, reward against KL,
    # and the seed-mean curves with the target ratio read from them
    python -m experiments.grpo_vs_trl.rlhf_time_to_target --summarise runs/ttt_seed0 runs/ttt_seed1 --out runs/ttt

TRL is needed for its side (``pip install -e ".[bench]"``); without it that side is reported as skipped and
ratios need ``--target``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


import torch

import rewards
import textenv
from agents.lm.callbacks import Callback
from agents.runs.machine import cpu_info
from experiments.rlhf_common import (
    GRPO_VARIANTS,
    RUN_SETTINGS,
    add_run_arguments,
    build_parser,
    evaluate,
    example_args,
    freeze_lower_layers,
    make_trainer,
    start_module,
    training_reward,
)

MODULE = "experiments.grpo_vs_trl.rlhf_time_to_target"
TEXTENV_AGENTS = ("grpo", "lm-ppo")
SMOKE = ["--model", "tiny-random-smollm2", "--rounds", "2", "--eval-every", "1", "--num-envs", "4",
         "--generations", "2", "--minibatches", "2"]


@contextlib.contextmanager
def full_precision(model: Any) -> Iterator[None]:
    """``model`` with the forward it had before accelerate wrapped it in a mixed-precision autocast, put back on
    exit (a model nothing wrapped is left as it is). Under ``--precision bf16`` the sides' models are wrapped at
    different times (textenv's when its trainer is built, TRL's when ``train()`` starts), so without this the
    held-out evaluations of one round would run in different precisions; with it every evaluation is float32."""
    original = model.__dict__.get("_original_forward")
    if original is None:
        yield
        return
    wrapped = model.__dict__["forward"]
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped


class HeldOut:
    """Held-out VADER of a policy against the training CPU seconds so far (evaluation CPU time left out)."""

    def __init__(self, settings: argparse.Namespace, reference: Any) -> None:
        self.settings, self.reference = settings, reference
        self.started = self.eval_cpu = 0.0
        self.curve: list[dict[str, float]] = []

    def __call__(self, policy: Any, round_: int) -> None:
        before = time.process_time()
        if not self.curve:  # the clock starts at the first evaluation, after the side's setup
            self.started, self.eval_cpu = before, 0.0
        training = policy.training
        policy.eval()
        with full_precision(policy):
            result = evaluate(policy, self.reference, self.settings.eval_samples, seed=1234, temperature=1.0)
        policy.train(training)
        point = {
            "round": round_,
            "cpu_seconds": before - self.started - self.eval_cpu,
            "held_out_vader": result["sentiment_mean"],
            "kl_to_reference": result["kl_to_reference"],
            "distinct_2_all": result["distinct_2_all"],
            "top_4gram_share": result["top_4gram_share"],
        }
        self.curve.append(point)
        self.eval_cpu += time.process_time() - before
        print(f"  round {round_:3d}  {point['cpu_seconds']:8.1f} CPU s  held-out VADER {point['held_out_vader']:+.3f}",
              flush=True)

    def due(self, round_: int) -> bool:
        return round_ % self.settings.eval_every == 0 or round_ == self.settings.rounds


def textenv_overrides(name: str) -> tuple[str, dict[str, Any]]:
    """``"grpo"`` -> ``("grpo", {})``; ``"grpo@kl_is_weight"`` -> GRPO with that ``GRPO_VARIANTS`` entry's config
    changes (a TRL setting moved onto textenv's GRPO)."""
    agent, _, variant = name.partition("@")
    if agent not in TEXTENV_AGENTS:
        raise SystemExit(f"unknown agent {name!r}; expected grpo, lm-ppo, trl or grpo@<variant>")
    if not variant:
        return agent, {}
    if agent != "grpo" or variant not in GRPO_VARIANTS:
        raise SystemExit(f"unknown agent {name!r}; variants apply to grpo only: grpo@one of {sorted(GRPO_VARIANTS)}")
    return agent, GRPO_VARIANTS[variant][0]


def run_textenv(name: str, settings: argparse.Namespace, reference: Any) -> list[dict[str, float]]:
    agent, overrides = textenv_overrides(name)
    args = build_parser().parse_args(example_args(settings, agent))
    trainer, _ = make_trainer(args, output_dir=None, config_overrides=overrides)
    held_out = HeldOut(settings, reference)

    class EvaluateEvery(Callback):
        def on_iteration_end(self, trainer: Any, metrics: dict[str, float]) -> None:
            if held_out.due(trainer.iteration):
                held_out(trainer.unwrapped_policy, trainer.iteration)

    held_out(trainer.unwrapped_policy, 0)
    trainer.train(settings.rounds, callbacks=[EvaluateEvery()])
    trainer.close()
    return held_out.curve


def run_trl(settings: argparse.Namespace, reference: Any, output_dir: str) -> list[dict[str, float]] | dict[str, str]:
    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as error:
        return {"skipped": f"TRL is not installed ({error}); pip install -e '.[bench]'"}
    from textenv.prompts import load_prompts

    # TRL's reward functions see text only: the fluency term comes from the `fluency` plugin's own model
    reward = rewards.make(training_reward(build_parser().parse_args([*example_args(settings, "grpo"),
                                                                     "--fluency-source", "plugin"])))

    def reward_function(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return [float(x) for x in reward(list(prompts), list(completions))]

    from transformers import AutoModelForCausalLM

    untuned = Path(output_dir) / "untuned"  # TRL builds its reference model from the policy's directory
    textenv.load_causal_lm(settings.model).save_pretrained(untuned)
    policy = AutoModelForCausalLM.from_pretrained(untuned)
    freeze_lower_layers(policy, settings.train_layers)
    steps_per_round = settings.minibatches
    args = GRPOConfig(
        output_dir=output_dir,
        seed=settings.seed,
        per_device_train_batch_size=settings.num_envs // steps_per_round,
        gradient_accumulation_steps=1,
        steps_per_generation=steps_per_round,  # one generation batch of num_envs completions per round
        num_generations=settings.generations,
        num_iterations=1,
        max_completion_length=24,  # MossText-v0's max_new_tokens
        temperature=1.0,
        learning_rate=settings.lr,
        beta=settings.beta,
        max_steps=settings.rounds * steps_per_round,
        logging_strategy="no",
        save_strategy="no",
        report_to=[],
        bf16=settings.precision == "bf16",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    prompts = [prompt.text for prompt in load_prompts("builtin:train")]
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[reward_function],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=textenv.load_tokenizer(settings.model),
    )
    held_out = HeldOut(settings, reference)

    class EvaluateEvery(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % steps_per_round == 0 and held_out.due(state.global_step // steps_per_round):
                held_out(trainer.model, state.global_step // steps_per_round)

    trainer.add_callback(EvaluateEvery())
    held_out(trainer.model, 0)
    trainer.train()
    return held_out.curve


def first_reach(curve: list[dict[str, float]], target: float, measure: str = "cpu_seconds") -> float | None:
    """The CPU seconds (or another ``measure`` of the point, such as ``"round"``) of the first evaluation whose
    held-out reward reaches ``target`` (None: never)."""
    return next((point[measure] for point in curve if point["held_out_vader"] >= target), None)


def reach_ratio(seconds: float | None, trl_seconds: float | None) -> float | None:
    """``seconds / trl_seconds``; None where either side never reached the target or TRL started there (0 s)."""
    return seconds / trl_seconds if seconds is not None and trl_seconds else None


@contextlib.contextmanager
def held_out_figure(path: Path, xlabel: str) -> Iterator[Any]:
    """Axes for a held-out reward plot; labelled, saved to ``path`` and closed when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    yield ax
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out mean VADER")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot(curves: dict[str, Any], target: float | None, path: Path) -> None:
    with held_out_figure(path, "training CPU seconds (user + sys)") as ax:
        for name, curve in curves.items():
            if isinstance(curve, list):
                ax.plot([p["cpu_seconds"] for p in curve], [p["held_out_vader"] for p in curve], marker="o",
                        label=name)
        if target is not None:
            ax.axhline(target, color="red", ls=":", label=f"target {target:.3f}")


def parse_settings(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 2 rounds: checks the pipeline only")
    parser.add_argument("--agents", default="grpo,lm-ppo,trl",
                        help="comma-separated: grpo, lm-ppo, trl, or grpo@<variant of GRPO_VARIANTS>")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run the agents at once, one process each (--threads each), into OUT/<agent>/")
    add_run_arguments(parser)
    parser.add_argument("--eval-every", type=int, default=10, help="rounds between held-out evaluations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=None, help="held-out reward to reach (default: TRL's final)")
    parser.add_argument("--trl-from", default=None, metavar="RUN",
                        help="take TRL's curve from an earlier run with the same settings (its directory or "
                             "results.json) instead of training TRL again")
    parser.add_argument("--out", default="runs/rlhf_time_to_target")
    parser.add_argument("--summarise", nargs="+", metavar="RUN_DIR", default=None,
                        help="train nothing: summarise runs already made (one per seed: a run's directory or its "
                             "results.json) into OUT/summary.json, and every seed's held-out reward against KL into "
                             "OUT/held_out_vs_kl.png")
    argv = sys.argv[1:] if argv is None else argv
    settings = parser.parse_args(argv)
    return parser.parse_args(SMOKE + argv) if settings.smoke else settings


def run_side_by_side(settings: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Every agent at once, one process each writing ``OUT/<agent>/results.json``; their curves."""
    names = settings.agents.split(",")
    base = [arg for arg in argv if arg != "--side-by-side"]
    processes = {}
    for name in names:
        log = open(Path(settings.out) / f"{name}.log", "w")  # noqa: SIM115 - closed when the process ends
        arguments = [*base, "--agents", name, "--out", str(Path(settings.out) / name)]
        processes[name] = (start_module(MODULE, arguments, stdout=log, stderr=subprocess.STDOUT), log)
    curves: dict[str, Any] = {}
    for name, (process, log) in processes.items():
        code = process.wait()
        log.close()
        if code != 0:
            raise SystemExit(f"the {name} side failed (exit {code}); see {Path(settings.out) / f'{name}.log'}")
        curves[name] = json.loads((Path(settings.out) / name / "results.json").read_text())["curves"][name]
    return curves


KL_BUDGETS = (10.0, 20.0)  # nats per completion: held-out reward compared at the same distance from the start


def reward_at_kl(curve: list[dict[str, float]], kl: float) -> float | None:
    """Held-out reward where the curve's KL to the untuned model first reaches ``kl``, interpolated linearly
    between the two evaluations around it (None: the run never went that far)."""
    for before, after in zip(curve, curve[1:]):
        if after["kl_to_reference"] >= kl > before["kl_to_reference"]:
            share = (kl - before["kl_to_reference"]) / (after["kl_to_reference"] - before["kl_to_reference"])
            return before["held_out_vader"] + share * (after["held_out_vader"] - before["held_out_vader"])
    return None


def seed_figures(results: dict[str, Any], name: str) -> dict[str, float | None]:
    """One run's figures for one side: its end point, its reach times and its reward at fixed KL budgets."""
    curve, trl = results["curves"][name], results["curves"].get("trl")
    final = curve[-1]
    figures: dict[str, float | None] = {
        "cpu_seconds_per_round": final["cpu_seconds"] / max(final["round"], 1),
        "held_out_vader": final["held_out_vader"],
        "best_held_out_vader": max(point["held_out_vader"] for point in curve),
        "kl_to_reference": final["kl_to_reference"],
        "distinct_2_all": final["distinct_2_all"],
        "top_4gram_share": final["top_4gram_share"],
        "cpu_seconds_to_0.8": first_reach(curve, 0.8),
        # rounds do not depend on the machine's load: comparable between runs that shared the cores differently
        "rounds_to_0.8": first_reach(curve, 0.8, measure="round"),
    }
    for kl in KL_BUDGETS:
        figures[f"held_out_vader_at_kl_{kl:g}"] = reward_at_kl(curve, kl)
    if name != "trl" and isinstance(trl, list):
        target = trl[-1]["held_out_vader"]  # TRL's final held-out reward, the target
        reach = first_reach(curve, target)
        figures["ratio_to_trl_reach"] = reach_ratio(reach, first_reach(trl, target))
        figures["ratio_to_trl_total"] = reach_ratio(reach, trl[-1]["cpu_seconds"])
        # a fixed target: TRL's final is one noisy evaluation (s.e. ~0.05 on 40 prompts)
        figures["ratio_to_trl_reach_0.8"] = reach_ratio(figures["cpu_seconds_to_0.8"], first_reach(trl, 0.8))
    return figures


def merge_by_seed(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of one seed as one run holding all their curves (e.g. a run with TRL and a later run of more textenv
    sides with the same settings; settings that differ are refused). A side that two runs of one seed hold is
    taken from the run named first, and the other's is left out with a printed note."""
    merged: dict[int, dict[str, Any]] = {}
    for run in runs:
        seed = run["settings"]["seed"]
        if seed not in merged:
            merged[seed] = {**run, "curves": dict(run["curves"])}
            continue
        first = merged[seed]
        twice = sorted(set(run["curves"]) & set(first["curves"]))
        if twice:
            print(f"--summarise: seed {seed}: {twice} also in a later run, whose curve(s) are left out", flush=True)
        differing = [key for key in TRL_SETTINGS if run["settings"].get(key) != first["settings"].get(key)]
        if differing:
            raise SystemExit(f"--summarise: two runs of seed {seed} differ in {differing}")
        first["curves"].update({name: curve for name, curve in run["curves"].items() if name not in twice})
    return list(merged.values())


SEED_MEAN_KEYS = ("cpu_seconds", "held_out_vader", "kl_to_reference")


def seed_mean_curve(curves: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Several seeds' curves of one side as one: at every round all of them evaluated, the mean over seeds of the
    CPU seconds, held-out reward and KL (the reward's evaluation noise, ~0.05 per 40-prompt evaluation, shrinks
    by the square root of the number of seeds)."""
    by_round = [{point["round"]: point for point in curve} for curve in curves]
    rounds = sorted(set.intersection(*(set(points) for points in by_round)))
    return [{"round": round_, **{key: statistics.fmean(points[round_][key] for points in by_round)
                                 for key in SEED_MEAN_KEYS}} for round_ in rounds]


def seed_mean_reach(curves: dict[str, list[list[dict[str, float]]]]) -> dict[str, Any]:
    """The issue's ratio on the seed-mean curves (:func:`seed_mean_curve`): CPU seconds for each textenv side's
    mean curve to first reach the final of TRL's mean curve, over TRL's seconds to first reach it and over TRL's
    whole run."""
    mean = {name: seed_mean_curve(seeds) for name, seeds in curves.items()}
    trl = mean["trl"]
    target = trl[-1]["held_out_vader"]
    reach = {name: first_reach(curve, target) for name, curve in mean.items()}
    return {"target": target, "cpu_seconds_to_target": reach, "curves": mean,
            "ratio_to_trl_reach": {name: reach_ratio(reach[name], reach["trl"]) for name in mean if name != "trl"},
            "ratio_to_trl_total": {name: reach_ratio(reach[name], trl[-1]["cpu_seconds"])
                                   for name in mean if name != "trl"}}


def summarise(run_dirs: list[str], out: Path) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every side's :func:`seed_figures` (a figure a seed does not
    reach, such as a target never met, is left out of its mean and counted in ``reached``). Runs of the same seed
    are merged first (:func:`merge_by_seed`)."""
    runs = []
    for run_dir in run_dirs:
        path = Path(run_dir) if Path(run_dir).is_file() else Path(run_dir) / "results.json"
        if not path.is_file():
            raise SystemExit(f"--summarise {run_dir}: no results.json there; expected a run of this benchmark "
                             "(its directory or its results.json)")
        runs.append(json.loads(path.read_text()))
    runs = merge_by_seed(runs)
    sides = [name for name, curve in runs[0]["curves"].items()
             if all(isinstance(run["curves"].get(name), list) for run in runs)]
    summary: dict[str, Any] = {"runs": run_dirs, "seeds": [run["settings"]["seed"] for run in runs],
                               "cpus": [run["cpu"] for run in runs], "sides": {}}
    for name in sides:
        per_seed = [seed_figures(run, name) for run in runs]
        summary["sides"][name] = {}
        for figure in per_seed[0]:
            values = [seeds[figure] for seeds in per_seed]
            known = [v for v in values if v is not None]
            summary["sides"][name][figure] = {
                "mean": statistics.fmean(known) if known else None,
                "std": statistics.stdev(known) if len(known) > 1 else None,
                "reached": f"{len(known)}/{len(values)}", "values": values,
            }
    seeds_by_side = {name: [run["curves"][name] for run in runs] for name in sides}
    if "trl" in sides:
        summary["seed_mean"] = seed_mean_reach(seeds_by_side)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if "seed_mean" in summary:
        plot(summary["seed_mean"]["curves"], summary["seed_mean"]["target"], out / "held_out_vs_cpu_seed_mean.png")
    plot_against_kl(seeds_by_side, out / "held_out_vs_kl.png")
    return summary


def plot_against_kl(curves: dict[str, list[list[dict[str, float]]]], path: Path) -> None:
    """Held-out reward against KL to the untuned model: one colour per side, one line per seed."""
    with held_out_figure(path, "KL to the untuned model (nats per completion)") as ax:
        for index, (name, seeds) in enumerate(curves.items()):
            for number, curve in enumerate(seeds):
                ax.plot([p["kl_to_reference"] for p in curve], [p["held_out_vader"] for p in curve],
                        color=f"C{index}", marker=".", alpha=0.7, label=name if number == 0 else None)


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as a markdown table: one row per figure, one column per side (mean ± std, seeds reaching)."""
    sides = list(summary["sides"])
    lines = ["| figure | " + " | ".join(sides) + " |", "|---|" + "---:|" * len(sides)]
    for figure in summary["sides"][sides[0]] if sides else []:
        cells = []
        for name in sides:
            stats = summary["sides"][name].get(figure)
            if stats is None or stats["mean"] is None:
                cells.append("—" if stats is None else f"not reached (0/{len(stats['values'])})")
                continue
            spread = f" ± {stats['std']:.3g}" if stats["std"] is not None else ""
            missing = "" if None not in stats["values"] else f" ({stats['reached']})"
            cells.append(f"{stats['mean']:.3g}{spread}{missing}")
        lines.append(f"| {figure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# the settings an earlier run's TRL curve must share with this run to stand beside it (--trl-from)
TRL_SETTINGS = (*RUN_SETTINGS, "eval_every", "seed")


def trl_curve_from(path: str, settings: argparse.Namespace) -> list[dict[str, float]]:
    """TRL's curve from an earlier run's ``results.json`` (or its directory), whose settings match this run's.
    TRL's side does not depend on textenv's code, so a run that changes only textenv can reuse it; its CPU
    seconds were measured in that run, under that run's machine load."""
    file = Path(path) / "results.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise SystemExit(f"--trl-from {path}: no results.json there; expected a run of this benchmark")
    earlier = json.loads(file.read_text())
    curve = earlier.get("curves", {}).get("trl")
    if not isinstance(curve, list):
        raise SystemExit(f"--trl-from {path}: that run has no TRL curve")
    differing = {key: (earlier["settings"].get(key), getattr(settings, key)) for key in TRL_SETTINGS
                 if earlier["settings"].get(key) != getattr(settings, key)}
    if differing:
        raise SystemExit(f"--trl-from {path}: settings differ from this run's (theirs, ours): {differing}")
    return curve


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    settings = parse_settings(argv)
    out = Path(settings.out)
    if settings.summarise:
        summary = summarise(settings.summarise, out)
        print(summary_table(summary))
        for name, ratio in summary.get("seed_mean", {}).get("ratio_to_trl_reach", {}).items():
            shown = "not reached" if ratio is None else f"{ratio:.2f}x TRL's"
            print(f"seed-mean curves: {name} reaches TRL's final {summary['seed_mean']['target']:.3f} in {shown}")
        return summary
    out.mkdir(parents=True, exist_ok=True)
    for name in settings.agents.split(","):
        if name != "trl":
            textenv_overrides(name)  # an unknown agent or variant stops the run before anything trains
    earlier_trl = None
    if settings.trl_from:  # checked before anything trains, too
        if "trl" in settings.agents.split(","):
            raise SystemExit("--trl-from takes TRL's curve from an earlier run: leave trl out of --agents")
        earlier_trl = trl_curve_from(settings.trl_from, settings)
    if settings.side_by_side:
        curves = run_side_by_side(settings, argv)
    else:
        torch.set_num_threads(settings.threads)
        if settings.precision == "bf16":
            os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16"  # the textenv trainers' Accelerator reads it
        reference = textenv.load_causal_lm(settings.model).eval()
        curves = {}
        for name in settings.agents.split(","):
            print(f"{name}:", flush=True)
            curves[name] = (run_trl(settings, reference, str(out / "trl")) if name == "trl"
                            else run_textenv(name, settings, reference))
    if earlier_trl is not None:
        curves["trl"] = earlier_trl
    trl_curve = curves.get("trl")
    target = settings.target
    if target is None and isinstance(trl_curve, list):
        target = trl_curve[-1]["held_out_vader"]
    reach = {name: first_reach(curve, target) for name, curve in curves.items()
             if isinstance(curve, list) and target is not None}
    ratios = {name: reach_ratio(seconds, reach.get("trl")) for name, seconds in reach.items() if name != "trl"}
    results = {"settings": vars(settings), "cpu": cpu_info(), "curves": curves, "target": target,
               "cpu_seconds_to_target": reach, "ratio_to_trl": ratios}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(curves, target, out / "held_out_vs_cpu.png")
    for name, ratio in ratios.items():
        if reach[name] is None:
            shown = "not reached"
        elif ratio is None:
            shown = f"{reach[name]:.1f} CPU s; TRL's untuned policy already met it, so no ratio"
        else:
            shown = f"{ratio:.2f}x TRL's CPU seconds (target <= 0.5)"
        print(f"{name}: held-out {target:.3f} in {shown}")
    if not math.isfinite(target if target is not None else math.nan):
        print("no target: TRL did not run and --target was not given")
    return results


if __name__ == "__main__":
    main()
