"""RLlib PPO (new API stack, :func:`agents.rllib.textenv_ppo_config`) vs SB3 PPO (:func:`agents.sb3.make_sb3`) on
MossWords-v0 at one step budget: env steps per second, CPU seconds, and reward, for SB3 and for RLlib with 0, 1 and
2 env runners, seed by seed, side by side in one process tree.

Both sides train the same network (token embedding 64, prompt and completion mean-pooled apart, one 128-unit tanh
layer per head, SB3's orthogonal init) with the same PPO settings (SB3's ``make_sb3`` defaults: 128 steps per env
per update, minibatch 64, 4 epochs, lr 3e-3, gamma 1, GAE lambda 0.95, entropy 0.01, clip 0.2) on 4 envs in all:

* ``sb3``: one process, textenv's native vector env of 4 (torch 1 thread);
* ``rllib-0``: no env runner actor: the driver samples 4 envs and learns (Ray's overhead without its IPC);
* ``rllib-1``: one EnvRunner actor with 4 envs, the learner in the driver;
* ``rllib-2``: two EnvRunner actors with 2 envs each, the learner in the driver;
* ``rllib-0-stock``: ``rllib-0`` with RLlib's own advantage standardisation (over the whole batch, the masked
  bootstrap timesteps included) instead of SB3's per-minibatch one (:class:`agents.rllib.MaskedAdvantagePPOLearner`).

Reward is measured twice: the mean of the last 100 training episodes (RLlib's ``episode_return_mean`` window;
SB3's recorder over the same count) and the mean of 1000 fresh episodes sampled from the final policy (eval seed
fixed, same episodes for every run). CPU seconds count the whole process tree (driver, Ray's daemons and
workers, each from the first update or its start to the last iteration it was seen alive); Ray's start and the
algorithm's build are timed apart.

Run from the repository root in the rllib venv (``make test-rllib`` builds it):

    OMP_NUM_THREADS=1 .venv-rllib/bin/python -m experiments.rllib_vs_sb3.compare

It writes ``results.json`` next to this file and prints the table of REPORT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import psutil
import torch

import textenv  # noqa: F401  (registers MossWords-v0)
from agents.sb3.evaluation import MOSS_WORDS_STEPS, train_and_record

ENV_ID = "MossWords-v0"
STEPS = MOSS_WORDS_STEPS["ppo"]  # the budget in which SB3's PPO learns MossWords-v0 (tests/test_sb3_learning.py)
SEEDS = (0, 1, 2)
ENVS = 4  # envs in all, on every side
LAST_EPISODES = 100
EVAL_EPISODES, EVAL_SEED, EVAL_ENVS = 1000, 10_000, 100
SETUPS = ("sb3", "rllib-0", "rllib-1", "rllib-2", "rllib-0-stock")
RESULTS = Path(__file__).with_name("results.json")

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


class TreeCPU:
    """User + system CPU seconds used by this process and its descendants (Ray's daemons and workers) since
    construction. Each process is counted from its time at construction (0 if it started later) to the last
    :meth:`sample` that saw it alive, so a worker that exits (an earlier run's, stopped meanwhile) neither takes
    its earlier CPU time away nor adds it; sample after every training iteration."""

    def __init__(self) -> None:
        self.start = self._now()
        self.last = dict(self.start)

    @staticmethod
    def _now() -> dict[tuple[int, float], float]:
        me = psutil.Process()
        times = {}
        for process in (me, *me.children(recursive=True)):
            try:  # keyed by pid and start time: a reused pid is another process
                cpu = process.cpu_times()
                times[(process.pid, process.create_time())] = cpu.user + cpu.system
            except psutil.NoSuchProcess:
                continue
        return times

    def sample(self) -> float:
        self.last.update(self._now())
        return sum(cpu - self.start.get(key, 0.0) for key, cpu in self.last.items())


def evaluate(policy: Policy, seed: int = EVAL_SEED) -> float:
    """Mean reward of ``EVAL_EPISODES`` episodes of ``policy`` (observation batch -> token ids), in batches of
    ``EVAL_ENVS`` run to their end; batch ``b`` is reset with ``seed + b * EVAL_ENVS``, so every run sees the same
    prompts."""
    env = gym.make_vec(ENV_ID, num_envs=EVAL_ENVS, vectorization_mode="vector_entry_point", autoreset_mode="Disabled")
    torch.manual_seed(seed)
    totals = []
    for batch in range(EVAL_EPISODES // EVAL_ENVS):
        obs, _ = env.reset(seed=seed + batch * EVAL_ENVS)
        total, done = np.zeros(EVAL_ENVS), np.zeros(EVAL_ENVS, dtype=bool)
        while not done.all():
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += reward
            done |= terminated | truncated
        totals.append(total)
    env.close()
    return float(np.concatenate(totals).mean())


def run_sb3(seed: int, budget: int) -> dict[str, Any]:
    run = train_and_record("ppo", ENV_ID, budget, seed=seed, n_envs=ENVS)

    def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        return run.model.predict(obs, deterministic=False)[0]

    return {
        "setup": "sb3",
        "seed": seed,
        "steps": budget,
        "build_seconds": None,
        "train_seconds": run.seconds,
        "train_cpu_seconds": run.cpu_seconds,
        "train_return_last": run.recorder.last_mean(LAST_EPISODES),
        "eval_return": evaluate(policy),
        "curve": [[int(s), float(m)] for s, m in zip(*run.recorder.curve(20, budget))],
    }


def run_rllib(setup: str, seed: int, budget: int) -> dict[str, Any]:
    from agents.rllib import textenv_ppo_config

    runners = int(setup.split("-")[1])

    start = time.perf_counter()
    envs_per_runner = ENVS // max(runners, 1)
    config = textenv_ppo_config(ENV_ID, num_env_runners=runners, num_envs_per_env_runner=envs_per_runner, seed=seed)
    if setup.endswith("-stock"):
        from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

        config.learners(learner_class=PPOTorchLearner)
    algo = config.build_algo()
    build_seconds = time.perf_counter() - start
    try:
        cpu, start = TreeCPU(), time.perf_counter()
        curve: list[list[float]] = []
        steps = 0
        while steps < budget:
            result = algo.train()["env_runners"]
            cpu.sample()
            steps = int(result["num_env_steps_sampled_lifetime"])
            curve.append([steps, float(result["episode_return_mean"])])
        seconds, cpu_seconds = time.perf_counter() - start, cpu.sample()
        module = algo.get_module()

        def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                out = module.forward_inference({"obs": {key: torch.from_numpy(value) for key, value in obs.items()}})
            return torch.distributions.Categorical(logits=out["action_dist_inputs"]).sample().numpy()

        return {
            "setup": setup,
            "seed": seed,
            "steps": steps,
            "build_seconds": build_seconds,
            "train_seconds": seconds,
            "train_cpu_seconds": cpu_seconds,
            "train_return_last": curve[-1][1],
            "eval_return": evaluate(policy),
            "curve": curve,
        }
    finally:
        algo.stop()


def random_return() -> float:
    space = gym.make(ENV_ID).action_space
    rng = np.random.default_rng(EVAL_SEED)
    return evaluate(lambda obs: rng.integers(space.n, size=len(obs["input_ids"])))


def table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| setup | env steps | steps/s (wall) | steps per CPU s | build s | train return (last 100) "
        "| eval return (1000) |",
        "|---|---|---|---|---|---|---|",
    ]
    for setup in SETUPS:
        mine = [r for r in runs if r["setup"] == setup]
        if not mine:
            continue
        rate = [r["steps"] / r["train_seconds"] for r in mine]
        per_cpu = [r["steps"] / r["train_cpu_seconds"] for r in mine]
        builds = [r["build_seconds"] for r in mine if r["build_seconds"] is not None]

        def cell(values: list[float], digits: int) -> str:
            return f"{np.mean(values):.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in values)})"

        rows.append(
            f"| {setup} | {mine[0]['steps']} | {cell(rate, 0)} | {cell(per_cpu, 0)} | "
            f"{cell(builds, 1) if builds else '-'} | {cell([r['train_return_last'] for r in mine], 2)} | "
            f"{cell([r['eval_return'] for r in mine], 2)} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    parser.add_argument("--steps", type=int, default=STEPS, help="env steps per run (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from agents.rllib import init_local_ray

    start = time.perf_counter()
    init_local_ray(num_cpus=2)
    ray_start_seconds = time.perf_counter() - start
    runs = []
    for seed in args.seeds:
        for setup in args.setups:
            run = (
                run_sb3(seed, args.steps)
                if setup == "sb3"
                else run_rllib(setup, seed, args.steps)
            )
            print(json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
            runs.append(run)
    report = {
        "command": "python -m experiments.rllib_vs_sb3.compare " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "python": platform.python_version()},
        "versions": {name: _version(name) for name in ("ray", "stable_baselines3", "torch", "gymnasium")},
        "ray_start_seconds": ray_start_seconds,
        "random_eval_return": random_return(),
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"Ray start: {ray_start_seconds:.1f} s; random policy: {report['random_eval_return']:.3f}")
    print(table(runs))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name.replace("_", "-"))


if __name__ == "__main__":
    main()
