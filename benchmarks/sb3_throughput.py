"""SB3 training throughput on each vec-env path of ``agents.sb3.make_sb3``, measured side by side in one run.

``make_sb3`` builds an env id into one of two SB3 ``VecEnv``s (``vec_env=``):

* ``native`` (the default) -- textenv's batched :class:`textenv.vector_env.TextGenerationVectorEnv` through the
  :class:`agents.sb3.native_vec_env.SB3TextVecEnv` adapter, in ``VecMonitor``: one numpy step and one reward
  call for all envs;
* ``sb3`` -- SB3's ``make_vec_env``: a ``DummyVecEnv`` looping over ``n`` single envs, each in ``Monitor``.

Both give the same episodes for a seed (tests/test_sb3_vecenv.py), so the comparison is of the same training.
For each setting, a PPO agent is built on each path and ``model.learn(chunk)`` is timed on each, alternately
(A, B, A, B, ... after one warm-up chunk each), and medians are compared. Settings:

* ``MossWords-v0``, PPO with ``make_sb3``'s defaults and 4 envs (the algorithm comparison's setting);
* ``MossWords-v0``, PPO with 64 envs and ``n_steps=16`` (1024 samples per update from many envs);
* top-k ``MossText-v0``: ``make_top_k_sb3``'s recipe, PPO over SmolLM2-135M-Instruct's top 8 tokens, 32 envs.

Reported: training steps/s (whole ``learn``: rollouts and updates) and rollout steps/s (the rollout phase
alone: policy forward, env step, buffer writes), each native / sb3; and, to show the env's own share, the
``VecEnv`` alone stepped with random actions (no policy) on ``MossWords-v0`` at 4 and 64 envs. Times are the
process's CPU time (``time.process_time``, one torch thread), so other jobs on a shared machine disturb them
less::

    .venv/bin/python benchmarks/sb3_throughput.py                  # ~5 min of CPU (loads SmolLM2)
    .venv/bin/python benchmarks/sb3_throughput.py --quick --json sb3.json
    .venv/bin/python benchmarks/sb3_throughput.py --no-top-k       # MossWords-v0 only, no LM
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from env_throughput import interleaved  # noqa: E402  (benchmarks/ is the script's folder)
from stable_baselines3.common.base_class import BaseAlgorithm  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402

import numpy as np  # noqa: E402

import textenv  # noqa: E402,F401  (registers the ids)
from agents.sb3 import VEC_ENVS, make_sb3, make_sb3_env, make_top_k_sb3  # noqa: E402

clock = time.process_time


@dataclass
class Setting:
    """One PPO training setting, built on each vec-env path."""

    name: str
    env_id: str
    n_envs: int
    chunk: int  # timesteps per timed learn()
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    top_k: int = 0  # > 0: make_top_k_sb3 with this k

    def build(self, vec_env: str, reference_lm: str) -> BaseAlgorithm:
        if self.top_k:
            return make_top_k_sb3(
                "ppo", self.env_id, reference_lm, k=self.top_k, n_envs=self.n_envs, vec_env=vec_env, seed=0,
                **self.algo_kwargs,
            )  # fmt: skip
        return make_sb3("ppo", self.env_id, n_envs=self.n_envs, vec_env=vec_env, seed=0, **self.algo_kwargs)


class RolloutClock(BaseCallback):
    """CPU seconds spent collecting rollouts (between ``on_rollout_start`` and ``on_rollout_end``)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self._start = 0.0

    def _on_rollout_start(self) -> None:
        self._start = clock()

    def _on_rollout_end(self) -> None:
        self.seconds += clock() - self._start

    def _on_step(self) -> bool:
        return True


def timed_learn(model: BaseAlgorithm, chunk: int, rollout_seconds: list[float]) -> float:
    """CPU seconds of ``model.learn(chunk)`` (continuing its training); appends the rollout phase's share."""
    rollouts = RolloutClock()
    start = clock()
    model.learn(chunk, callback=rollouts, reset_num_timesteps=False)
    seconds = clock() - start
    rollout_seconds.append(rollouts.seconds)
    return seconds


def measure(setting: Setting, repeats: int, reference_lm: str) -> dict[str, Any]:
    models = {path: setting.build(path, reference_lm) for path in VEC_ENVS}
    rollouts: dict[str, list[float]] = {path: [] for path in VEC_ENVS}
    learn = {path: (lambda p=path: timed_learn(models[p], setting.chunk, rollouts[p])) for path in VEC_ENVS}
    native, sb3 = interleaved(learn["native"], learn["sb3"], repeats)
    row: dict[str, Any] = {"setting": setting.name, "n_envs": setting.n_envs, "chunk": setting.chunk}
    for path, seconds in (("native", native), ("sb3", sb3)):
        timed = sorted(rollouts[path][1:])  # without the warm-up chunk
        row[f"{path}_train_steps_per_s"] = setting.chunk / seconds
        row[f"{path}_rollout_steps_per_s"] = setting.chunk / timed[len(timed) // 2]
    row["train_ratio"] = row["native_train_steps_per_s"] / row["sb3_train_steps_per_s"]
    row["rollout_ratio"] = row["native_rollout_steps_per_s"] / row["sb3_rollout_steps_per_s"]
    return row


def measure_vec_env(n_envs: int, steps: int, repeats: int) -> dict[str, Any]:
    """``VecEnv`` steps/s with random actions and no policy, native vs make_vec_env (MossWords-v0)."""
    envs = {path: make_sb3_env("MossWords-v0", n_envs, seed=0, vec_env=path) for path in VEC_ENVS}
    actions = np.random.default_rng(0).integers(0, envs["native"].action_space.n, size=(steps, n_envs))

    def run(path: str) -> float:
        venv = envs[path]
        venv.reset()
        start = clock()
        for batch in actions:
            venv.step(batch)
        return clock() - start

    native, sb3 = interleaved(lambda: run("native"), lambda: run("sb3"), repeats)
    row = {"n_envs": n_envs, "native_env_steps_per_s": steps * n_envs / native}
    row["sb3_env_steps_per_s"] = steps * n_envs / sb3
    row["ratio"] = row["native_env_steps_per_s"] / row["sb3_env_steps_per_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats per side instead of 3")
    parser.add_argument("--no-top-k", action="store_true", help="skip the top-k MossText-v0 setting (no LM)")
    parser.add_argument("--reference-lm", default="smollm2-135m-instruct", help="the top-k setting's reference LM")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats = 2 if args.quick else 3
    settings = [
        Setting("MossWords-v0, PPO defaults", "MossWords-v0", n_envs=4, chunk=2048),
        Setting("MossWords-v0, PPO n_steps=16", "MossWords-v0", n_envs=64, chunk=2048, algo_kwargs={"n_steps": 16}),
    ]
    if not args.no_top_k:
        settings.append(Setting("MossText-v0 top-8 (make_top_k_sb3)", "MossText-v0", n_envs=32, chunk=1024, top_k=8))

    print(f"# SB3 PPO throughput, native vector env vs make_vec_env (CPU time, median of {repeats})\n")
    print("| setting | envs | train steps/s native | sb3 | ratio | rollout steps/s native | sb3 | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for setting in settings:
        row = measure(setting, repeats, args.reference_lm)
        rows.append(row)
        print(
            f"| {row['setting']} | {row['n_envs']} | {row['native_train_steps_per_s']:,.0f} "
            f"| {row['sb3_train_steps_per_s']:,.0f} | **{row['train_ratio']:.2f}x** "
            f"| {row['native_rollout_steps_per_s']:,.0f} | {row['sb3_rollout_steps_per_s']:,.0f} "
            f"| {row['rollout_ratio']:.2f}x |",
            flush=True,
        )
    print("\n## the VecEnv alone: MossWords-v0, random actions, no policy (env-steps/s)\n")
    print("| envs | native | sb3 | ratio |")
    print("|---:|---:|---:|---:|")
    env_rows = []
    for n_envs in (4, 64):
        row = measure_vec_env(n_envs, steps=16_384 // n_envs, repeats=repeats)
        env_rows.append(row)
        native, sb3 = row["native_env_steps_per_s"], row["sb3_env_steps_per_s"]
        print(f"| {n_envs} | {native:,.0f} | {sb3:,.0f} | {row['ratio']:.2f}x |")
    if args.json:
        meta = {"repeats": repeats, "clock": "process_time", "torch_threads": 1}
        meta["date"] = time.strftime("%Y-%m-%d %H:%M")
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "vec_env_rows": env_rows}, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
