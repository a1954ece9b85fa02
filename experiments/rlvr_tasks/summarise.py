"""The study's tables and plot from its result files.

    python -m experiments.rlvr_tasks.summarise --results experiments/rlvr_tasks/results

Prints the baseline table and, per setting (a ``grpo_<name>_seed<k>`` or ``trl_<name>_seed<k>`` directory family),
held-out exact accuracy / mean score before and after each seed (and the near-greedy reading where the run took
one), with training CPU and wall seconds; for every ``grpo_<name>`` with a ``trl_<name>`` beside it, the training CPU
seconds textenv took to reach TRL's final held-out exact accuracy, per seed and on average; for the settings whose
every seed records it, accuracy on the split's most common answer and on the others (what a constant reply would
score); writes ``summary.json`` and ``heldout_curves.png`` (held-out exact accuracy against training CPU seconds,
one line per run, near-greedy dashed).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("exact_accuracy", "correct_mean", "format_mean", "game_reward_mean", "win_rate")


def baseline_table(path: Path) -> list[str]:
    rows = json.loads(path.read_text())["rows"]
    lines = ["| env | answer format | policy | episodes | exact accuracy | mean score | format | CPU s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        score = row.get("correct_mean", row.get("game_reward_mean", float("nan")))
        exact = row.get("exact_accuracy", row.get("win_rate", float("nan")))
        lines.append(
            f"| {row['env']} | {row['answer_format'] or '-'} | {row['policy']} | {row['episodes']} | {exact:.3f} | "
            f"{score:.3f} | {row.get('format_mean', float('nan')):.2f} | {row['cpu_seconds']:.0f} |"
        )
    return lines


def runs(results: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(results.glob("*_seed*/results.json")):
        match = re.fullmatch(r"((?:grpo|trl)_.+)_seed(\d+)", path.parent.name)
        if match:
            found[match.group(1)].append({"seed": int(match.group(2)), **json.loads(path.read_text())})
    return found


def headline(point: dict[str, Any]) -> float:
    return point.get("exact_accuracy", point.get("win_rate", float("nan")))


def greedy(point: dict[str, Any]) -> float:
    return point.get("greedy", {}).get("exact_accuracy", float("nan"))


def grpo_table(found: dict[str, list[dict[str, Any]]]) -> tuple[list[str], dict[str, Any]]:
    lines = ["| setting | seed | iterations | train CPU s | train wall s | held-out exact before | after | mean score "
             "before | after | near-greedy exact before | after |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    summary: dict[str, Any] = {}
    for name, items in found.items():
        afters, greedy_afters = [], []
        for run in sorted(items, key=lambda r: r["seed"]):
            before, after = run["before"], run["after"]
            score = "correct_mean" if "correct_mean" in after else "game_reward_mean"
            lines.append(
                f"| {name} | {run['seed']} | {run['iterations']} | {run['train_cpu_seconds']:.0f} | "
                f"{run['train_wall_seconds']:.0f} | {headline(before):.3f} | {headline(after):.3f} | "
                f"{before[score]:.3f} | {after[score]:.3f} | {greedy(before):.3f} | {greedy(after):.3f} |"
            )
            afters.append(headline(after))
            greedy_afters.append(greedy(after))
        summary[name] = {"seeds": len(afters), "after_mean": float(np.mean(afters)), "after_min": float(np.min(afters)),
                         "after": afters, "greedy_after": greedy_afters,
                         "greedy_after_mean": float(np.mean(greedy_afters))}
    return lines, summary


def first_reach(curve: list[dict[str, Any]], target: float, read: Any) -> float | None:
    """Training CPU seconds of the first held-out point whose ``read(point)`` reaches ``target`` (None: never)."""
    return next((p["train_cpu_seconds"] for p in curve if read(p) >= target), None)


def side_by_side(found: dict[str, list[dict[str, Any]]]) -> tuple[list[str], dict[str, Any]]:
    """Per seed: TRL's final held-out exact accuracy, and the training CPU seconds textenv's GRPO took to first reach
    it over TRL's (sampled reading and near-greedy reading)."""
    lines = ["| setting | seed | reading | TRL final | TRL CPU s | textenv CPU s to it | ratio |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    summary: dict[str, Any] = {}
    for name, items in found.items():
        if not name.startswith("trl_") or "grpo_" + name[4:] not in found:
            continue
        ours = {run["seed"]: run for run in found["grpo_" + name[4:]]}
        for reading, read in (("sampled", headline), ("near-greedy", greedy)):
            ratios = []
            for trl in sorted(items, key=lambda r: r["seed"]):
                if trl["seed"] not in ours or np.isnan(read(trl["after"])):
                    continue
                target, trl_cpu = read(trl["after"]), trl["train_cpu_seconds"]
                reach = first_reach(ours[trl["seed"]]["held_out_curve"], target, read)
                ratio = None if reach is None else reach / trl_cpu
                ratios.append(ratio)
                lines.append(f"| {name[4:]} | {trl['seed']} | {reading} | {target:.2f} | {trl_cpu:.0f} | "
                             f"{'never' if reach is None else f'{reach:.0f}'} | "
                             f"{'-' if ratio is None else f'{ratio:.2f}'} |")
            reached = [r for r in ratios if r is not None]
            summary[f"{name[4:]} {reading}"] = {
                "ratios": ratios, "mean_ratio_of_seeds_that_reached": float(np.mean(reached)) if reached else None,
            }
            if len(ratios) > 1:
                lines.append(f"| {name[4:]} | mean | {reading} | | | {len(reached)}/{len(ratios)} reached | "
                             f"{f'{np.mean(reached):.2f}' if reached else '-'} |")
    return lines, summary


def by_answer_table(found: dict[str, list[dict[str, Any]]]) -> tuple[list[str], dict[str, Any]]:
    """For the reasoning-gym runs: held-out exact accuracy after training on the questions whose gold answer is the
    split's most common one and on all the others, against the share a constant reply of that answer scores."""
    lines = ["| setting | seed | most common answer | its share (a constant reply's accuracy) | exact after: on it | "
             "on the other answers | overall |", "| --- | --- | --- | --- | --- | --- | --- |"]
    summary: dict[str, Any] = {}
    for name, items in found.items():
        if not all(run["after"].get("exact_accuracy_by_answer") for run in items):
            continue  # a setting some of whose runs predate the per-answer record
        for run in sorted(items, key=lambda r: r["seed"]):
            table = run["after"]["exact_accuracy_by_answer"]
            common, row = next(iter(table.items()))  # sorted by episodes, most first
            total = sum(r["episodes"] for r in table.values())
            others = [r for answer, r in table.items() if answer != common]
            other_episodes = sum(r["episodes"] for r in others)
            on_others = sum(r["exact_accuracy"] * r["episodes"] for r in others) / max(other_episodes, 1)
            lines.append(f"| {name} | {run['seed']} | {common} | {row['episodes'] / total:.2f} | "
                         f"{row['exact_accuracy']:.2f} | {on_others:.2f} ({other_episodes} episodes) | "
                         f"{headline(run['after']):.2f} |")
            summary.setdefault(name, []).append({"seed": run["seed"], "common_answer": common,
                                                 "common_share": row["episodes"] / total,
                                                 "exact_on_common": row["exact_accuracy"], "exact_on_others": on_others})
    return lines, summary


def plot(found: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(found))
    rows = -(-len(found) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), dpi=100, squeeze=False)
    for ax in axes.flat[len(found):]:
        ax.set_visible(False)
    for ax, (name, items) in zip(axes.flat, found.items()):
        for run in sorted(items, key=lambda r: r["seed"]):
            curve = run["held_out_curve"]
            line, = ax.plot([p["train_cpu_seconds"] for p in curve], [headline(p) for p in curve], marker="o",
                            label=f"seed {run['seed']}")
            if "greedy" in curve[0]:
                ax.plot([p["train_cpu_seconds"] for p in curve], [greedy(p) for p in curve], linestyle="--",
                        color=line.get_color(), label=f"seed {run['seed']} near-greedy")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training CPU seconds")
        ax.set_ylabel("held-out exact accuracy (win rate for games)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="experiments/rlvr_tasks/results")
    args = parser.parse_args()
    results = Path(args.results)
    if (results / "baselines.json").is_file():
        print("\n".join(baseline_table(results / "baselines.json")))
    found = runs(results)
    if found:
        lines, summary = grpo_table(found)
        print("\n" + "\n".join(lines))
        lines, ratios = side_by_side(found)
        if ratios:
            print("\n" + "\n".join(lines))
            summary["side_by_side"] = ratios
        lines, answers = by_answer_table(found)
        if answers:
            print("\n" + "\n".join(lines))
            summary["by_answer"] = answers
        (results / "summary.json").write_text(json.dumps(summary, indent=1))
        plot(found, results / "heldout_curves.png")


if __name__ == "__main__":
    main()
