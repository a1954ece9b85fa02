"""Shrinks a run's ``results.json`` for the repository: the per-iteration history keeps the learning signals only
(rewards, KL, entropy, length, CPU seconds), floats are rounded to 4 decimals and the file is written unindented.
The held-out curve, before/after and settings are kept whole (rounded). The trainer's own per-iteration log
(``trainer/progress.csv``, with every metric) and its checkpoint stay out of the repository.

    python -m experiments.rlvr_tasks.compact experiments/rlvr_tasks/results/grpo_chain_sum_seed0/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HISTORY_KEYS = ("iteration", "train_cpu_seconds", "reward_mean", "reward_std", "reward_correct_mean",
                "reward_format_mean", "reward_game_reward_mean", "kl", "entropy", "response_length",
                # TRL's names (train_trl)
                "reward", "rewards_correct_mean", "rewards_format_mean", "completions_mean_length")


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def compact(results: dict[str, Any]) -> dict[str, Any]:
    history = [{k: row[k] for k in HISTORY_KEYS if k in row} for row in results.get("history", [])]
    return rounded({**results, "history": history, "history_compacted": True})


def main() -> None:
    for name in sys.argv[1:]:
        path = Path(name)
        path.write_text(json.dumps(compact(json.loads(path.read_text())), separators=(",", ":")) + "\n")
        print(path, path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
