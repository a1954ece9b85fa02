"""Baselines on each env the study reports: the untuned SmolLM2-135M-Instruct and a uniformly random token policy,
on the env's held-out split (every test question or held-out game seed ``--samples`` times).

    OMP_NUM_THREADS=1 python -m experiments.rlvr_tasks.baselines --out experiments/rlvr_tasks/results/baselines.json

For the reasoning-gym envs every answer format is measured (the prompt's instruction and the reward's extraction
change together), scored by the task's own ``score_answer`` with its partial credit: ``correct_mean`` is the mean
score, ``exact_accuracy`` the share of full scores, ``format_mean`` the share of replies holding an answer in the
format.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import textenv
from agents.runs.machine import cpu_info
from experiments.rlvr_tasks.common import ENVS, env_spec, held_out, random_policy, scripted_guesses

FORMATS = ("whole", "last_number", "last_line", "answer_tag")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(ENVS))
    parser.add_argument("--scripted-only", action="store_true", help="only the game's scripted players")
    parser.add_argument("--samples", type=int, default=4, help="episodes per held-out prompt")
    parser.add_argument("--random-samples", type=int, default=1, help="episodes per held-out prompt, random policy")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--model", default=textenv.DEFAULT_MODEL, help="the untuned policy (tiny-random-smollm2: a smoke test)"
    )
    args = parser.parse_args()
    policy = textenv.load_causal_lm(args.model).eval()
    rows = []
    for name in args.envs.split(","):
        env_id, _ = env_spec(name)
        formats = FORMATS if env_id == "textenv/ReasoningGym-v0" else (None,)
        for answer_format in formats:
            overrides = {} if answer_format is None else {"answer_format": answer_format}
            env_id, kwargs = env_spec(name, **overrides)
            # the untuned LM (--model), uniformly random tokens, and for the game two scripted players
            scripted = ("constant", "binary_search") if name == "guess_the_number" else ()
            for agent in scripted if args.scripted_only else ("smollm2", "random", *scripted):
                cpu = time.process_time()
                if agent == "smollm2":
                    result = held_out(policy, env_id, kwargs, samples=args.samples)
                elif agent == "random":
                    result = random_policy(env_id, kwargs, samples=args.random_samples)
                else:
                    result = scripted_guesses(env_id, kwargs, agent)
                policy_name = args.model if agent == "smollm2" else agent
                row = {"env": name, "answer_format": answer_format, "policy": policy_name, "env_kwargs": kwargs,
                       "cpu_seconds": time.process_time() - cpu, **result}
                rows.append(row)
                shown = {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}
                print(name, answer_format, agent, shown, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": cpu_info(), "threads": torch.get_num_threads(), "samples": args.samples,
                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
