"""The settings that move textenv's GRPO toward TRL's, in the trainers: the learning-rate schedule (``lr_schedule``:
TRL's linear decay over the planned optimiser steps, its planned length from train()/learn()/lr_decay_iterations,
its survival across checkpoint and resume), and the study switches ``experimental.dapo_normalizer`` and
``experimental.kl_importance_weight``. Their numerics against hand-computed values are in test_lm_core.py."""

from __future__ import annotations

import pytest
import torch

from agents.lm import Callback, GRPOConfig, GRPOTrainer
from test_lm_checkpoint import ENV_KWARGS
from textenv.models import TINY_MODEL

LR = 2e-3


def grpo(**overrides) -> GRPOTrainer:
    settings = dict(num_envs=4, num_generations=2, num_minibatches=2, learning_rate=LR, progress_bar=False,
                    seed=5, reference_metrics=False)
    return GRPOTrainer("MossText-v0", TINY_MODEL, GRPOConfig(**{**settings, **overrides}), env_kwargs=ENV_KWARGS)


def record_lrs(trainer: GRPOTrainer) -> list[float]:
    """The policy group's learning rate at every optimiser step from now on."""
    seen: list[float] = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    return seen


class StopAt(Callback):
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def on_iteration_end(self, trainer, metrics):
        return trainer.iteration >= self.iteration


def test_linear_schedule_decays_to_zero_over_the_planned_steps():
    trainer = grpo(lr_schedule="linear")
    lrs = record_lrs(trainer)
    history = trainer.train(3)  # 3 iterations x 2 minibatches: N = 6
    assert lrs == pytest.approx([LR * (1 - n / 6) for n in range(6)])
    assert [h["learning_rate"] for h in history] == pytest.approx([LR * 5 / 6, LR * 3 / 6, LR * 1 / 6])
    constant = grpo()
    lrs = record_lrs(constant)
    constant.train(3)
    assert lrs == [LR] * 6


def test_linear_schedule_survives_checkpoint_and_resume(tmp_path):
    straight = grpo(lr_schedule="linear")
    straight_lrs = record_lrs(straight)
    straight.train(3)

    interrupted = grpo(lr_schedule="linear", output_dir=str(tmp_path))
    interrupted.train(3, callbacks=[StopAt(2)])  # planned for 3 iterations, stopped after 2 (checkpoint at the end)
    resumed = grpo(lr_schedule="linear", output_dir=str(tmp_path))
    assert resumed.load_checkpoint() and resumed.iteration == 2
    resumed_lrs = record_lrs(resumed)
    resumed.train(1)
    assert resumed_lrs == pytest.approx(straight_lrs[4:])  # steps 4 and 5 of 6, not a fresh decay
    for key, value in straight.unwrapped_policy.state_dict().items():
        assert torch.equal(value, resumed.unwrapped_policy.state_dict()[key]), key


def test_linear_schedule_needs_a_planned_length():
    trainer = grpo(lr_schedule="linear")
    with pytest.raises(ValueError, match="lr_schedule='linear' needs a planned run length.*lr_decay_iterations"):
        trainer.train(max_seconds=60)
    assert trainer.iteration == 0
    # lr_decay_iterations plans it: 2 iterations = 4 steps, then learning rate 0 (with a wall-time budget alone)
    fixed = grpo(lr_schedule="linear", lr_decay_iterations=2)
    lrs = record_lrs(fixed)
    fixed.train(max_seconds=600, callbacks=[StopAt(3)])
    assert lrs == pytest.approx([LR, LR * 3 / 4, LR / 2, LR / 4, 0.0, 0.0])


def test_a_later_call_past_the_planned_decay_warns():
    trainer = grpo(lr_schedule="linear")
    trainer.train(1)
    with pytest.warns(UserWarning, match="learning rate 0 past the end"):
        trainer.train(1)
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0


def test_linear_schedule_over_learn_decays_with_generated_tokens():
    trainer = grpo(lr_schedule="linear")
    lrs = record_lrs(trainer)
    total = 40
    history = trainer.learn(total)
    starts = [0.0] + [h["timesteps"] for h in history[:-1]]  # tokens generated when each iteration started
    expected = [LR * (1 - start / total) for start in starts for _ in range(2)]
    assert len(history) >= 2 and lrs == pytest.approx(expected)


def run(iterations: int = 1, **overrides) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The last iteration's metrics and the weights after ``iterations``."""
    trainer = grpo(num_envs=8, beta=0.1, **overrides)
    metrics = trainer.train(iterations)[-1]
    return metrics, trainer.unwrapped_policy.state_dict()


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[key], b[key]) for key in a)


def test_dapo_normalizer_and_kl_importance_weight_change_the_update():
    # one minibatch: the iteration's tokens / 1 are the minibatch's tokens, the same update
    one_step, plain = run(num_minibatches=1)
    _, rollout = run(num_minibatches=1, experimental={"dapo_normalizer": "rollout"})
    assert same_weights(plain, rollout)
    # two minibatches with different token counts: each step's loss is divided by the mean count instead of its own
    # (AdamW undoes a constant scale of the loss, not one that differs between steps)
    metrics, minibatch = run(num_minibatches=2)
    metrics_rollout, rollout = run(num_minibatches=2, experimental={"dapo_normalizer": "rollout"})
    assert metrics["policy_loss"] != metrics_rollout["policy_loss"] and not same_weights(minibatch, rollout)
    # the importance weight is 1 on an on-policy step, but its gradient is not (once the policy has left the
    # reference: in the first iteration the KL and its gradient are 0 either way)
    metrics_weighted, weighted = run(num_minibatches=1, experimental={"kl_importance_weight": True})
    assert one_step["kl_loss"] == metrics_weighted["kl_loss"] == 0 and same_weights(plain, weighted)
    metrics, plain = run(2, num_minibatches=1)
    metrics_weighted, weighted = run(2, num_minibatches=1, experimental={"kl_importance_weight": True})
    assert metrics["kl_loss"] == pytest.approx(metrics_weighted["kl_loss"], rel=1e-5) and metrics["kl_loss"] > 0
    assert not same_weights(plain, weighted)
