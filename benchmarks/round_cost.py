"""What one switch saves per round of RLHF training, measured side by side.

Two trainers of ``examples/rlhf_sentiment.py``'s setup (the time-to-target run's: SmolLM2, top 8 blocks trained,
16 completions, k = 4, 4 optimiser steps per round, beta 0.04), the same seed, differing only in ``--switch``:

* ``share_frozen_trunk`` (default): the trainer's frozen-trunk path (what it picks by itself: the 22 frozen blocks'
  output is kept while sampling, and the reference forward, each loss forward and LM-PPO's value forwards run only
  the top 8) against the full forwards, forced with the study switch ``experimental={"share_frozen_trunk": False}``
  (every forward runs all 30 blocks). Sides ``shared`` and ``full``.
* ``fluency_source``: the fluency term read from the trainer's reference forward (``--fluency-source reference``,
  the example's default: ``reference_fluency_weight``) against the env's ``fluency`` plugin, which runs its own copy
  of the untuned model over the re-tokenised text (``--fluency-source plugin``). Sides ``reference`` and ``plugin``.

One untimed warm-up round each, then ``--rounds`` rounds of each, interleaved (A, B, A, B, ...), so both see the
same machine load; ratios are of the medians. Reported per side: the round's wall seconds, its process CPU
seconds, and the trainer's own time breakdown (generation, env and reward, reference and value forwards, update).

    .venv/bin/python benchmarks/round_cost.py                             # the trunk, SmolLM2, ~6 min, one thread
    .venv/bin/python benchmarks/round_cost.py --agent lm-ppo              # LM-PPO (policy, reference and critic)
    .venv/bin/python benchmarks/round_cost.py --switch fluency_source     # where the fluency term comes from
    .venv/bin/python benchmarks/round_cost.py --smoke                     # tiny model, seconds
"""

from __future__ import annotations

import argparse
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
from agents.runs.machine import cpu_info  # noqa: E402
from benchmarks.rlhf_time_to_target import add_run_arguments, example_args, write_results  # noqa: E402
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


# switch -> (side A, side B): each side's name, its example flags and its config overrides (the full-forward side
# turns the trainer's frozen-trunk path off through the config's study switches)
SWITCHES: dict[str, tuple[tuple[str, list[str], dict[str, Any]], tuple[str, list[str], dict[str, Any]]]] = {
    "share_frozen_trunk": (("shared", [], {}), ("full", [], {"experimental": {"share_frozen_trunk": False}})),
    "fluency_source": (("reference", ["--fluency-source", "reference"], {}),
                       ("plugin", ["--fluency-source", "plugin"], {})),
}
HEADERS = {"shared": "trunk shared", "full": "full forwards", "reference": "from reference", "plugin": "from plugin"}


def compare(settings: argparse.Namespace) -> dict[str, Any]:
    sides = SWITCHES[settings.switch]
    trainers = {}
    for name, flags, overrides in sides:
        args = build_parser().parse_args([*example_args(settings, settings.agent), *flags])
        trainers[name] = make_trainer(args, output_dir=None, config_overrides=overrides)[0]
    for trainer in trainers.values():
        one_round(trainer)  # warm-up; the shared side's first round also runs its exactness check
    if settings.switch == "share_frozen_trunk" and trainers["shared"].shared_trunk_blocks == 0:
        raise SystemExit("the frozen trunk is not shared in this setup (nothing frozen, or the check failed)")
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trainers}
    for _ in range(settings.rounds):
        for name, trainer in trainers.items():
            rounds[name].append(one_round(trainer))
    medians = {name: {part: statistics.median(r[part] for r in rows) for part in PARTS}
               for name, rows in rounds.items()}
    for trainer in trainers.values():
        trainer.close()
    first, second = (side[0] for side in sides)
    return {
        "settings": vars(settings),
        "cpu": cpu_info(),
        "medians": medians,
        f"ratio_{first}_to_{second}": {part: medians[first][part] / medians[second][part] for part in PARTS
                                        if medians[second][part] > 0},
        "rounds": rounds,
    }


def print_report(results: dict[str, Any]) -> None:
    first, second = results["medians"]
    a, b, ratio = results["medians"][first], results["medians"][second], results[f"ratio_{first}_to_{second}"]
    settings = results["settings"]
    print(f"\n{settings['agent']}, {settings['model']}, top {settings['train_layers']} blocks trained; medians of "
          f"{settings['rounds']} interleaved rounds per side")
    print(f"{'seconds per round':<22}{HEADERS[first]:>16}{HEADERS[second]:>16}{'ratio':>8}")
    for part in PARTS:
        print(f"{part:<22}{a[part]:>16.2f}{b[part]:>16.2f}{ratio.get(part, float('nan')):>7.2f}x")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--agent", choices=("grpo", "lm-ppo"), default="grpo")
    parser.add_argument("--switch", choices=sorted(SWITCHES), default="share_frozen_trunk",
                        help="what differs between the two sides")
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
    write_results(settings.json, results)
    return results


if __name__ == "__main__":
    main()
