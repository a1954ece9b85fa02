"""Asynchronous actor-learner against synchronous GRPO on 2 CPU cores: wall seconds to a held-out reward, and
the held-out reward at matched rounds (the off-policy cost).

The setup is the RLHF example's (``experiments.rlhf_common``, its defaults: SmolLM2-135M-Instruct, top 8 blocks
trained, GRPO, 16 completions per round, k = 4, 4 optimiser steps, lr 2e-4, beta 0.04, reward ``sentiment + 1.0 *
repetition + 0.5 * fluency``). One run is one ``--mode`` and one ``--seed``, in its own process:

* ``async``: ``async_rollouts=True``: the actor process and the learner, one thread each;
* ``async-actor``: the same with ``experimental.async_old_logprobs="actor"`` (no proximal forward in the learner);
* ``sync2``: the synchronous trainer with 2 threads in one process (the fair baseline: both cores);
* ``sync1``: the synchronous trainer with 1 thread (one core idles).

Every ``--eval-every`` rounds a callback saves the policy's trained weights (to ``OUT/snapshots``; nothing else
runs then) and records the wall seconds and CPU seconds (learner and actor) since training began; after training,
each snapshot is scored (``--score RUN_DIR`` resumes an interrupted scoring) on the 40 held-out prompts
(``builtin:test``, ``--eval-samples`` completions each, sampling seed 1234):
mean VADER compound and KL to the untuned model. So no evaluation runs while the clock runs, in either mode.

    # one run, trained (nothing else running on the machine), then scored
    .venv/bin/python -m experiments.async_rollouts.compare --mode async --seed 0 --out runs/async_rollouts --no-score
    .venv/bin/python -m experiments.async_rollouts.compare --score runs/async_rollouts/async_seed0
    # the table from every run in a directory
    .venv/bin/python -m experiments.async_rollouts.compare --summarise runs/async_rollouts
    .venv/bin/python -m experiments.async_rollouts.compare --mode async --smoke --out /tmp/ar   # tiny model, seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import textenv
from agents.lm.callbacks import Callback
from agents.runs.machine import cpu_info
from experiments.rlhf_common import build_parser, evaluate, make_trainer

# mode -> (the config's async settings, torch threads)
MODES: dict[str, tuple[dict[str, Any], int]] = {
    "async": ({"async_rollouts": True}, 1),
    "async-actor": ({"async_rollouts": True, "experimental": {"async_old_logprobs": "actor"}}, 1),
    "sync2": ({"async_rollouts": False}, 2),
    "sync1": ({"async_rollouts": False}, 1),
}
ROUND_KEYS = (
    "iteration_seconds", "generation_seconds", "env_seconds", "forward_seconds", "proximal_forward_seconds",
    "update_seconds", "actor_wait_seconds", "weight_sync_seconds", "actor_weight_load_seconds",
    "importance_weight_mean", "importance_weight_max", "importance_weight_clipped_fraction", "reward_mean",
)
TARGETS = (0.5, 0.6, 0.7, 0.8)  # held-out VADER levels whose first reach is timed


class Snapshots(Callback):
    """Every ``every`` rounds (and at round 0): the policy's trained weights saved to ``directory``, the wall and
    CPU seconds since training began (the actor's CPU read from /proc while it runs), the CPU seconds every other
    process on the machine used meanwhile, the load average; and every round's metrics."""

    def __init__(self, every: int, directory: Path) -> None:
        self.every, self.directory = every, directory
        self.points: list[dict[str, Any]] = []
        self.rounds: list[dict[str, float]] = []

    def on_train_begin(self, trainer: Any) -> None:
        self.wall, self.cpu, self.machine = time.perf_counter(), time.process_time(), machine_busy_seconds()
        self.actor = trainer.rollout_actor
        self._take(trainer)

    def on_iteration_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        self.rounds.append({key: metrics[key] for key in ROUND_KEYS if key in metrics})
        if trainer.iteration % self.every == 0:
            self._take(trainer)

    def on_train_end(self, trainer: Any) -> None:
        if self.points[-1]["round"] != trainer.iteration:
            self._take(trainer)

    def _take(self, trainer: Any) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        actor_cpu = process_cpu_seconds(self.actor.pid) if self.actor is not None else 0.0
        self.directory.mkdir(parents=True, exist_ok=True)
        save_file({n: p.detach().contiguous() for n, p in trainer.unwrapped_policy.named_parameters()
                   if p.requires_grad}, str(self.path(trainer.iteration)))
        others = machine_busy_seconds() - self.machine - cpu - actor_cpu
        self.points.append({"round": trainer.iteration, "wall_seconds": wall, "learner_cpu_seconds": cpu,
                            "actor_cpu_seconds": actor_cpu, "cpu_seconds": cpu + actor_cpu,
                            "others_cpu_seconds": max(others, 0.0), "load_average": os.getloadavg()[0]})

    def path(self, round_: int) -> Path:
        return self.directory / f"round{round_:04d}.safetensors"


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (Linux /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def train(settings: argparse.Namespace) -> dict[str, Any]:
    """Train one run; its results without held-out scores (the snapshots wait in ``run_dir/snapshots``)."""
    overrides, threads = MODES[settings.mode]
    torch.set_num_threads(threads)
    args = build_parser().parse_args(["--seed", str(settings.seed), "--model", settings.model,
                                      *(["--train-layers", "1", "--num-envs", "4", "--generations", "2",
                                         "--minibatches", "2"] if settings.smoke else [])])
    trainer, _ = make_trainer(args, output_dir=None, config_overrides=overrides)
    snapshots = Snapshots(settings.eval_every, settings.run_dir / "snapshots")
    trainer.train(settings.rounds, callbacks=[snapshots])
    trainer.close()
    return {"mode": settings.mode, "seed": settings.seed, "threads": threads, **overrides,
            "model": settings.model, "eval_samples": settings.eval_samples, "cpu": cpu_info(),
            "settings": {k: str(v) for k, v in vars(settings).items()}, "curve": snapshots.points,
            "rounds": snapshots.rounds}


def score(run_dir: Path) -> None:
    """Score every snapshot of ``run_dir`` not scored yet on the held-out prompts (untimed), saving
    ``results.json`` after each; a scored snapshot is deleted. Resumable: run it again after an interruption. A
    point whose snapshot is not in ``run_dir/snapshots`` (moved aside to score fewer rounds) stays unscored, and
    the summary leaves it out."""
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text())
    pending = [point for point in results["curve"] if "held_out_vader" not in point
               and (run_dir / "snapshots" / f"round{point['round']:04d}.safetensors").is_file()]
    if not pending:
        return
    reference = textenv.load_causal_lm(results["model"])
    policy = textenv.load_causal_lm(results["model"])
    parameters = dict(policy.named_parameters())
    with torch.no_grad():
        for point in pending:
            path = run_dir / "snapshots" / f"round{point['round']:04d}.safetensors"
            for name, value in load_file(str(path)).items():
                parameters[name].copy_(value)
            result = evaluate(policy, reference, results["eval_samples"], seed=1234, temperature=1.0)
            point.update(held_out_vader=result["sentiment_mean"], kl_to_reference=result["kl_to_reference"])
            results_path.write_text(json.dumps(results, indent=1))
            path.unlink()
            print(f"{results['mode']} seed {results['seed']} round {point['round']:3d}  {point['wall_seconds']:7.1f} s"
                  f"  held-out VADER {point['held_out_vader']:+.3f}", flush=True)


# -- summary ---------------------------------------------------------------------------------------------------
def first_reach(curve: list[dict[str, Any]], target: float) -> float | None:
    """Wall seconds at the first evaluated round whose held-out VADER reaches ``target``."""
    return next((p["wall_seconds"] for p in curve if p["held_out_vader"] >= target), None)


def scored(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [point for point in curve if "held_out_vader" in point]


def mean_curve(runs: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The seed-mean curve over the rounds every run evaluated."""
    rounds = sorted(set.intersection(*({p["round"] for p in scored(r["curve"])} for r in runs)))
    by_round = [{p["round"]: p for p in scored(r["curve"])} for r in runs]
    return [{"round": n, **{key: statistics.mean(b[n][key] for b in by_round)
                            for key in ("wall_seconds", "cpu_seconds", "held_out_vader", "kl_to_reference")}}
            for n in rounds]


def summarise(directory: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("*/results.json")):
        result = json.loads(path.read_text())
        runs.setdefault(result["mode"], []).append(result)
    summary: dict[str, Any] = {"modes": {}, "ratios": {}}
    for mode, results in runs.items():
        rows = [row for r in results for row in r["rounds"][1:]]  # round 0 of async samples without overlap
        curve = mean_curve(results)
        summary["modes"][mode] = {
            "seeds": [r["seed"] for r in results],
            "median_round_seconds": statistics.median(row["iteration_seconds"] for row in rows),
            "cpu_seconds_per_round": statistics.mean(r["curve"][-1]["cpu_seconds"] / r["curve"][-1]["round"]
                                                     for r in results),
            "mean_load_average": statistics.mean(p["load_average"] for r in results for p in r["curve"]),
            "others_share_of_machine": statistics.mean(r["curve"][-1].get("others_cpu_seconds", math.nan)
                                                       / (os.cpu_count() * r["curve"][-1]["wall_seconds"])
                                                       for r in results),
            **{f"median_{key}": statistics.median(row[key] for row in rows) for key in ROUND_KEYS[1:]
               if all(key in row for row in rows)},
            "seconds_to_target": {str(t): {str(r["seed"]): first_reach(scored(r["curve"]), t) for r in results}
                                  for t in TARGETS},
            "seed_mean_seconds_to_target": {str(t): first_reach(curve, t) for t in TARGETS},
            "seed_mean_curve": curve,
        }
    for fast, baseline in itertools.product(("async", "async-actor"), ("sync2", "sync1")):
        if fast not in runs or baseline not in runs:
            continue
        a, b = summary["modes"][fast], summary["modes"][baseline]
        summary["ratios"][f"{fast}_to_{baseline}"] = {
            "round_seconds": a["median_round_seconds"] / b["median_round_seconds"],
            "seed_mean_seconds_to_target": {t: _ratio(a["seed_mean_seconds_to_target"][t],
                                                      b["seed_mean_seconds_to_target"][t]) for t in map(str, TARGETS)},
            "per_seed_seconds_to_target": {t: {s: _ratio(a["seconds_to_target"][t].get(s),
                                                         b["seconds_to_target"][t].get(s))
                                               for s in b["seconds_to_target"][t]} for t in map(str, TARGETS)},
        }
    return summary


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def print_summary(summary: dict[str, Any]) -> None:
    modes = summary["modes"]
    print(f"{'':32}" + "".join(f"{mode:>12}" for mode in modes))
    for key in ("median_round_seconds", "cpu_seconds_per_round", "mean_load_average", "others_share_of_machine"):
        print(f"{key:32}" + "".join(f"{modes[m][key]:>12.2f}" for m in modes))
    rounds = [p["round"] for p in next(iter(modes.values()))["seed_mean_curve"]]
    for n in rounds:
        values = [next((p["held_out_vader"] for p in modes[m]["seed_mean_curve"] if p["round"] == n), float("nan"))
                  for m in modes]
        print(f"{'held-out VADER, round ' + str(n):32}" + "".join(f"{v:>12.3f}" for v in values))
    print(json.dumps(summary["ratios"], indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=48)
    parser.add_argument("--eval-every", type=int, default=3, help="rounds between weight snapshots")
    parser.add_argument("--eval-samples", type=int, default=2, help="completions per held-out prompt")
    parser.add_argument("--model", default=textenv.DEFAULT_MODEL)
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 2 rounds: checks the pipeline only")
    parser.add_argument("--out", type=Path, default=Path("runs/async_rollouts"))
    parser.add_argument("--summarise", type=Path, metavar="DIR", help="summarise the runs in DIR and exit")
    parser.add_argument("--score", type=Path, metavar="RUN_DIR", help="score a run's snapshots not scored yet")
    parser.add_argument("--no-score", action="store_true", help="train only (score later with --score)")
    settings = parser.parse_args(argv)
    if settings.score is not None:
        score(settings.score)
        return
    if settings.summarise is not None:
        summary = summarise(settings.summarise)
        (settings.summarise / "summary.json").write_text(json.dumps(summary, indent=1))
        print_summary(summary)
        return
    if settings.mode is None:
        parser.error("--mode or --summarise is needed")
    if settings.smoke:
        settings.model, settings.rounds, settings.eval_every, settings.eval_samples = textenv.TINY_MODEL, 2, 1, 1
    settings.run_dir = settings.out / f"{settings.mode}_seed{settings.seed}"
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    (settings.run_dir / "results.json").write_text(json.dumps(train(settings), indent=1))
    if not settings.no_score:
        score(settings.run_dir)


if __name__ == "__main__":
    main()
