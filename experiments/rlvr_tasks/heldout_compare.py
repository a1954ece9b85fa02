"""Held-out scores of every run of a ``textenv compare`` on a task env: the table ``compare`` writes is the training
reward (sampled episodes on the train split); this reads each run's final checkpoint on the env's test split.

    OMP_NUM_THREADS=1 python -m experiments.rlvr_tasks.heldout_compare --compare runs/rlvr/compare_chain_sum \
        --out experiments/rlvr_tasks/results/compare_chain_sum/heldout.json

Each run plays every test question ``--samples`` times (``textenv eval --prompts split:test``, sampling seed
``--seed``); per agent: the per-seed held-out mean reward, their IQM and its 95% percentile-bootstrap interval
(:func:`agents.runs.compare.iqm`, :func:`agents.runs.compare.bootstrap_ci`, as ``textenv compare``'s table).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from agents.runs.compare import COMPARE_FILE, bootstrap_ci, iqm
from agents.runs.evaluate import evaluate
from agents.runs.runner import read_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", required=True, help="a textenv compare output folder")
    parser.add_argument("--samples", type=int, default=2, help="episodes per test question")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    agents = json.loads((Path(args.compare) / COMPARE_FILE).read_text())["agents"]
    per_agent: dict[str, list[dict[str, float]]] = {}
    for agent in agents:
        for run in sorted((Path(args.compare) / "runs" / agent).glob("seed*")):
            summary = read_summary(run)
            if not summary or summary.get("status") != "done":
                continue
            started = time.process_time()
            result = evaluate(run, "split:test", samples_per_prompt=args.samples, seed=args.seed)
            row = {"seed": summary["seed"], "episodes": result["episodes"], "heldout_reward": result["reward"]["mean"],
                   "train_final_mean_reward": summary["final_mean_reward"],
                   "eval_cpu_seconds": time.process_time() - started}
            per_agent.setdefault(agent, []).append(row)
            print(agent, row, flush=True)
    table = ["| agent | seeds | held-out mean reward per seed | IQM | 95% CI (IQM, bootstrap) |",
             "| --- | --- | --- | --- | --- |"]
    agents_out = {}
    for agent, rows in per_agent.items():
        values = [row["heldout_reward"] for row in rows]
        low, high = bootstrap_ci(values)
        agents_out[agent] = {"runs": rows, "iqm": iqm(values), "ci95": [low, high]}
        table.append(f"| {agent} | {len(values)} | {', '.join(f'{v:.3f}' for v in values)} | {iqm(values):.3f} | "
                     f"[{low:.3f}, {high:.3f}] |")
    print("\n".join(table))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"compare": args.compare, "samples": args.samples, "seed": args.seed,
                               "agents": agents_out, "table": table}, indent=1))


if __name__ == "__main__":
    main()
