"""The LM trainers' loop: checkpoints on the configured schedule only, callbacks that stop the run, a time budget."""

from __future__ import annotations

import json
import time

import pytest

from agents.lm import GRPOConfig, GRPOTrainer
from agents.lm.callbacks import Callback, CheckpointSchedule
from textenv.models import TINY_MODEL

ENV_KWARGS = dict(
    tokenizer=TINY_MODEL,
    prompts=["The movie was", "My friend said"],
    reward=lambda prompts, completions, completion_ids, **info: [float(ids.count(107)) for ids in completion_ids],
    max_new_tokens=3,
    max_prompt_tokens=8,
    allowed_token_ids=list(range(100, 115)) + [2],
)


def grpo(output_dir=None, **overrides):
    settings = dict(num_envs=4, num_generations=2, learning_rate=1e-3, progress_bar=False, seed=1,
                    output_dir=None if output_dir is None else str(output_dir))
    return GRPOTrainer("MossText-v0", TINY_MODEL, GRPOConfig(**{**settings, **overrides}), env_kwargs=ENV_KWARGS)


def record_saves(trainer) -> list[int]:
    """The iteration at each real checkpoint write."""
    saved: list[int] = []
    write = trainer.save_checkpoint

    def save_and_record(*args, **kwargs):
        saved.append(trainer.iteration)
        return write(*args, **kwargs)

    trainer.save_checkpoint = save_and_record
    return saved


def saved_iteration(output_dir) -> int:
    return json.loads((output_dir / "checkpoint" / "trainer_state.json").read_text())["iteration"]


@pytest.mark.parametrize(("save_at_end", "expected"), [(True, [2, 4, 5]), (False, [2, 4])])
def test_checkpoints_are_written_on_the_iteration_schedule_only(tmp_path, save_at_end, expected):
    trainer = grpo(tmp_path, save_every=2, save_at_end=save_at_end)
    saved = record_saves(trainer)
    assert len(trainer.train(5)) == 5
    assert saved == expected
    assert saved_iteration(tmp_path) == expected[-1]


def test_checkpoints_on_the_clock_schedule(tmp_path):
    """Every iteration takes 40 s of a test clock: with save_every_minutes=1 a checkpoint follows iterations 2
    and 4 (80 s after the last write), not 1, 3 or 5."""
    now = [0.0]

    class Tick(Callback):
        def on_iteration_end(self, trainer, metrics):
            now[0] += 40.0

    trainer = grpo(tmp_path, save_at_end=False)
    saved = record_saves(trainer)
    trainer.train(5, callbacks=[Tick(), CheckpointSchedule(every_minutes=1, at_end=False, clock=lambda: now[0])])
    assert saved == [2, 4]


def test_without_an_output_dir_nothing_is_written_and_the_config_schedule_is_off(tmp_path):
    trainer = grpo(save_every=1)
    saved = record_saves(trainer)
    trainer.train(2)
    assert saved == []


def test_a_callback_sees_every_iteration_and_can_stop_the_run(tmp_path):
    events = []

    class StopAtThree(Callback):
        def on_train_begin(self, trainer):
            events.append(("begin", trainer.iteration))

        def on_iteration_end(self, trainer, metrics):
            events.append(("iteration", trainer.iteration, metrics["iteration"]))
            metrics["eval_score"] = 10.0 * trainer.iteration  # logged with the iteration's row
            return trainer.iteration == 3

        def on_train_end(self, trainer):
            events.append(("end", trainer.iteration))

    trainer = grpo(tmp_path, save_every=0)
    saved = record_saves(trainer)
    history = trainer.train(100, callbacks=StopAtThree())
    assert len(history) == 3 and trainer.iteration == 3
    assert events == [("begin", 0), ("iteration", 1, 1.0), ("iteration", 2, 2.0), ("iteration", 3, 3.0), ("end", 3)]
    assert [m["eval_score"] for m in history] == [10.0, 20.0, 30.0]
    assert "eval_score" in (tmp_path / "progress.csv").read_text().splitlines()[0]  # the logger ran after it
    assert saved == [3]  # save_at_end


def test_the_time_budget_stops_the_run_and_no_iteration_starts_after_it():
    ends = []

    class Clock(Callback):
        def on_train_begin(self, trainer):
            ends.append(time.monotonic())

        def on_iteration_end(self, trainer, metrics):
            time.sleep(0.2)
            ends.append(time.monotonic())

    budget = 1.0
    history = grpo().train(max_seconds=budget, callbacks=[Clock()])
    started = ends[0]
    assert 1 <= len(history) < 100
    assert ends[-2] - started < budget <= ends[-1] - started  # the last iteration started within the budget
    assert grpo().train(max_seconds=0) == []
    with pytest.raises(ValueError, match="iterations, max_seconds"):
        grpo().train()
