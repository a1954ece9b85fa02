"""Fair comparison of agents: every (agent, seed) pair on the same env and budget, then statistics and plots.

Each pair runs as its own process (``python -m agents train ...``) in ``<out>/runs/<agent>/seed<k>``, at
most ``jobs`` at a time; a pair whose ``summary.json`` says ``"done"`` is skipped, so a rerun only runs what
is missing. Statistics across seeds follow Agarwal et al. (2021, "Deep RL at the Edge of the Statistical
Precipice"): the interquartile mean (IQM) of the per-seed final mean rewards, with a 95% percentile
bootstrap confidence interval.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from agents.checkpoint import claim_output_dir
from agents.runs.runner import COMMAND as RUN_COMMAND
from agents.runs.runner import RUN_FILE, read_curve, read_summary

COMMAND = "compare"  # the command whose output folder a comparison is (agents.checkpoint.claim_output_dir)
COMPARE_FILE = "compare.json"
SUMMARY_MD = "summary.md"
SUMMARY_CSV = "summary.csv"
CURVES_PNG = "learning_curves.png"


@dataclass(frozen=True)
class Pair:
    agent: str
    seed: int
    out_dir: Path

    @property
    def done(self) -> bool:
        summary = read_summary(self.out_dir)
        return bool(summary) and summary.get("status") == "done"


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (with fractional weights at the edges)."""
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0:
        return math.nan
    # weight each sorted value by its overlap with the quantile range [n/4, 3n/4]
    lo, hi = n / 4, 3 * n / 4
    edges = np.arange(n)
    weights = np.clip(np.minimum(edges + 1, hi) - np.maximum(edges, lo), 0, 1)
    return float((weights * x).sum() / weights.sum())


def bootstrap_ci(
    values: Sequence[float], statistic: Any = iqm, confidence: float = 0.95, samples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` over ``values`` (resampled with replacement)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(x[rng.integers(0, x.size, x.size)]) for _ in range(samples)])
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def run_pairs(
    pairs: list[Pair], train_args: list[str], jobs: int = 1, progress_bar: bool = True,
    agent_kwargs: dict[str, list[str]] | None = None,
) -> list[Pair]:
    """Run the pairs not done yet in parallel processes; return the pairs that failed. ``agent_kwargs``: each
    agent's ``--agent-kwargs`` KEY=VALUE pairs.

    On Ctrl-C the running processes are stopped (each saves its checkpoint and marks itself interrupted).
    """
    from tqdm.auto import tqdm

    todo = [pair for pair in pairs if not pair.done]
    failed: list[Pair] = []
    running: dict[Pair, tuple[subprocess.Popen, IO[str]]] = {}  # each run and its open train.log
    bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), unit="run", desc="compare", disable=not progress_bar)
    try:
        while todo or running:
            while todo and len(running) < jobs:
                pair = todo.pop(0)
                # the run's folder (inside this comparison's) is a `train` output; one an older version left with
                # only its train.log is one too
                claim_output_dir(pair.out_dir, RUN_COMMAND, markers=(RUN_FILE, "train.log"))
                command = [
                    sys.executable, "-m", "agents", "train", "--agent", pair.agent, "--seed", str(pair.seed),
                    "--out", str(pair.out_dir), "--no-progress", *train_args,
                ]
                own = (agent_kwargs or {}).get(pair.agent)
                if own:
                    command += ["--agent-kwargs", *own]
                log = (pair.out_dir / "train.log").open("w")
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(jobs))
                running[pair] = (process, log)
            time.sleep(0.2)
            for pair, (process, log) in list(running.items()):
                if process.poll() is not None:
                    del running[pair]
                    log.close()
                    if process.returncode != 0:
                        failed.append(pair)
                    bar.update(1)
    except KeyboardInterrupt:
        for process, _ in running.values():
            process.send_signal(signal.SIGINT)  # the run saves a checkpoint and writes an "interrupted" summary
        for process, log in running.values():
            process.wait()
            log.close()
        raise
    finally:
        bar.close()
    return failed


def _child_env(jobs: int) -> dict[str, str]:
    """Split the cores between the parallel runs: torch's OpenMP threads spin while they wait, so
    oversubscribed cores slow small matrix products down by an order of magnitude (a SmolLM2 decode step
    takes 4 s with 2 threads per process on 2 busy cores, 0.14 s with 1)."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def summarize(pairs: list[Pair], out_dir: Path, env_id: str, budget: int) -> list[dict[str, Any]]:
    """Write ``summary.md``, ``summary.csv`` and ``learning_curves.png``; return the table rows."""
    agents = list(dict.fromkeys(pair.agent for pair in pairs))
    rows = []
    for agent in agents:
        summaries = [read_summary(p.out_dir) for p in pairs if p.agent == agent]
        done = [s for s in summaries if s and s.get("status") == "done"]
        finals = [s["final_mean_reward"] for s in done]
        low, high = bootstrap_ci(finals)
        rows.append(
            {
                "agent": agent,
                "seeds_done": f"{len(done)}/{len(summaries)}",
                "final_mean_reward": float(np.mean(finals)) if finals else math.nan,
                "iqm": iqm(finals),
                "ci95_low": low,
                "ci95_high": high,
                "steps_per_second": float(np.mean([s["steps_per_second"] for s in done])) if done else math.nan,
                "wall_seconds": float(np.sum([s["wall_seconds"] for s in done])) if done else math.nan,
            }
        )
    fields = list(rows[0]) if rows else []
    with (out_dir / SUMMARY_CSV).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / SUMMARY_MD).write_text(_markdown(rows, pairs, env_id, budget))
    plot_curves(pairs, out_dir / CURVES_PNG, title=f"{env_id}, {budget} steps")
    return rows


def _markdown(rows: list[dict[str, Any]], pairs: list[Pair], env_id: str, budget: int) -> str:
    finished = sum(p.done for p in pairs)
    lines = [f"# {env_id}: {budget} steps per run, {finished}/{len(pairs)} runs finished", ""]
    if finished < len(pairs):
        lines += ["**PARTIAL**: some runs are unfinished or failed; rerun the same command to complete them.", ""]
    lines += [
        "| agent | seeds | final mean reward | IQM | 95% CI (IQM, bootstrap) | steps/s | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['agent']} | {row['seeds_done']} | {row['final_mean_reward']:+.3f} | {row['iqm']:+.3f} | "
            f"[{row['ci95_low']:+.3f}, {row['ci95_high']:+.3f}] | {row['steps_per_second']:.0f} | "
            f"{row['wall_seconds']:.1f} |"
        )
    lines += [
        "",
        "Final mean reward: mean reward of the episodes in the last 10% of each run's steps, averaged over seeds.",
    ]
    return "\n".join(lines) + "\n"


def plot_curves(pairs: list[Pair], path: Path, title: str = "", points: int = 50) -> None:
    """Mean learning curve per agent over seeds, with a 95% bootstrap band, on a common step grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for agent in dict.fromkeys(pair.agent for pair in pairs):
        curves = [read_curve(p.out_dir) for p in pairs if p.agent == agent]
        curves = [c for c in curves if len(c) >= 1]
        if not curves:
            continue
        end = min(c[-1]["timesteps"] for c in curves)
        start = max(c[0]["timesteps"] for c in curves)
        grid = np.linspace(start, end, points) if end > start else np.array([end])
        ys = np.array(
            [np.interp(grid, [r["timesteps"] for r in c], _smooth([r["reward_mean"] for r in c])) for c in curves]
        )
        mean = ys.mean(0)
        ax.plot(grid, mean, label=f"{agent} ({len(curves)} seeds)")
        if len(curves) > 1:
            bands = np.array([bootstrap_ci(ys[:, i], statistic=np.mean, samples=500) for i in range(grid.size)])
            ax.fill_between(grid, bands[:, 0], bands[:, 1], alpha=0.2)
    ax.set_xlabel("environment steps (tokens)")
    ax.set_ylabel("episode reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _smooth(values: list[float], window: int = 5) -> np.ndarray:
    """Trailing moving average (the raw windows are noisy)."""
    x = np.asarray(values, dtype=float)
    cumulative = np.cumsum(np.insert(x, 0, 0.0))
    counts = np.minimum(np.arange(1, x.size + 1), window)
    return (cumulative[1:] - cumulative[np.maximum(np.arange(1, x.size + 1) - window, 0)]) / counts


def compare(
    env_id: str,
    agents: list[str],
    seeds: int,
    budget: int,
    out_dir: str | os.PathLike,
    jobs: int = 1,
    train_args: list[str] | None = None,
    progress_bar: bool = True,
    agent_kwargs: dict[str, list[str]] | None = None,
) -> tuple[list[dict[str, Any]], list[Pair]]:
    """Run every (agent, seed) pair (skipping finished ones) and write the summary; return rows and failures.
    ``train_args`` go to every run; ``agent_kwargs`` holds each agent's ``--agent-kwargs`` KEY=VALUE pairs.

    Raises:
        agents.checkpoint.OutputDirError: ``out_dir`` is a file, or a folder holding anything but an earlier
            comparison (nothing is written).
    """
    out = claim_output_dir(out_dir, COMMAND, markers=(COMPARE_FILE,))
    pairs = [Pair(agent, seed, out / "runs" / agent / f"seed{seed}") for agent in agents for seed in range(seeds)]
    (out / COMPARE_FILE).write_text(
        json.dumps(
            {"env": env_id, "agents": agents, "seeds": seeds, "budget": budget, "agent_kwargs": agent_kwargs or {}},
            indent=2,
        )
    )
    args = ["--env", env_id, "--steps", str(budget), *(train_args or [])]
    try:
        failed = run_pairs(pairs, args, jobs=jobs, progress_bar=progress_bar, agent_kwargs=agent_kwargs)
    finally:  # also on Ctrl-C: the table of what finished, marked partial
        rows = summarize(pairs, out, env_id, budget)
    return rows, failed
