"""Callbacks of the LM trainers' loop (SB3/TRL style): code that runs after every iteration and can stop the run.

``trainer.train(iterations=None, max_seconds=None, callbacks=[...])`` calls, in order, every callback's
:meth:`Callback.on_train_begin`, then after each iteration :meth:`Callback.on_iteration_end` (a ``True`` return
stops the run after that iteration; every callback still sees it), and :meth:`Callback.on_train_end` once the loop
is over: iterations done, time budget spent, or stopped by a callback (not when an exception ends it).
The user's callbacks run first, then the trainer's logger, then its checkpoint schedule.

Built in: :class:`CheckpointSchedule` (the config's ``save_every`` / ``save_every_minutes`` / ``save_at_end``,
added by the trainer when ``output_dir`` is set) and :class:`agents.lm.logger.MetricsLogger` (CSV, TensorBoard,
progress bar). Example, evaluating every 10 iterations and stopping at a target::

    class EvaluateEvery(Callback):
        def on_iteration_end(self, trainer, metrics):
            if trainer.iteration % 10 == 0:
                score = my_evaluation(trainer.unwrapped_policy)
                metrics["eval_score"] = score      # logged with the iteration's metrics by loggers after it
                return score >= 0.9                 # stop

    trainer.train(max_seconds=20 * 60, callbacks=[EvaluateEvery()])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


class Callback:
    """Base class: override the hooks you need. ``trainer`` is the :class:`agents.lm.base.LMTrainer`."""

    def on_train_begin(self, trainer: Any) -> None:
        """Before the first iteration of a :meth:`train`/:meth:`learn` call."""

    def on_iteration_end(self, trainer: Any, metrics: dict[str, float]) -> bool | None:
        """After each iteration (``trainer.iteration`` already counts it). Return ``True`` to stop the run.
        ``metrics`` may be extended: callbacks later in the list see the additions."""
        return None

    def on_train_end(self, trainer: Any) -> None:
        """After the last iteration of a loop that was not ended by an exception."""


class CallbackList(Callback):
    """Several callbacks called in order; the run stops when any of them asks to."""

    def __init__(self, callbacks: Iterable[Callback]) -> None:
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks must be agents.lm.callbacks.Callback instances, got {callback!r}")

    def on_train_begin(self, trainer: Any) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(trainer)

    def on_iteration_end(self, trainer: Any, metrics: dict[str, float]) -> bool:
        stop = False
        for callback in self.callbacks:
            stop = bool(callback.on_iteration_end(trainer, metrics)) or stop
        return stop

    def on_train_end(self, trainer: Any) -> None:
        for callback in self.callbacks:
            callback.on_train_end(trainer)


class CheckpointSchedule(Callback):
    """Write ``trainer.save_checkpoint()`` every ``every_iterations`` iterations (0: never on that count), every
    ``every_minutes`` minutes of training wall time since the last write (0: never on that clock) and, with
    ``at_end``, when the loop ends (unless the last iteration was just saved). ``clock``: seconds, monotonic."""

    def __init__(
        self,
        every_iterations: int = 0,
        every_minutes: float = 0.0,
        at_end: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_iterations < 0 or every_minutes < 0:
            raise ValueError(
                f"every_iterations and every_minutes must be >= 0, got {every_iterations}, {every_minutes}"
            )
        self.every_iterations, self.every_minutes, self.at_end = every_iterations, every_minutes, at_end
        self.clock = clock
        self._saved_at = 0
        self._last_write = 0.0

    def on_train_begin(self, trainer: Any) -> None:
        self._saved_at = trainer.iteration
        self._last_write = self.clock()

    def on_iteration_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        due_count = self.every_iterations and trainer.iteration % self.every_iterations == 0
        due_clock = self.every_minutes and self.clock() - self._last_write >= self.every_minutes * 60
        if due_count or due_clock:
            self._save(trainer)

    def on_train_end(self, trainer: Any) -> None:
        if self.at_end and trainer.iteration != self._saved_at:
            self._save(trainer)

    def _save(self, trainer: Any) -> None:
        trainer.save_checkpoint()
        self._saved_at = trainer.iteration
        self._last_write = self.clock()
