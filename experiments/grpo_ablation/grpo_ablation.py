"""GRPO ablation: which of TRL's settings makes its GRPO learn more per round than textenv's (issue 13, item 2).

Measured side by side (SmolLM2, top 8 blocks, lr 2e-4, beta 0.04, k=4, 16 completions and 4 optimiser steps per
round, 86 rounds), TRL 1.16's ``GRPOTrainer`` reached held-out VADER 0.872 at KL 23.0 and textenv's GRPO 0.850 at
KL 26.3. This script trains textenv's GRPO on :mod:`experiments.rlhf_common`'s setup (its reward, prompts, frozen
blocks and evaluation) once with textenv's defaults and once per variant that moves ONE setting to TRL's, plus all
of them together, each for ``--rounds`` rounds from the same seed(s).

Where textenv's GRPO defaults and TRL 1.16's (``GRPOConfig`` + ``transformers.TrainingArguments``) stand:

==========================  ==========================================  ============================================
setting                     textenv ``GRPOConfig`` default              TRL 1.16 default
==========================  ==========================================  ============================================
learning-rate schedule      constant (``lr_schedule="constant"``)      linear decay to 0 over ``max_steps``, no
                                                                        warm-up (``lr_scheduler_type="linear"``)
KL term's gradient          plain per-token k3 (forward-KL gradient     k3 x differentiable ratio pi/pi_old
                            in expectation)                             (``use_bias_correction_kl=True``: the
                                                                        reverse-KL gradient)
``dapo`` token normaliser   the step's own completion tokens            the generation batch's tokens /
                            (TRL's ``bnpo``)                            ``steps_per_generation``
loss_type                   ``"dapo"``                                  ``"dapo"`` (same)
scale_rewards               ``"group"``, unbiased std + 1e-4            ``"group"``, unbiased std + 1e-4 (same)
KL estimator                k3                                          k3 (same; TRL has no other)
AdamW                       betas (0.9, 0.999), eps 1e-8, wd 0          same (``adamw_torch_fused``)
max_grad_norm               1.0                                         1.0 (same)
clip epsilon                0.2 (both sides)                            0.2 (same)
==========================  ==========================================  ============================================

The first three differ: ``linear_lr``, ``kl_is_weight`` and ``dapo_rollout`` move one each, ``trl_all`` all
three (the default ``--variants``). The issue's other candidates already match TRL; ``--variants all`` adds
variants that move them away from both (Dr. GRPO's ``scale_rewards="none"``, ``loss_type`` ``"grpo"`` /
``"dr_grpo"``, the k1/k2 estimators, MOSS-RLHF's Adam settings, no gradient clipping) to see whether they matter.

For each variant and seed: held-out VADER on the 40 ``builtin:test`` prompts (``--eval-samples`` completions each;
mean and standard error over the completions), KL to the untuned model (nats per completion), perplexity under it,
cross-sample diversity (distinct-2 over all completions, share of completions holding the most common 4-gram),
the train loop's wall seconds and process CPU seconds (evaluation excluded). Results are merged into
``--out``/results.json per variant and seed as each finishes (a killed run keeps what finished; processes running
other variants into the same directory add theirs), with the CPU it ran on; a markdown table ends the run
(``--table-only`` reprints it).

One 86-round SmolLM2 run takes ~25-40 minutes on one thread (16-28 s per round on a shared AVX2-only EPYC), plus
~30 s of evaluation: the five default variants x 3 seeds are ~4 hours as two processes.

    # the real ablation (2 cores): two processes, one thread each, halves of the variants, 3 seeds
    OMP_NUM_THREADS=1 python -m experiments.grpo_ablation.grpo_ablation --variants baseline,linear_lr,kl_is_weight \\
        --seeds 0,1,2 &
    OMP_NUM_THREADS=1 python -m experiments.grpo_ablation.grpo_ablation --variants dapo_rollout,trl_all --seeds 0,1,2
    python -m experiments.grpo_ablation.grpo_ablation --table-only
    python -m experiments.grpo_ablation.grpo_ablation --smoke --out /tmp/ablation      # tiny model, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


import torch

import textenv
from agents.runs.machine import cpu_info
from experiments.rlhf_common import (
    GRPO_VARIANTS,
    RUN_SETTINGS,
    add_run_arguments,
    build_parser,
    evaluate,
    example_args,
    make_trainer,
)

DEFAULT_VARIANTS = "baseline,linear_lr,kl_is_weight,dapo_rollout,trl_all"
SMOKE = ["--model", "tiny-random-smollm2", "--rounds", "2", "--num-envs", "4", "--generations", "2",
         "--minibatches", "2", "--variants", "baseline,trl_all"]


def held_out(policy: Any, reference: Any, settings: argparse.Namespace) -> dict[str, Any]:
    """:func:`experiments.rlhf_common.evaluate`, with the standard error of the mean VADER."""
    result = evaluate(policy, reference, settings.eval_samples, seed=1234, temperature=1.0)
    completions = 40 * settings.eval_samples  # builtin:test holds 40 prompts
    result["sentiment_stderr"] = result["sentiment_std"] / math.sqrt(completions)
    result["examples"] = result["examples"][:2]
    return result


def run_variant(name: str, seed: int, settings: argparse.Namespace, reference: Any) -> dict[str, Any]:
    overrides, source = GRPO_VARIANTS[name]
    args = build_parser().parse_args(example_args(argparse.Namespace(**{**vars(settings), "seed": seed}), "grpo"))
    torch.manual_seed(seed)
    trainer, _ = make_trainer(args, output_dir=None, config_overrides=overrides)
    wall, cpu = time.perf_counter(), time.process_time()
    history = trainer.train(settings.rounds)  # the planned length of a linear decay: rounds x minibatches steps
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = held_out(trainer.unwrapped_policy, reference, settings)
    trainer.close()
    last = history[-10:]
    return {
        "variant": name, "seed": seed,
        "changes": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
        "source": source, "rounds": len(history), "train_seconds": wall, "cpu_seconds": cpu,
        "held_out": result,
        "train_reward_last10": statistics.fmean(h["reward_mean"] for h in last),
        "train_kl_last10": statistics.fmean(h["kl"] for h in last),
        "final_learning_rate": history[-1]["learning_rate"],
    }


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` (processes merging into one results.json take turns)."""
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}, "untuned": {}}


def merge(path: Path, settings: dict[str, Any], cpu: dict[str, Any], key: str, section: str, value: Any) -> None:
    """Add ``value`` under ``results[section][key]`` (replacing an earlier run of the same key), atomically."""
    with locked(path):
        results = read_results(path)
        results.setdefault("settings", settings)
        results.setdefault("cpus", [])
        if cpu not in results["cpus"]:
            results["cpus"].append(cpu)
        results[section][key] = {**value, "cpu": cpu["class"], "threads": settings["threads"]}
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(results, indent=2))
        temporary.replace(path)


def check_settings(path: Path, settings: dict[str, Any]) -> None:
    stored = read_results(path).get("settings")
    if stored is None:
        return
    changed = {key: (stored.get(key), settings[key]) for key in RUN_SETTINGS if stored.get(key) != settings[key]}
    if changed:
        raise SystemExit(f"{path} holds runs with other settings {changed} (stored, asked); use another --out")


def spread(values: list[float], digits: int = 3) -> str:
    """``mean ± sample std`` over seeds (``mean`` alone for one)."""
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per variant (mean ± std over its seeds; one seed: ± the standard error of its VADER)."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for run in results["runs"].values():
        by_variant.setdefault(run["variant"], []).append(run)
    rows = ["| variant | change (source) | seeds | held-out VADER | KL (nats) | perplexity | distinct-2 (all) | "
            "top 4-gram share | train s | CPU s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    untuned = results.get("untuned", {}).get("untuned")
    if untuned is not None:
        rows.append(f"| untuned | - | | {untuned['sentiment_mean']:.3f} ± {untuned['sentiment_stderr']:.3f} "
                    f"(s.e.) | 0 | {untuned['perplexity_under_reference']:.2f} | {untuned['distinct_2_all']:.3f} | "
                    f"{untuned['top_4gram_share']:.2f} | | |")
    order = [name for name in GRPO_VARIANTS if name in by_variant]
    for name in order:
        runs = sorted(by_variant[name], key=lambda run: run["seed"])
        column = {key: [run["held_out"][key] for run in runs] for key in
                  ("sentiment_mean", "kl_to_reference", "perplexity_under_reference", "distinct_2_all",
                   "top_4gram_share")}
        vader = spread(column["sentiment_mean"])
        if len(runs) == 1:
            vader += f" ± {runs[0]['held_out']['sentiment_stderr']:.3f} (s.e.)"
        change = ", ".join(f"{k}={v}" for k, v in runs[0]["changes"].items()) or "-"
        rows.append(
            f"| {name} | {change} ({runs[0]['source']}) | {','.join(str(r['seed']) for r in runs)} | {vader} | "
            f"{spread(column['kl_to_reference'], 1)} | {spread(column['perplexity_under_reference'], 1)} | "
            f"{spread(column['distinct_2_all'])} | {spread(column['top_4gram_share'], 2)} | "
            f"{statistics.fmean(r['train_seconds'] for r in runs):.0f} | "
            f"{statistics.fmean(r['cpu_seconds'] for r in runs):.0f} |"
        )
    settings = results.get("settings", {})
    cpus = ", ".join(f"{c['model']} ({c['class']})" for c in results.get("cpus", []))
    rows.append(f"\n{settings.get('model')}, {settings.get('rounds')} rounds of {settings.get('num_envs')} completions "
                f"(k={settings.get('generations')}, {settings.get('minibatches')} steps), lr {settings.get('lr')}, "
                f"beta {settings.get('beta')}, top {settings.get('train_layers')} blocks; held-out: "
                f"{40 * settings.get('eval_samples', 1)} completions of builtin:test; CPU: {cpus}")
    return "\n".join(rows)


def parse_settings(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 2 rounds: checks the pipeline only")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma-separated, or 'all': {', '.join(GRPO_VARIANTS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    add_run_arguments(parser)
    parser.add_argument("--out", default="runs/grpo_ablation")
    parser.add_argument("--table-only", action="store_true", help="print the table of --out/results.json and exit")
    argv = sys.argv[1:] if argv is None else argv
    settings = parser.parse_args(argv)
    settings = parser.parse_args(SMOKE + argv) if settings.smoke else settings
    settings.variant_list = list(GRPO_VARIANTS) if settings.variants == "all" else settings.variants.split(",")
    unknown = [name for name in settings.variant_list if name not in GRPO_VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; expected some of {list(GRPO_VARIANTS)} or 'all'")
    try:
        settings.seed_list = [int(seed) for seed in settings.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {settings.seeds!r}; expected comma-separated integers")
    return settings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    settings = parse_settings(argv)
    out = Path(settings.out)
    path = out / "results.json"
    if settings.table_only:
        results = read_results(path)
        print(table(results))
        return results
    torch.set_num_threads(settings.threads)
    if settings.precision == "bf16":
        os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16"  # the trainers' Accelerator reads it
    out.mkdir(parents=True, exist_ok=True)
    stored = {key: value for key, value in vars(settings).items() if key not in ("variant_list", "seed_list")}
    check_settings(path, stored)
    cpu = cpu_info()
    reference = textenv.load_causal_lm(settings.model).eval()
    if not read_results(path)["untuned"]:
        merge(path, stored, cpu, "untuned", "untuned", held_out(reference, reference, settings))
    for seed in settings.seed_list:
        for name in settings.variant_list:
            print(f"{name} (seed {seed}):", flush=True)
            run = run_variant(name, seed, settings, reference)
            merge(path, stored, cpu, f"{name}/seed{seed}", "runs", run)
            h = run["held_out"]
            print(f"  held-out VADER {h['sentiment_mean']:.3f} ± {h['sentiment_stderr']:.3f}  KL "
                  f"{h['kl_to_reference']:.2f}  perplexity {h['perplexity_under_reference']:.2f}  "
                  f"{run['train_seconds']:.0f} s, {run['cpu_seconds']:.0f} CPU s", flush=True)
    results = read_results(path)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
