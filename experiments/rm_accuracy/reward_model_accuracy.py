"""Reward-model accuracy against the number of training pairs, and what moves it (issue 12's measurement).

Trains Bradley-Terry reward models (``agents.reward_model``) on the first N pairs of a training file (whole prompts,
in a seeded order) for several N and settings, and scores every model on a second file of pairs whose prompts no
part of training saw (``builtin:test`` prompts when made with ``textenv pairs --prompts builtin:test``). Model
selection (early stopping) uses only the trainer's own held-out split of the training prompts; the test file is
read once per model, after training. Reported per run: test accuracy on all pairs and on pairs whose gold gap is at
least 0.3, the held-out (validation) accuracy, training accuracy, seconds (frozen-block cache included).

    textenv pairs --env MossText-v0 --gold sentiment --k 6 --prompts builtin:train \\
        --pairs 2800 --out runs/rm/train_pairs.jsonl
    textenv pairs --env MossText-v0 --gold sentiment --k 6 --prompts builtin:test \\
        --pairs 560 --seed 1 --out runs/rm/test_pairs.jsonl
    python -m experiments.rm_accuracy.reward_model_accuracy --train runs/rm/train_pairs.jsonl \\
        --test runs/rm/test_pairs.jsonl --sizes 250,500,1000,2000 --variants default --out runs/rm/accuracy.json

Variants are named setting changes (``--variants`` lists them; ``--list-variants`` prints them): the number of
trainable blocks, learning rate, label smoothing, a margin from the gold gap, early stopping off. Finished runs are
kept in ``--out`` and skipped on a rerun, so a killed sweep continues.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any


from agents.reward_model import RewardModelConfig, RewardModelTrainer
from textenv.preferences import PreferencePair, load_preferences

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "mean": {"pooling": "mean"},
    "blocks0": {"trainable_blocks": 0},
    "blocks1": {"trainable_blocks": 1},
    "blocks2": {"trainable_blocks": 2},
    "blocks8": {"trainable_blocks": 8},
    "blocks12": {"trainable_blocks": 12},
    "lr3e-5": {"learning_rate": 3e-5},
    "lr3e-4": {"learning_rate": 3e-4},
    "lr3e-3": {"learning_rate": 3e-3},  # for a head alone (blocks0)
    "base16": {"base_blocks": 16},  # SmolLM2's first 16 of 30 blocks: where its mean-pooled states probe best
    "base17": {"base_blocks": 17},  # the same and block 17 (with blocks1: block 17 trained on the cached block 16)
    "smoothing0.1": {"label_smoothing": 0.1},
    "center0.01": {"center_rewards_coefficient": 0.01},
    "mean_words": {"pooling": "mean", "head_init_positive": "good,great,love,wonderful,happy,beautiful,best,"
                   "excellent,amazing,enjoy,fun,nice,perfect",
                   "head_init_negative": "bad,terrible,hate,awful,sad,ugly,worst,poor,boring,horrible,wrong,dull,fail"},
    "margin_gold": {"margin_from_gold": 1.0},
    "no_early_stop": {"early_stopping_patience": None},
    "epochs6": {"num_train_epochs": 6},
    "tokens": {"token_scores": True},  # a learned score per token id beside the head (its lr: the config default)
}


def first_pairs(pairs: list[PreferencePair], n: int, seed: int) -> list[PreferencePair]:
    """The pairs of whole prompts, in a seeded prompt order, until ``n`` pairs (the last prompt cut to fit)."""
    by_prompt: dict[str | None, list[PreferencePair]] = {}
    for pair in pairs:
        by_prompt.setdefault(pair.prompt, []).append(pair)
    prompts = list(by_prompt)
    random.Random(seed).shuffle(prompts)
    chosen: list[PreferencePair] = []
    for prompt in prompts:
        chosen.extend(by_prompt[prompt][: n - len(chosen)])
        if len(chosen) >= n:
            break
    return chosen


def with_gold_margin(pairs: list[PreferencePair], scale: float) -> list[PreferencePair]:
    """Each pair's margin set to ``scale`` times its gold gap (a preference-strength margin, as Llama 2 uses)."""
    return [replace(p, margin=scale * abs(p.gold_chosen - p.gold_rejected)) for p in pairs]


def variant_settings(variant: str) -> dict[str, Any]:
    """The setting changes of a variant name: one of :data:`VARIANTS`, or several joined by ``+``."""
    overrides: dict[str, Any] = {}
    for part in variant.split("+"):
        if part not in VARIANTS:
            raise ValueError(f"unknown variant {part!r}; expected some of {sorted(VARIANTS)} joined by '+'")
        overrides.update(VARIANTS[part])
    return overrides


def run(train: list[PreferencePair], tests: dict[str, list[PreferencePair]], n: int, variant: str, seed: int,
        args: argparse.Namespace, caches: dict[Any, Any]) -> dict[str, Any]:
    """Train one reward model on the first ``n`` training pairs (whole prompts in ``seed``'s order) with
    ``variant``'s settings and ``seed``; score it on every test file (the first one's figures are the row's
    ``test_*`` fields, every file's are under ``tests``)."""
    overrides = variant_settings(variant)
    margin_scale = overrides.pop("margin_from_gold", None)
    settings = dict(model=args.model, seed=seed, progress_bar=False)
    settings.update(overrides)
    config = RewardModelConfig(**settings)
    pairs = first_pairs(train, n, seed)
    if margin_scale is not None:
        pairs = with_gold_margin(pairs, margin_scale)
    started = time.perf_counter()
    key = (config.model, config.base_blocks, config.trainable_blocks)
    trainer = RewardModelTrainer(pairs, config, frozen_cache=caches.get(key))
    if trainer.frozen_cache is not None:
        caches[key] = trainer.frozen_cache
    result = trainer.train()
    seconds = time.perf_counter() - started
    per_file = {name: trainer.evaluate_pairs(pairs) for name, pairs in tests.items()}
    test_metrics = next(iter(per_file.values()))
    train_metrics = trainer.evaluate(trainer.train_index)
    return {
        "n": len(pairs),
        "variant": variant,
        "seed": seed,
        "settings": overrides if margin_scale is None else {**overrides, "margin_from_gold": margin_scale},
        "test_accuracy": test_metrics["eval_accuracy"],
        "test_accuracy_gold_gap_0.3": test_metrics.get("accuracy_gold_gap_0.3"),
        "test_loss": test_metrics["eval_loss"],
        "test_pairs": int(test_metrics["pairs"]),
        "validation_accuracy": result.best_eval_accuracy,
        "train_accuracy": train_metrics["eval_accuracy"],
        "best_step": result.best_step,
        "steps": result.steps,
        "seconds": seconds,
        "frozen_cache_seconds": trainer.cache_seconds,
        "history": result.history,
        "tests": {name: {"accuracy": m["eval_accuracy"], "accuracy_gold_gap_0.3": m.get("accuracy_gold_gap_0.3"),
                         "pairs": int(m["pairs"])} for name, m in per_file.items()},
    }


def seed_of(row: dict[str, Any]) -> int:
    """The seed a results row ran with (rows written before ``--seeds`` existed ran with 42)."""
    return int(row.get("seed", 42))


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| pairs | variant | seed | test acc. | test acc. (gold gap >= 0.3) | validation acc. | train acc. | "
             "best step / steps | seconds |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (r["variant"] != "default", r["variant"], r["n"], seed_of(r))):
        wide = r["test_accuracy_gold_gap_0.3"]
        lines.append(
            f"| {r['n']} | {r['variant']} | {seed_of(r)} | {r['test_accuracy']:.3f} | "
            f"{'' if wide is None else f'{wide:.3f}'} | "
            f"{r['validation_accuracy']:.3f} | {r['train_accuracy']:.3f} | {r['best_step']} / {r['steps']} | "
            f"{r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", help="training pairs (JSONL)")
    parser.add_argument("--test", help="test pairs of prompts never trained on (JSONL; several: comma-separated, "
                        "the first one's accuracy is the table's)")
    parser.add_argument("--sizes", default="250,500,1000,2000", help="comma-separated numbers of training pairs")
    parser.add_argument("--variants", default="default",
                        help=f"comma-separated; each one of {sorted(VARIANTS)} or several joined by '+'")
    parser.add_argument("--model", default=RewardModelConfig.model, help="base model of the reward models")
    parser.add_argument("--seeds", default="42",
                        help="comma-separated seeds; each trains its own model (split, batch order, head init, "
                        "which pairs)")
    parser.add_argument("--out", required=True, help="results JSON (finished runs in it are skipped)")
    parser.add_argument("--table-only", action="store_true", help="print the table of --out and exit")
    args = parser.parse_args(argv)

    out = Path(args.out)
    results: list[dict[str, Any]] = json.loads(out.read_text())["runs"] if out.is_file() else []
    if args.table_only:
        print(table(results))
        return
    if not args.train or not args.test:
        parser.error("--train and --test are needed")
    for variant in args.variants.split(","):
        try:
            variant_settings(variant)
        except ValueError as err:
            parser.error(str(err))
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers")
    train = load_preferences(args.train)
    tests = {name: load_preferences(name) for name in args.test.split(",")}
    caches: dict[Any, Any] = {}
    for variant, n, seed in itertools.product(args.variants.split(","), (int(x) for x in args.sizes.split(",")),
                                              seeds):
        if any(r["variant"] == variant and r["n"] == min(n, len(train)) and seed_of(r) == seed for r in results):
            continue
        row = run(train, tests, n, variant, seed, args, caches)
        results.append(row)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"train": args.train, "test": args.test, "model": args.model,
                                   "runs": results}, indent=1))
        os.replace(tmp, out)
        scored = "; ".join(f"{Path(name).name} {m['accuracy']:.3f} (gap>=0.3 {m['accuracy_gold_gap_0.3']})"
                           for name, m in row["tests"].items())
        print(f"{variant} n={row['n']} seed {seed}: test {scored}; validation {row['validation_accuracy']:.3f} "
              f"train {row['train_accuracy']:.3f} in {row['seconds']:.0f}s", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
