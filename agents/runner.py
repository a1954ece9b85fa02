"""One training run of any agent on a textenv env, with the same outputs whatever the agent.

A run directory holds:

* ``run.json`` -- what was asked: agent, env id, env kwargs, reward, model, seed, steps, agent kwargs;
* ``curve.csv`` -- the learning curve, one row per logging window: ``timesteps`` (completion tokens so far,
  the same unit for every agent), ``episodes`` and ``reward_mean`` (mean reward of the episodes finished
  in the window);
* ``checkpoint/`` -- the latest whole checkpoint (written atomically; safetensors and JSON, optimiser state
  read back with ``torch.load(weights_only=True)``, no pickles);
* ``summary.json`` -- written last: ``status`` (``"done"`` or ``"interrupted"``), final mean reward, wall
  time, steps per second.

Running the same command again resumes from the checkpoint towards the same ``steps`` total; a run whose
summary says ``"done"`` is skipped.

SB3 agents: the checkpoint holds the policy's weights and the optimiser state; an off-policy agent's replay
buffer is not saved (it would need pickling), so a resumed DQN/QR-DQN starts with an empty buffer.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SB3_AGENTS = ("ppo", "a2c", "dqn", "qrdqn", "trpo", "maskable_ppo", "recurrent_ppo")
LM_AGENTS = ("lm-ppo", "grpo", "rloo")
AGENTS = SB3_AGENTS + LM_AGENTS

RUN_FILE = "run.json"
CURVE_FILE = "curve.csv"
SUMMARY_FILE = "summary.json"
CURVE_FIELDS = ("timesteps", "episodes", "reward_mean")


class UnknownAgentError(ValueError):
    """An agent name that is not in :data:`AGENTS`."""


@dataclass
class RunSpec:
    """What one run trains: everything needed to start it again."""

    agent: str
    env: str
    steps: int
    seed: int = 0
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    reward: Any = None
    model: str | None = None  # LM agents: the policy model (default: the env tokenizer's built-in model)
    agent_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.agent not in AGENTS:
            raise UnknownAgentError(f"unknown agent {self.agent!r}; expected one of: {', '.join(AGENTS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")

    def full_env_kwargs(self) -> dict[str, Any]:
        return {**self.env_kwargs, **({"reward": self.reward} if self.reward is not None else {})}


def read_summary(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(out_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_curve(out_dir: str | os.PathLike) -> list[dict[str, float]]:
    path = Path(out_dir) / CURVE_FILE
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{key: float(row[key]) for key in CURVE_FIELDS} for row in csv.DictReader(f)]


def final_mean_reward(curve: list[dict[str, float]], fraction: float = 0.1) -> float:
    """Mean reward of the episodes in the last ``fraction`` of the run's timesteps (at least one window)."""
    if not curve:
        return math.nan
    cutoff = curve[-1]["timesteps"] * (1 - fraction)
    tail = [row for row in curve if row["timesteps"] >= cutoff] or curve[-1:]
    episodes = sum(row["episodes"] for row in tail)
    return sum(row["reward_mean"] * row["episodes"] for row in tail) / max(episodes, 1)


class CurveWriter:
    """Appends learning-curve rows; on resume, drops rows past the checkpoint's timesteps first."""

    def __init__(self, out_dir: Path, resume_from_timesteps: int) -> None:
        self.path = out_dir / CURVE_FILE
        kept = [row for row in read_curve(out_dir) if row["timesteps"] <= resume_from_timesteps]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
            writer.writeheader()
            writer.writerows({k: _compact(v) for k, v in row.items()} for row in kept)

    def add(self, timesteps: int, rewards: list[float]) -> None:
        """One row for the episodes (their rewards) finished since the last row."""
        if rewards:
            self.add_mean(timesteps, sum(rewards) / len(rewards), len(rewards))

    def add_mean(self, timesteps: int, reward_mean: float, episodes: int) -> None:
        row = {"timesteps": timesteps, "episodes": episodes, "reward_mean": reward_mean}
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=CURVE_FIELDS).writerow(row)


def _compact(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def train(spec: RunSpec, out_dir: str | os.PathLike, progress_bar: bool = True) -> dict[str, Any]:
    """Train (or resume) the run ``spec`` in ``out_dir``; return its summary. Ctrl-C saves and marks it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = read_summary(out)
    if summary and summary.get("status") == "done" and summary.get("steps") == spec.steps:
        return summary
    (out / RUN_FILE).write_text(json.dumps(_spec_dict(spec), indent=2))
    started = time.perf_counter()
    run = _SB3Run(spec, out, progress_bar) if spec.agent in SB3_AGENTS else _LMRun(spec, out, progress_bar)
    start_steps = run.num_timesteps
    status = "done"
    try:
        run.learn()
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        run.save()
    wall = time.perf_counter() - started
    curve = read_curve(out)
    summary = {
        "status": status,
        "agent": spec.agent,
        "env": spec.env,
        "seed": spec.seed,
        "steps": spec.steps,
        "timesteps": run.num_timesteps,
        "final_mean_reward": final_mean_reward(curve),
        "wall_seconds": wall + (summary or {}).get("wall_seconds", 0.0),
        "steps_per_second": (run.num_timesteps - start_steps) / max(wall, 1e-9),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    if status == "interrupted":
        raise KeyboardInterrupt
    return summary


def _spec_dict(spec: RunSpec) -> dict[str, Any]:
    return {
        "agent": spec.agent,
        "env": spec.env,
        "steps": spec.steps,
        "seed": spec.seed,
        "env_kwargs": spec.env_kwargs,
        "reward": spec.reward,
        "model": spec.model,
        "agent_kwargs": spec.agent_kwargs,
    }


def load_spec(out_dir: str | os.PathLike) -> RunSpec:
    path = Path(out_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(out_dir)!r} is not a textenv run directory (no {RUN_FILE})")
    return RunSpec(**json.loads(path.read_text()))


# -- SB3 ----------------------------------------------------------------------------------------------------
class _SB3Run:
    """An SB3 / sb3-contrib agent built by :func:`agents.sb3.make_sb3`, checkpointed without pickles."""

    WEIGHTS = "policy.safetensors"
    OPTIMIZER = "optimizer.pt"
    STATE = "state.json"

    def __init__(self, spec: RunSpec, out: Path, progress_bar: bool) -> None:
        from agents.sb3 import make_sb3

        self.spec, self.out, self.progress_bar = spec, out, progress_bar
        self.model = make_sb3(spec.agent, spec.env, seed=spec.seed, env_kwargs=spec.full_env_kwargs(), **spec.agent_kwargs)
        self.num_timesteps = self._load()
        self.curve = CurveWriter(out, self.num_timesteps)

    def learn(self) -> None:
        remaining = self.spec.steps - self.num_timesteps
        if remaining <= 0:
            return
        callback = _make_sb3_callback_class()(self.curve, self.spec.steps, self.num_timesteps, self.progress_bar)
        self.model.learn(total_timesteps=remaining, callback=callback, reset_num_timesteps=self.num_timesteps == 0)

    def _load(self) -> int:
        import torch
        from safetensors.torch import load_model

        from agents.checkpoint import find_checkpoint

        found = find_checkpoint(self.out)
        if found is None:
            return 0
        load_model(self.model.policy, found / self.WEIGHTS)
        optimizer = getattr(self.model.policy, "optimizer", None)
        if optimizer is not None and (found / self.OPTIMIZER).is_file():
            optimizer.load_state_dict(torch.load(found / self.OPTIMIZER, weights_only=True))
        state = json.loads((found / self.STATE).read_text())
        self.model.num_timesteps = int(state["num_timesteps"])
        return self.model.num_timesteps

    def save(self) -> None:
        import torch
        from safetensors.torch import save_model

        from agents.checkpoint import COMPLETE_MARKER, write_atomically

        self.num_timesteps = int(self.model.num_timesteps)

        def write(directory: Path) -> None:
            save_model(self.model.policy, str(directory / self.WEIGHTS))
            optimizer = getattr(self.model.policy, "optimizer", None)
            if optimizer is not None:
                torch.save(optimizer.state_dict(), directory / self.OPTIMIZER)
            (directory / self.STATE).write_text(json.dumps({"num_timesteps": self.num_timesteps}))
            (directory / COMPLETE_MARKER).write_text(json.dumps({"num_timesteps": self.num_timesteps}))

        write_atomically(self.out, write)


def _make_sb3_callback_class() -> type:
    from stable_baselines3.common.callbacks import BaseCallback

    class SB3CurveCallback(BaseCallback):
        """Collects finished episodes' rewards (from SB3's Monitor infos) into the run's curve."""

        def __init__(self, curve: CurveWriter, total: int, start: int, progress_bar: bool, window: int = 0) -> None:
            super().__init__()
            self.curve, self.total, self.start = curve, total, start
            self.window = window or max(total // 50, 1)
            self.pending: list[float] = []
            self.next_log = start + self.window
            self.bar = None
            if progress_bar:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=start, unit="step", desc="train", dynamic_ncols=True)

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.pending.append(float(info["episode"]["r"]))
            if self.bar is not None:
                self.bar.n = self.num_timesteps
                self.bar.refresh() if self.num_timesteps % 256 == 0 else None
            if self.num_timesteps >= self.next_log:
                self.flush()
                self.next_log = self.num_timesteps + self.window
            return True

        def flush(self) -> None:
            self.curve.add(self.num_timesteps, self.pending)
            if self.bar is not None and self.pending:
                self.bar.set_postfix(reward=f"{sum(self.pending) / len(self.pending):+.3f}")
            self.pending = []

        def _on_training_end(self) -> None:
            self.flush()
            if self.bar is not None:
                self.bar.n = self.num_timesteps
                self.bar.close()

    return SB3CurveCallback


# -- LM agents ----------------------------------------------------------------------------------------------
class _LMRun:
    """LM-PPO, GRPO or RLOO (:mod:`agents.lm`); its own checkpoints, curve rows from its metrics."""

    def __init__(self, spec: RunSpec, out: Path, progress_bar: bool) -> None:
        from agents import lm
        from textenv.registration import ENV_IDS

        trainer_class, config_class = {
            "lm-ppo": (lm.LMPPOTrainer, lm.LMPPOConfig),
            "grpo": (lm.GRPOTrainer, lm.GRPOConfig),
            "rloo": (lm.RLOOTrainer, lm.RLOOConfig),
        }[spec.agent]
        try:
            config = config_class(seed=spec.seed, output_dir=str(out), progress_bar=False, **spec.agent_kwargs)
        except TypeError as err:
            raise TypeError(f"bad {spec.agent} argument: {err}") from err
        model = spec.model or spec.env_kwargs.get("tokenizer") or ENV_IDS.get(spec.env, ({}, ""))[0].get("tokenizer")
        if model is None:
            raise ValueError(f"{spec.agent} needs a policy model: pass model=... (the env {spec.env!r} names no tokenizer)")
        self.spec, self.progress_bar = spec, progress_bar
        self.trainer = trainer_class(spec.env, model, config, env_kwargs=spec.full_env_kwargs())
        self.trainer.load_checkpoint()
        self.curve = CurveWriter(out, self.trainer.num_timesteps)

    @property
    def num_timesteps(self) -> int:
        return int(self.trainer.num_timesteps)

    def learn(self) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(total=self.spec.steps, initial=self.num_timesteps, unit="tok", desc="train", disable=not self.progress_bar)
        with bar:
            while self.trainer.num_timesteps < self.spec.steps:
                metrics = self.trainer.train(1)[-1]  # one iteration: a batch of num_envs episodes
                self.curve.add_mean(self.num_timesteps, metrics["reward_mean"], self.trainer.num_envs)
                bar.update(self.num_timesteps - bar.n)
                bar.set_postfix(reward=f"{metrics['reward_mean']:+.3f}")

    def save(self) -> None:
        self.trainer.save_checkpoint()
        self.trainer.close()
