"""One training run of any agent on a textenv env, with the same outputs whatever the agent.

A run directory holds:

* ``run.json`` -- what was asked: agent, env id, env kwargs, reward, model, seed, steps, agent kwargs;
* ``curve.csv`` -- the learning curve, one row per logging window: ``timesteps`` (completion tokens so far,
  the same unit for every agent), ``episodes`` and ``reward_mean`` (mean reward of the episodes finished
  in the window);
* ``checkpoint/`` -- the latest whole checkpoint, and ``checkpoint.old/`` the one before it (written
  atomically by :mod:`agents.checkpoint`; safetensors and JSON, optimiser state read back with
  ``torch.load(weights_only=True)``, no pickles). A run saves every ``save_every_steps`` steps and/or
  ``save_every_minutes`` minutes (:class:`SaveSchedule`), on Ctrl-C and at the end, so a hard kill loses at most
  one interval;
* ``summary.json`` -- written last: ``status`` (``"done"`` or ``"interrupted"``), final mean reward, wall
  time, steps per second, and ``resumed_from`` (the checkpoint's timesteps this invocation started from).

Running the same command again resumes from the newest whole checkpoint (``checkpoint.old`` when ``checkpoint``
is damaged; the damaged one is moved to ``checkpoint.damaged``) towards the same ``steps`` total; a run whose
summary says ``"done"`` (and whose checkpoint is whole) is skipped. A directory is
only reused for the run it was made for: the agent, env, env kwargs, reward, model, seed and agent kwargs must
match its ``run.json`` (``steps`` may change: the run continues towards the new total), or
:class:`RunMismatchError` says what differs.

SB3 agents: the checkpoint holds the policy's weights and the optimiser state; an off-policy agent's replay
buffer is not saved (it would need pickling), so a resumed DQN/QR-DQN starts with an empty buffer.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

SB3_AGENTS = ("ppo", "a2c", "dqn", "qrdqn", "trpo", "maskable_ppo", "recurrent_ppo")
LM_AGENTS = ("lm-ppo", "grpo", "rloo")
AGENTS = SB3_AGENTS + LM_AGENTS

RUN_FILE = "run.json"
COMMAND = "train"  # the command whose output folder a run directory is (agents.checkpoint.claim_output_dir)
CURVE_FILE = "curve.csv"
SUMMARY_FILE = "summary.json"
CURVE_FIELDS = ("timesteps", "episodes", "reward_mean")


class UnknownAgentError(ValueError):
    """An agent name that is not in :data:`AGENTS`."""


class RunMismatchError(ValueError):
    """``out_dir`` holds a different run than the one asked for; the message says what differs."""


class RunArgumentError(ValueError):
    """The agent could not be built from the run's arguments (a value the library refuses)."""


#: run.json keys a rerun must match (``steps`` may change: the run continues towards the new total)
MATCHED_KEYS = ("agent", "env", "env_kwargs", "reward", "model", "seed", "agent_kwargs")


@dataclass
class SaveSchedule:
    """When a run writes a checkpoint between its start and its end: every ``every_steps`` environment steps
    and/or every ``every_minutes`` minutes of wall time, whichever comes first (0 turns either off)."""

    every_steps: int = 0
    every_minutes: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.every_steps, bool) or not isinstance(self.every_steps, int) or self.every_steps < 0:
            raise ValueError(f"save every_steps={self.every_steps!r}; expected an int >= 0 (0: off)")
        if not isinstance(self.every_minutes, (int, float)) or not 0 <= self.every_minutes < math.inf:
            raise ValueError(f"save every_minutes={self.every_minutes!r}; expected a number >= 0 (0: off)")
        self._last_steps: int | None = None
        self._last_time = time.monotonic()

    def start(self, timesteps: int) -> None:
        self._last_steps, self._last_time = timesteps, time.monotonic()

    def due(self, timesteps: int) -> bool:
        """Whether a checkpoint is due at ``timesteps``; if so, the next interval starts now."""
        if self._last_steps is None:
            self.start(timesteps)
        by_steps = self.every_steps > 0 and timesteps - self._last_steps >= self.every_steps
        by_time = self.every_minutes > 0 and time.monotonic() - self._last_time >= 60 * self.every_minutes
        if by_steps or by_time:
            self.start(timesteps)
            return True
        return False


@dataclass
class RunSpec:
    """What one run trains: everything needed to start it again."""

    agent: str
    env: str
    steps: int
    seed: int = 0
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    reward: Any = None
    model: str | None = None  # LM agents (and SB3's top_k): the LM (default: the env tokenizer's built-in model)
    agent_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.agent not in AGENTS:
            raise UnknownAgentError(f"unknown agent {self.agent!r}; expected one of: {', '.join(AGENTS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")

    def full_env_kwargs(self) -> dict[str, Any]:
        """The env's arguments, with ``reward`` (if given) replacing the env's reward and its ``reward_kwargs``."""
        from textenv.registration import with_reward

        return dict(self.env_kwargs) if self.reward is None else with_reward(self.env_kwargs, self.reward)

    def language_model(self) -> str | None:
        """``model``, else the env's tokenizer (given, or the env id's registered one): the LM an LM agent trains
        and an SB3 agent's ``top_k`` ranks tokens with; ``None`` when the env names no tokenizer."""
        from textenv.registration import ENV_IDS

        return self.model or self.env_kwargs.get("tokenizer") or ENV_IDS.get(self.env, ({}, ""))[0].get("tokenizer")


def read_summary(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``summary.json`` of a run directory; ``None`` when there is none or it is not whole (it is written last, so
    the run is then not finished: a rerun resumes it and writes it again)."""
    from textenv.files import parse_json

    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        summary = parse_json(path.read_bytes(), str(path))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


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


def train(
    spec: RunSpec, out_dir: str | os.PathLike, progress_bar: bool = True, save: SaveSchedule | None = None
) -> dict[str, Any]:
    """Train (or resume) the run ``spec`` in ``out_dir``; return its summary. Ctrl-C saves and marks it.

    Raises:
        OutputDirError: ``out_dir`` is a file, or a folder holding anything but an earlier run (nothing is written).
        RunMismatchError: ``out_dir`` holds a run made with other arguments.
        RunArgumentError: the agent refuses one of the run's arguments.
        DamagedCheckpointError: no checkpoint in ``out_dir`` is whole.
    """
    from agents.checkpoint import check_output_dir, claim_output_dir, recover_checkpoint

    out = Path(out_dir)
    check_output_dir(out, COMMAND, markers=(RUN_FILE,))
    check_reuse(out, spec)
    created = not out.exists()
    claim_output_dir(out, COMMAND, markers=(RUN_FILE,))
    recover_checkpoint(out)
    summary = read_summary(out)
    if (
        summary
        and summary.get("status") == "done"
        and summary.get("steps") == spec.steps
        and summary.get("timesteps") == _saved_timesteps(out)  # and its checkpoint is still there, whole
    ):
        return summary
    started = time.perf_counter()
    try:
        run = _SB3Run(spec, out, progress_bar) if spec.agent in SB3_AGENTS else _LMRun(spec, out, progress_bar)
    except RunArgumentError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    _write_json(out / RUN_FILE, _spec_dict(spec))
    start_steps = run.num_timesteps
    status = "done"
    try:
        run.learn(save or SaveSchedule())
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        run.save()
        run.close()
    wall = time.perf_counter() - started
    curve = read_curve(out)
    summary = {
        "status": status,
        "agent": spec.agent,
        "env": spec.env,
        "seed": spec.seed,
        "steps": spec.steps,
        "timesteps": run.num_timesteps,
        "resumed_from": start_steps,
        "final_mean_reward": final_mean_reward(curve),
        "wall_seconds": wall + (summary or {}).get("wall_seconds", 0.0),
        "steps_per_second": (run.num_timesteps - start_steps) / max(wall, 1e-9),
    }
    _write_json(out / SUMMARY_FILE, summary)
    if status == "interrupted":
        raise KeyboardInterrupt
    return summary


def _write_json(path: Path, data: Any) -> None:
    """Write ``path`` whole or not at all (a kill mid-write leaves the previous version)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def check_reuse(out: Path, spec: RunSpec) -> None:
    """Refuse a run directory made for another run (see :data:`MATCHED_KEYS`), naming what differs."""
    path = out / RUN_FILE
    if not path.is_file():
        from agents.checkpoint import CHECKPOINT_DIR, PREVIOUS_DIR

        if (out / CHECKPOINT_DIR).exists() or (out / PREVIOUS_DIR).exists():
            raise RunMismatchError(f"--out {str(out)!r} holds a checkpoint but no {RUN_FILE}: choose another --out")
        return
    try:
        saved = _read_run_file(path)
    except ValueError as err:
        raise RunMismatchError(f"--out: {err}; choose another --out") from err
    asked = _spec_dict(spec)
    differences = []
    for key in MATCHED_KEYS:
        there, here = _effective(saved, key), _effective(asked, key)
        if isinstance(there, dict) and isinstance(here, dict):
            differences += [
                f"{key}.{k}: {there.get(k, '(unset)')!r} there, {here.get(k, '(unset)')!r} here"
                for k in sorted(set(there) | set(here), key=str)
                if _canonical(there.get(k, "(unset)")) != _canonical(here.get(k, "(unset)"))
            ]
        elif _canonical(there) != _canonical(here):
            differences.append(f"{key}: {there!r} there, {here!r} here")
    if differences:
        raise RunMismatchError(
            f"--out {str(out)!r} holds a different run ({'; '.join(differences)}); "
            "rerun with its arguments or choose another --out"
        )


def _read_run_file(path: Path) -> dict[str, Any]:
    from textenv.files import parse_json

    try:
        saved = parse_json(path.read_bytes(), repr(str(path)))
    except (OSError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is damaged ({str(err).removeprefix(repr(str(path)) + ': ')})") from err
    if not isinstance(saved, dict):
        raise ValueError(f"{str(path)!r} is not a textenv run file (a JSON object)")
    return saved


def _effective(spec: dict[str, Any], key: str) -> Any:
    """``spec[key]``, with ``env_kwargs`` completed by the env id's registered defaults and the reward override."""
    if key != "env_kwargs":
        return spec.get(key)
    from textenv.registration import ENV_IDS

    defaults = ENV_IDS.get(spec.get("env"), ({}, ""))[0]
    kwargs = {**defaults, **(spec.get("env_kwargs") or {})}
    if spec.get("reward") is not None:
        kwargs["reward"] = spec["reward"]
    return kwargs


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


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
    """The run spec of ``out_dir``'s ``run.json``, as data: see :mod:`agents.runs.untrusted` before using it."""
    path = Path(out_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(out_dir)!r} is not a textenv run directory (no {RUN_FILE})")
    saved = _read_run_file(path)
    fields = {"agent", "env", "steps", "seed", "env_kwargs", "reward", "model", "agent_kwargs"}
    try:
        if set(saved) - fields or not isinstance(saved.get("env"), str):
            raise TypeError(f"unexpected keys {sorted(set(saved) - fields)}" if set(saved) - fields else "no env id")
        if not isinstance(saved.get("env_kwargs", {}), dict) or not isinstance(saved.get("agent_kwargs", {}), dict):
            raise TypeError("env_kwargs and agent_kwargs must be JSON objects")
        return RunSpec(**saved)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is not a valid textenv run file: {err}") from err


# -- SB3 ----------------------------------------------------------------------------------------------------
def build_sb3(spec: RunSpec, seed: int, env_kwargs: dict[str, Any]) -> Any:
    """The SB3 / sb3-contrib agent ``spec`` names, on its env built with ``env_kwargs`` and ``seed``:
    :func:`agents.sb3.make_sb3`, or :func:`agents.sb3.make_top_k_sb3` when the agent arguments hold ``top_k``.

    Raises:
        RunArgumentError: the algorithm refuses an argument, or ``top_k`` has no LM to rank tokens with.
    """
    from agents.sb3 import make_sb3, make_top_k_sb3

    kwargs = dict(spec.agent_kwargs)
    top_k = kwargs.pop("top_k", None)
    reference = None if top_k is None else spec.language_model()
    if top_k is not None and reference is None:
        raise RunArgumentError(
            f"{spec.agent} with top_k needs an LM to rank tokens: pass --model (the env {spec.env!r} names no "
            "tokenizer)"
        )
    try:
        if top_k is None:
            return make_sb3(spec.agent, spec.env, seed=seed, env_kwargs=env_kwargs, **kwargs)
        # action i = the LM's i-th most likely next token
        return make_top_k_sb3(spec.agent, spec.env, reference, k=top_k, seed=seed, env_kwargs=env_kwargs, **kwargs)
    except (AssertionError, TypeError, ValueError) as err:  # SB3 checks its arguments with assert
        raise RunArgumentError(f"{spec.agent} refuses its arguments {spec.agent_kwargs}: {err}") from err


class _SB3Run:
    """An SB3 / sb3-contrib agent built by :func:`build_sb3`, checkpointed without pickles."""

    WEIGHTS = "policy.safetensors"
    OPTIMIZER = "optimizer.pt"
    STATE = "state.json"

    def __init__(self, spec: RunSpec, out: Path, progress_bar: bool) -> None:
        self.spec, self.out, self.progress_bar = spec, out, progress_bar
        self.model = build_sb3(spec, spec.seed, spec.full_env_kwargs())
        self.num_timesteps = self._load()
        self.curve = CurveWriter(out, self.num_timesteps)

    def learn(self, save: SaveSchedule) -> None:
        remaining = self.spec.steps - self.num_timesteps
        if remaining <= 0:
            return
        save.start(self.num_timesteps)
        callback = _make_sb3_callback_class()(
            self.curve, self.spec.steps, self.num_timesteps, self.progress_bar, save=save, save_now=self.save
        )
        self.model.learn(total_timesteps=remaining, callback=callback, reset_num_timesteps=self.num_timesteps == 0)

    def _load(self) -> int:
        import torch
        from safetensors.torch import load_model

        from agents.checkpoint import DamagedCheckpointError, find_checkpoint

        found = find_checkpoint(self.out)
        if found is None:
            return 0
        load_model(self.model.policy, found / self.WEIGHTS)
        optimizer = getattr(self.model.policy, "optimizer", None)
        if optimizer is not None and (found / self.OPTIMIZER).is_file():
            try:
                optimizer.load_state_dict(torch.load(found / self.OPTIMIZER, weights_only=True))
            except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError) as err:
                raise DamagedCheckpointError(
                    f"checkpoint file {str(found / self.OPTIMIZER)!r} is not a weights-only optimiser state: "
                    f"{str(err).splitlines()[0]}"
                ) from err
        state = json.loads((found / self.STATE).read_text())
        self.model.num_timesteps = int(state["num_timesteps"])
        return self.model.num_timesteps

    def save(self) -> None:
        import torch
        from safetensors.torch import save_model

        from agents.checkpoint import COMPLETE_MARKER, write_atomically

        self.num_timesteps = int(self.model.num_timesteps)
        if _saved_timesteps(self.out) == self.num_timesteps:
            return

        def write(directory: Path) -> None:
            save_model(self.model.policy, str(directory / self.WEIGHTS))
            optimizer = getattr(self.model.policy, "optimizer", None)
            if optimizer is not None:
                torch.save(optimizer.state_dict(), directory / self.OPTIMIZER)
            (directory / self.STATE).write_text(json.dumps({"num_timesteps": self.num_timesteps}))
            (directory / COMPLETE_MARKER).write_text(json.dumps({"num_timesteps": self.num_timesteps}))

        write_atomically(self.out, write)

    def close(self) -> None:
        self.model.get_env().close()


def _saved_timesteps(out: Path) -> int | None:
    """The timesteps of the newest checkpoint in ``out`` (None: none, or unreadable)."""
    from agents.checkpoint import COMPLETE_MARKER, latest_checkpoint

    found = latest_checkpoint(out)
    try:
        return int(json.loads((found / COMPLETE_MARKER).read_text())["num_timesteps"]) if found else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _make_sb3_callback_class() -> type:
    from stable_baselines3.common.callbacks import BaseCallback

    class SB3CurveCallback(BaseCallback):
        """Collects finished episodes' rewards (from SB3's Monitor infos) into the run's curve; saves on schedule."""

        def __init__(
            self, curve: CurveWriter, total: int, start: int, progress_bar: bool, save: SaveSchedule,
            save_now: Callable[[], None], window: int = 0,
        ) -> None:
            super().__init__()
            self.curve, self.total, self.start = curve, total, start
            self.save, self.save_now = save, save_now
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
            if self.save.due(self.num_timesteps):
                self.flush()  # the curve up to the checkpoint is on disk with it
                self.save_now()
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

        trainer_class, config_class = {
            "lm-ppo": (lm.LMPPOTrainer, lm.LMPPOConfig),
            "grpo": (lm.GRPOTrainer, lm.GRPOConfig),
            "rloo": (lm.RLOOTrainer, lm.RLOOConfig),
        }[spec.agent]
        try:  # from_dict: a run directory written before the study switches moved into `experimental` still loads
            config = config_class.from_dict(
                {**spec.agent_kwargs, "seed": spec.seed, "output_dir": str(out), "progress_bar": False}
            )
        except (TypeError, ValueError) as err:
            raise RunArgumentError(f"bad {spec.agent} argument: {err}") from err
        model = spec.language_model()
        if model is None:
            raise RunArgumentError(
                f"{spec.agent} needs a policy model: pass --model (the env {spec.env!r} names no tokenizer)"
            )
        self.spec, self.out, self.progress_bar = spec, out, progress_bar
        try:
            self.trainer = trainer_class(spec.env, model, config, env_kwargs=spec.full_env_kwargs())
        except (FileNotFoundError, ValueError) as err:  # a model that is not there, a batch layout that cannot be
            raise RunArgumentError(f"{spec.agent}: {err}") from err
        self.trainer.load_checkpoint()
        self.curve = CurveWriter(out, self.trainer.num_timesteps)

    @property
    def num_timesteps(self) -> int:
        return int(self.trainer.num_timesteps)

    def learn(self, save: SaveSchedule) -> None:
        from tqdm.auto import tqdm

        from agents.lm.callbacks import Callback

        run = self

        class RunProgress(Callback):
            """Per iteration (a batch of ``num_envs`` episodes): a curve row, the progress bar, the save schedule;
            the trainer's execution plan above the bar when training starts."""

            def on_train_begin(self, trainer: Any) -> None:
                if run.progress_bar:
                    bar.write(trainer.execution_plan().line(), file=sys.stderr)

            def on_iteration_end(self, trainer: Any, metrics: dict[str, float]) -> None:
                run.curve.add_mean(run.num_timesteps, metrics["reward_mean"], trainer.num_envs)
                bar.update(run.num_timesteps - bar.n)
                bar.set_postfix(reward=f"{metrics['reward_mean']:+.3f}")
                if save.due(run.num_timesteps) and run.num_timesteps < run.spec.steps:
                    run.save()

        save.start(self.num_timesteps)
        bar = tqdm(
            total=self.spec.steps, initial=self.num_timesteps, unit="tok", desc="train", disable=not self.progress_bar
        )
        with bar:
            self.trainer.learn(self.spec.steps, callbacks=[RunProgress()])

    def save(self) -> None:
        if _saved_timesteps(self.out) != self.num_timesteps:  # the trainer saves when learn() returns
            self.trainer.save_checkpoint()

    def close(self) -> None:
        self.trainer.close()
