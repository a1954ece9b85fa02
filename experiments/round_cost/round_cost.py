"""What one switch saves per round of RLHF training, measured side by side.

Two trainers of :mod:`experiments.rlhf_common`'s setup (the time-to-target run's: SmolLM2, top 8 blocks trained,
16 completions, k = 4, 4 optimiser steps per round, beta 0.04), the same seed, differing only in ``--switch``:

* ``share_frozen_trunk`` (default): ``share_frozen_trunk=True`` (the default: the 22 frozen blocks' output is kept
  while sampling, and the reference forward, each loss forward and LM-PPO's value forwards run only the top 8)
  against ``False`` (every forward runs all 30 blocks). Sides ``shared`` and ``full``.
* ``fluency_source``: the fluency term read from the trainer's reference forward (``--fluency-source reference``,
  the studies' default: ``reference_fluency_weight``) against the env's ``fluency`` plugin, which runs its own copy
  of the untuned model over the re-tokenised text (``--fluency-source plugin``). Sides ``reference`` and ``plugin``.

One untimed warm-up round each, then ``--rounds`` rounds of each, interleaved (A, B, A, B, ...), so both see the
same machine load; ratios are of the medians. Reported per side: the round's wall seconds, its process CPU
seconds, and the trainer's own time breakdown (generation, env and reward, reference and value forwards, update).

    python -m experiments.round_cost.round_cost                             # the trunk, SmolLM2, ~6 min, one thread
    python -m experiments.round_cost.round_cost --fluency-source plugin     # the trunk, fluency from the env's plugin
    python -m experiments.round_cost.round_cost --agent lm-ppo              # LM-PPO (policy, reference and critic)
    python -m experiments.round_cost.round_cost --switch fluency_source     # where the fluency term comes from
    python -m experiments.round_cost.round_cost --smoke                     # tiny model, seconds
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from agents.lm.callbacks import Callback
from agents.runs.machine import cpu_info
from experiments.rlhf_common import build_parser, example_args, make_trainer, parse_round_settings, write_results

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


# switch -> (side A, side B): each side's name, its example flags and its config overrides
SWITCHES: dict[str, tuple[tuple[str, list[str], dict[str, Any]], tuple[str, list[str], dict[str, Any]]]] = {
    "share_frozen_trunk": (("shared", [], {"share_frozen_trunk": True}), ("full", [], {"share_frozen_trunk": False})),
    "fluency_source": (("reference", ["--fluency-source", "reference"], {}),
                       ("plugin", ["--fluency-source", "plugin"], {})),
}
HEADERS = {"shared": "trunk shared", "full": "full forwards", "reference": "from reference", "plugin": "from plugin"}


def compare(settings: argparse.Namespace) -> dict[str, Any]:
    sides = SWITCHES[settings.switch]
    trainers = {}
    for name, flags, overrides in sides:
        fluency = ["--fluency-source", settings.fluency_source]  # both sides alike; a side's own flags win
        args = build_parser().parse_args([*example_args(settings, settings.agent), *fluency, *flags])
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
    parser.add_argument("--agent", choices=("grpo", "lm-ppo"), default="grpo")
    parser.add_argument("--switch", choices=sorted(SWITCHES), default="share_frozen_trunk",
                        help="what differs between the two sides")
    parser.add_argument("--fluency-source", choices=("reference", "plugin"), default="reference",
                        help="where both sides read the fluency term (the fluency_source switch sets it per side)")
    settings = parse_round_settings(parser, argv, rounds=8, smoke_rounds=2)  # rounds: timed rounds per side
    settings.eval_samples = 1
    results = compare(settings)
    print_report(results)
    write_results(settings.json, results)
    return results


if __name__ == "__main__":
    main()
