"""Compare stable-baselines3 / sb3-contrib algorithms on one textenv task: same env, same seeds, same budget.

Prints a table (algorithm, steps, seeds, random-policy mean, final mean per seed, wall time per run) and writes
a learning-curve PNG and the raw numbers (JSON, rewritten after each algorithm) to ``--out``.

    python -m experiments.sb3_comparison.compare_sb3            # all seven on MossWords-v0, 20k steps, 3 seeds
    python -m experiments.sb3_comparison.compare_sb3 --algos ppo dqn --seeds 0 1 --steps 10000
    python -m experiments.sb3_comparison.compare_sb3 --budget-to-learn --seeds 0 1 2 3 4   # MOSS_WORDS_STEPS each

Every algorithm gets the same ``--steps`` (default 20,000), so the curves and final means compare at one
budget. ``--budget-to-learn`` instead gives each the budget in which all of seeds 0-4 learn
(``agents.sb3.evaluation.MOSS_WORDS_STEPS``, what tests/test_sb3_learning.py asserts).

"Final mean" is the mean reward of the last ``--last`` training episodes of each run (exploration on, as
in training), averaged over seeds; "random" is a uniformly random policy on the same env and seeds. Wall time
and CPU time are ``learn()`` alone, one torch thread; on a shared machine CPU time is the one to compare.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


import gymnasium as gym
import numpy as np
import torch

import textenv  # noqa: F401  (registers the ids)
from agents.sb3.evaluation import MOSS_WORDS_STEPS, random_policy_rewards, train_and_record
from agents.sb3.factory import ALGORITHMS, VEC_ENVS

MATCHED_STEPS = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="MossWords-v0")
    parser.add_argument("--algos", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=MATCHED_STEPS, help="steps per run, the same for every algorithm")
    parser.add_argument("--budget-to-learn", action="store_true",
                        help="give each algorithm its own MOSS_WORDS_STEPS budget instead of --steps")
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--vec-env", default="native", choices=VEC_ENVS, help="how make_sb3 vectorises the env")
    parser.add_argument("--last", type=int, default=200, help="episodes averaged for the final mean")
    parser.add_argument("--random-episodes", type=int, default=2000)
    parser.add_argument("--bins", type=int, default=10, help="points per learning curve")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("runs/compare_sb3"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    env = gym.make(args.env)
    random_means = [random_policy_rewards(env, args.random_episodes, seed=s).mean() for s in args.seeds]
    random_mean = float(np.mean(random_means))
    print(f"{args.env}: random policy mean reward {random_mean:.3f} ({args.random_episodes} episodes x "
          f"{len(args.seeds)} seeds)", flush=True)

    results: dict[str, dict] = {}
    summary = {"env": args.env, "random_mean": random_mean, "random_means": random_means, "results": results,
               "budget": "to learn" if args.budget_to_learn else "matched", "n_envs": args.n_envs,
               "vec_env": args.vec_env, "last": args.last, "date": time.strftime("%Y-%m-%d %H:%M")}
    for algo in args.algos:
        steps = MOSS_WORDS_STEPS[algo] if args.budget_to_learn else args.steps
        runs = []
        for seed in args.seeds:
            run = train_and_record(algo, args.env, steps, seed=seed, n_envs=args.n_envs, vec_env=args.vec_env)
            final = run.recorder.last_mean(args.last)
            ends, curve = run.recorder.curve(args.bins, steps)
            print(f"  {algo:14s} seed {seed}: final {final:.3f} in {run.seconds:5.1f} s wall, "
                  f"{run.cpu_seconds:5.1f} s CPU  curve {np.round(curve, 2).tolist()}", flush=True)
            runs.append({"seed": seed, "final": final, "seconds": run.seconds, "cpu_seconds": run.cpu_seconds,
                         "curve": curve.tolist(), "ends": ends.tolist()})
        results[algo] = {"steps": steps, "runs": runs}
        (args.out / "results.json").write_text(json.dumps(summary, indent=1))

    print()
    header = (f"| {'algorithm':14s} | {'steps':>6s} | seeds | random mean | final mean (per seed) | "
              "wall s/run | CPU s/run |")
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for algo, result in results.items():
        finals = [r["final"] for r in result["runs"]]
        per_seed = ", ".join(f"{f:.2f}" for f in finals)
        seconds = np.mean([r["seconds"] for r in result["runs"]])
        cpu_seconds = np.mean([r["cpu_seconds"] for r in result["runs"]])
        print(
            f"| {algo:14s} | {result['steps']:6d} | {len(finals):5d} | {random_mean:11.3f} | "
            f"{np.mean(finals):.3f} ({per_seed}) | {seconds:10.1f} | {cpu_seconds:9.1f} |"
        )

    plot(results, random_mean, args.env, args.out / "learning_curves.png")
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'learning_curves.png'}")


def plot(results: dict[str, dict], random_mean: float, env_id: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for algo, result in results.items():
        ends = np.asarray(result["runs"][0]["ends"])
        curves = np.array([r["curve"] for r in result["runs"]], dtype=float)
        mean = np.nanmean(curves, axis=0)
        ax.plot(ends, mean, marker="o", markersize=3, label=algo)
        if len(curves) > 1:
            ax.fill_between(ends, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), alpha=0.15)
    ax.axhline(random_mean, color="gray", linestyle="--", label="random policy")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean episode reward (training episodes)")
    budgets = sorted({result["steps"] for result in results.values()})
    budget = f"{budgets[0]:,} steps each" if len(budgets) == 1 else "budget per algorithm"
    ax.set_title(f"{env_id}: SB3 / sb3-contrib, {budget}, mean over seeds (band: min-max)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
