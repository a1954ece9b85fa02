"""The learning-rate schedule of the LM trainers: constant, or TRL's linear decay to 0.

``"linear"`` is ``transformers.get_linear_schedule_with_warmup`` with no warm-up, the scheduler TRL's trainers use
by default (``TrainingArguments.lr_scheduler_type="linear"``): the ``n``-th optimiser step of a run planned for
``N`` steps (``n`` from 0) runs at ``lr * (1 - n / N)`` in every parameter group, and at 0 once ``n >= N``.

The planned length ``N`` is fixed once per run, from the first of:

* ``lr_decay_iterations`` in the config: that many iterations of ``update_epochs * num_minibatches`` steps;
* the first :meth:`~agents.lm.base.LMTrainer.train` call with ``iterations``: the iteration the run will stop at,
  in optimiser steps (so a run that a callback or ``max_seconds`` stops early has not finished its decay);
* the first :meth:`~agents.lm.base.LMTrainer.learn` call: ``total_timesteps``; the decay then runs on generated
  tokens, ``lr * (1 - num_timesteps / total_timesteps)`` with ``num_timesteps`` counted when the iteration starts
  (SB3's ``progress_remaining``), since the number of iterations a token budget takes is not known beforehand.

``train(max_seconds=...)`` alone plans no length: with ``"linear"`` and no ``lr_decay_iterations`` it raises.
The plan and the steps taken are part of the trainer state a checkpoint holds, so a resumed run continues the same
decay; a later call planned past the end of the decay trains at learning rate 0 and warns.
"""

from __future__ import annotations

from typing import Any

import torch

from textenv.user_warnings import warn_caller

LR_SCHEDULES = ("constant", "linear")


class LearningRateSchedule:
    """Sets every parameter group's learning rate before each optimiser step (``base lr * factor``)."""

    def __init__(self, kind: str, optimizer: torch.optim.Optimizer, steps_per_iteration: int,
                 decay_iterations: int | None = None) -> None:
        if kind not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={kind!r}; expected one of {LR_SCHEDULES}")
        self.kind = kind
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.steps_per_iteration = steps_per_iteration
        self.unit: str | None = None  # "steps" (optimiser steps) or "timesteps" (generated tokens)
        self.total: int | None = None
        self.steps = 0  # optimiser steps taken
        self.iteration_timesteps = 0  # num_timesteps when the current iteration started
        if kind == "linear" and decay_iterations is not None:
            self.unit, self.total = "steps", decay_iterations * steps_per_iteration

    # -- planning ------------------------------------------------------------------------------------------------
    def plan_iterations(self, stop_iteration: int | None) -> None:
        """A :meth:`train` call that runs until ``stop_iteration`` (``None``: no iteration count)."""
        if self.kind == "constant":
            return
        if stop_iteration is None:
            if self.total is None:
                raise ValueError(
                    "lr_schedule='linear' needs a planned run length: pass iterations to train(), use "
                    "learn(total_timesteps), or set lr_decay_iterations"
                )
            return
        self._plan("steps", stop_iteration * self.steps_per_iteration)

    def plan_timesteps(self, total_timesteps: int) -> None:
        """A :meth:`learn` call that runs until ``total_timesteps`` generated tokens."""
        if self.kind == "linear":
            self._plan("timesteps", total_timesteps)

    def _plan(self, unit: str, total: int) -> None:
        if self.total is None:
            self.unit, self.total = unit, max(int(total), 1)
            return
        if unit == self.unit and total > self.total:
            warn_caller(
                f"the linear learning-rate decay ends after {self.total} {self.unit}; this run is planned for "
                f"{total} and trains at learning rate 0 past the end (set lr_decay_iterations for a longer decay)"
            )

    # -- stepping ------------------------------------------------------------------------------------------------
    def start_iteration(self, num_timesteps: int) -> None:
        self.iteration_timesteps = num_timesteps

    def factor(self) -> float:
        """The multiplier of the base learning rates for the next optimiser step."""
        if self.kind == "constant" or self.total is None:
            return 1.0
        done = self.steps if self.unit == "steps" else self.iteration_timesteps
        return max(0.0, (self.total - done) / self.total)

    def before_step(self, optimizer: torch.optim.Optimizer) -> float:
        """Set the learning rates of the next step; return the factor."""
        factor = self.factor()
        for group, base in zip(optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        return factor

    def after_step(self) -> None:
        self.steps += 1

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "unit": self.unit, "total": self.total, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the steps taken and, when the checkpoint's schedule is of this kind, its plan (a changed config
        is reported by the trainer; the new kind then plans afresh)."""
        self.steps = int(state["steps"])
        if state["kind"] == self.kind and state["total"] is not None:
            self.unit, self.total = state["unit"], int(state["total"])
