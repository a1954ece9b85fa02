"""What sharing the policy's frozen lower blocks saves per round (``share_frozen_trunk``), measured side by side.

Two trainers of ``examples/rlhf_sentiment.py``'s setup (the time-to-target run's: SmolLM2, top 8 blocks trained,
16 completions, k = 4, 4 optimiser steps per round, beta 0.04), the same seed, one with ``share_frozen_trunk=True``
(the default: the 22 frozen blocks' output is kept while sampling, and the reference forward, each loss forward and
LM-PPO's value forwards run only the top 8) and one with it off (every forward runs all 30 blocks). One untimed
warm-up round each, then ``--rounds`` rounds of each, interleaved (A, B, A, B, ...), so both see the same machine
load; ratios are of the medians. Reported per side: the round's wall seconds, its process CPU seconds, and the
trainer's own time breakdown (generation, env and reward, reference and value forwards, update).

    .venv/bin/python benchmarks/frozen_trunk.py                       # SmolLM2, ~6 min on one thread
    .venv/bin/python benchmarks/frozen_trunk.py --agent lm-ppo        # LM-PPO (policy, reference and critic)
    .venv/bin/python benchmarks/frozen_trunk.py --smoke               # tiny model, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

import textenv  # noqa: E402
from agents.lm.callbacks import Callback  # noqa: E402
from agents.machine import cpu_info  # noqa: E402
from benchmarks.rlhf_time_to_target import add_run_arguments, example_args  # noqa: E402
from examples.rlhf_sentiment import build_parser, make_trainer  # noqa: E402

PARTS = ("iteration_seconds", "cpu_seconds", "generation_seconds", "env_seconds", "forward_seconds", "update_seconds")


class KeepMetrics(Callback):
    """Keeps the last iteration's metrics."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def on_iteration_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        self.metrics = dict(metrics)


def one_round(trainer: Any) -> dict[str, float]:
    """Train one round; its metrics, with its process CPU seconds."""
    keep = KeepMetrics()
    started = time.process_time()
    trainer.train(1, callbacks=[keep])
    return {**keep.metrics, "cpu_seconds": time.process_time() - started}


def compare(settings: argparse.Namespace) -> dict[str, Any]:
    args = build_parser().parse_args(example_args(settings, settings.agent))
    trainers = {share: make_trainer(args, output_dir=None, config_overrides={"share_frozen_trunk": share})[0]
                for share in (True, False)}
    for trainer in trainers.values():
        one_round(trainer)  # warm-up; the shared side's first round also runs its exactness check
    if trainers[True].shared_trunk_blocks == 0:
        raise SystemExit("the frozen trunk is not shared in this setup (nothing frozen, or the check failed)")
    rounds: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for _ in range(settings.rounds):
        for share, trainer in trainers.items():
            rounds[share].append(one_round(trainer))
    medians = {share: {part: statistics.median(r[part] for r in rows) for part in PARTS}
               for share, rows in rounds.items()}
    for trainer in trainers.values():
        trainer.close()
    return {
        "settings": vars(settings),
        "cpu": cpu_info(),
        "medians": {"shared": medians[True], "full": medians[False]},
        "ratio_shared_to_full": {part: medians[True][part] / medians[False][part] for part in PARTS
                                 if medians[False][part] > 0},
        "rounds": {"shared": rounds[True], "full": rounds[False]},
    }


def print_report(results: dict[str, Any]) -> None:
    shared, full, ratio = results["medians"]["shared"], results["medians"]["full"], results["ratio_shared_to_full"]
    settings = results["settings"]
    print(f"\n{settings['agent']}, {settings['model']}, top {settings['train_layers']} blocks trained; medians of "
          f"{settings['rounds']} interleaved rounds per side")
    print(f"{'seconds per round':<22}{'trunk shared':>14}{'full forwards':>15}{'ratio':>8}")
    for part in PARTS:
        print(f"{part:<22}{shared[part]:>14.2f}{full[part]:>15.2f}{ratio.get(part, float('nan')):>7.2f}x")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--agent", choices=("grpo", "lm-ppo"), default="grpo")
    parser.set_defaults(rounds=8)  # timed rounds per side
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 2 rounds: checks the pipeline only")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    settings = parser.parse_args(argv)
    if settings.smoke:
        settings.model, settings.rounds, settings.train_layers = textenv.TINY_MODEL, 2, 1
    settings.eval_samples = 1
    torch.set_num_threads(settings.threads)
    results = compare(settings)
    print_report(results)
    if settings.json:
        settings.json.parent.mkdir(parents=True, exist_ok=True)
        settings.json.write_text(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
