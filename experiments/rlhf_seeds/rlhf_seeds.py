"""``rlhf_sentiment.py`` over several seeds: one process per seed, ``--parallel`` at a time, then the mean, standard
deviation and range of every held-out figure, with the CPU each run saw.

Every argument after ``--`` goes to ``rlhf_sentiment.py`` unchanged (each seed adds ``--seed S --out OUT/seedS``).
The default run is one thread per process (``OMP_NUM_THREADS=1``), so two seeds at once on 2 cores give each the
core a lone run would have; a third waits.

    python -m experiments.rlhf_seeds.rlhf_seeds --seeds 0 1 2 --parallel 2 --out runs/rlhf_seeds -- --minutes 20
    python -m experiments.rlhf_seeds.rlhf_seeds --seeds 0 1 --out /tmp/seeds -- --model tiny-random-smollm2 \\
        --max-iterations 2
    python -m experiments.rlhf_seeds.rlhf_seeds --summarise-only --out runs/rlhf_seeds   # runs already made

Writes ``OUT/summary.json`` and prints a markdown table.
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

from experiments.rlhf_common import start_module

RUN = "experiments.rlhf_seeds.rlhf_sentiment"
FIGURES = {  # summary name -> path in a run's results.json
    "held_out_vader_before": ("before", "sentiment_mean"),
    "held_out_vader": ("after", "sentiment_mean"),
    "kl_to_reference": ("after", "kl_to_reference"),
    "perplexity_after": ("after", "perplexity_under_reference"),
    "perplexity_ratio": ("perplexity_ratio",),
    "distinct_2_per_completion": ("after", "distinct_2_per_completion"),
    "distinct_2_all": ("after", "distinct_2_all"),
    "top_4gram_share": ("after", "top_4gram_share"),
    "iterations": ("iterations",),
    "train_minutes": ("train_minutes",),
}


def run_seeds(seeds: list[int], parallel: int, out: Path, run_args: list[str]) -> None:
    """Run ``rlhf_sentiment.py`` once per seed, at most ``parallel`` processes at a time; stop at the first failure."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    pending, running = list(seeds), {}
    while pending or running:
        while pending and len(running) < parallel:
            seed = pending.pop(0)
            log = open(out / f"seed{seed}.log", "w")  # noqa: SIM115 - closed when the process ends
            arguments = [*run_args, "--seed", str(seed), "--out", str(out / f"seed{seed}")]
            running[seed] = (start_module(RUN, arguments, stdout=log, stderr=subprocess.STDOUT, env=env), log)
            print(f"seed {seed}: started", flush=True)
        for seed, (process, log) in list(running.items()):
            if process.poll() is not None:
                log.close()
                del running[seed]
                if process.returncode != 0:
                    for other, _ in running.values():
                        other.terminate()
                    raise SystemExit(f"seed {seed} failed (exit {process.returncode}); see {out / f'seed{seed}.log'}")
                print(f"seed {seed}: done", flush=True)
        time.sleep(1.0)


def figure(results: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = results
    for key in path:
        value = value[key]
    return float(value)


def summarise(out: Path) -> dict[str, Any]:
    """Mean, standard deviation (n-1) and range of every figure over the seed runs found in ``out``."""
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("seed*/results.json"))}
    if not runs:
        raise SystemExit(f"no seed*/results.json under {out}; expected runs made by this script")
    cpus: list[Any] = []
    for run in runs.values():
        if run.get("cpu", "unknown") not in cpus:
            cpus.append(run.get("cpu", "unknown"))
    summary: dict[str, Any] = {"runs": sorted(runs), "cpus": cpus, "figures": {}}
    for name, path in FIGURES.items():
        values = [figure(r, path) for r in runs.values()]
        summary["figures"][name] = {
            "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values,
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = [f"| figure | mean ± std over {len(summary['runs'])} seeds | min | max |", "|---|---:|---:|---:|"]
    for name, stats in summary["figures"].items():
        mean, std, low, high = stats["mean"], stats["std"], stats["min"], stats["max"]
        lines.append(f"| {name} | {mean:.3f} ± {std:.3f} | {low:.3f} | {high:.3f} |")
    cpus = ", ".join(f"{c.get('model', '?')} ({c.get('class', '?')})" if isinstance(c, dict) else str(c)
                     for c in summary["cpus"])
    return "\n".join(lines) + f"\n\nCPU: {cpus}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    ours, run_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2, help="seeds run at once (one process each)")
    parser.add_argument("--out", default="runs/rlhf_seeds")
    parser.add_argument("--summarise-only", action="store_true", help="summarise the runs already in --out")
    args = parser.parse_args(ours)
    if args.parallel < 1:
        parser.error(f"--parallel {args.parallel}: expected at least 1")
    clashing = [a for a in run_args if a in ("--seed", "--out")]
    if clashing:
        parser.error(f"{clashing} after '--': this script sets --seed and --out for each run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summarise_only:
        run_seeds(args.seeds, args.parallel, out, run_args)
    summary = summarise(out)
    print(table(summary))
    return summary


if __name__ == "__main__":
    main()
