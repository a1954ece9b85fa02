"""async_rollouts: an actor process samples round n+1 with round n's starting weights while the learner updates.

Checked: the importance weights are exactly 1 where the actor's weights are the learner's (and the learner's
log-probs of a fresh sample are the actor's); the same seed gives the same run, whose first round is the synchronous
one's; a SIGKILLed run resumes from its checkpoint to the weights of an uninterrupted run; bad settings are one
line; no actor process outlives train(), whether it returns, raises or the learner is killed.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from agents.lm import Callback, GRPOConfig, GRPOTrainer, LMPPOConfig, LMPPOTrainer
from agents.lm.async_rollouts import correct_for_staleness
from cli_util import assert_one_line_error, run_main
from textenv.models import TINY_MODEL

EOS, TARGET = 2, 107
PROMPTS = ["The movie was", "I walked into the theater and", "My friend said"]
FAST = dict(num_envs=8, num_minibatches=2, learning_rate=2e-3, progress_bar=False, seed=5)
TIMINGS = ("seconds", "tokens_per_second")  # metric names holding wall-clock measurements


def count_target(prompts, completions, completion_ids, **info):
    return [float(ids.count(TARGET)) for ids in completion_ids]


def env_kwargs(reward=count_target):
    return dict(tokenizer=TINY_MODEL, prompts=PROMPTS, reward=reward, max_new_tokens=6, max_prompt_tokens=12,
                allowed_token_ids=list(range(100, 115)) + [EOS])


def grpo(reward=count_target, **overrides) -> GRPOTrainer:
    config = GRPOConfig(**{**FAST, "num_generations": 4, "beta": 0.04, "async_rollouts": True, **overrides})
    return GRPOTrainer("MossText-v0", TINY_MODEL, config, env_kwargs=env_kwargs(reward))


def learned(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The metrics that do not measure time."""
    return [{k: v for k, v in row.items() if not k.endswith(TIMINGS)} for row in history]


def is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not is_running(pid)


class Do(Callback):
    """Records the actor's pid when training begins; runs ``action(trainer)`` after iteration ``at``."""

    def __init__(self, at: int = 0, action=None) -> None:
        self.at, self.action, self.actor_pid = at, action, None

    def on_train_begin(self, trainer):
        self.actor_pid = trainer.rollout_actor.pid

    def on_iteration_end(self, trainer, metrics):
        if trainer.iteration == self.at:
            self.action(trainer)


@functools.lru_cache(maxsize=1)
def uninterrupted(iterations: int = 5) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    trainer = grpo()
    history = trainer.train(iterations)
    return learned(history), {k: v.clone() for k, v in trainer.unwrapped_policy.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# -- importance weights --------------------------------------------------------------------------------------------
def test_importance_weights_are_one_exactly_where_the_actors_weights_are_the_learners():
    # LM-PPO's critic warm-up leaves the policy untouched for 2 rounds: rounds 0-2 are sampled with the weights the
    # learner still holds; round 3 with the weights before round 2's policy update
    config = LMPPOConfig(**FAST, critic_learning_rate=2e-3, critic_warmup_iterations=2, async_rollouts=True)
    trainer = LMPPOTrainer("MossText-v0", TINY_MODEL, config, env_kwargs=env_kwargs())
    history = trainer.train(4)
    for row in history[:3]:
        assert row["importance_weight_mean"] == row["importance_weight_max"] == 1.0
        assert row["importance_weight_clipped_fraction"] == 0.0
        assert "proximal_forward_seconds" not in row
    stale = history[3]
    assert stale["importance_weight_max"] != 1.0 and stale["proximal_forward_seconds"] > 0
    for row in history:
        assert row["weight_sync_seconds"] >= 0 and row["actor_weight_load_seconds"] >= 0

    # the learner's proximal forward of a fresh sample reads the actor's sampling log-probs: weights ~1
    rollout = trainer.engine.collect(torch.Generator().manual_seed(0), seed=0, prompt_indices=trainer.prompt_indices())
    behaviour = rollout.logprobs.clone()
    stats = correct_for_staleness(trainer, rollout, same_weights=False)
    assert torch.equal(rollout.behaviour_logprobs, behaviour)
    assert torch.allclose(rollout.logprobs, behaviour, atol=1e-5)
    assert abs(stats["importance_weight_mean"] - 1.0) < 1e-5 and stats["importance_weight_clipped_fraction"] == 0.0


def test_actor_old_logprobs_skip_the_proximal_forward_and_weigh_every_token_one():
    """``experimental.async_old_logprobs="actor"``: the actor's log-probs are the ratio's old policy, so no proximal forward runs
    and every importance weight is 1; the first round is the synchronous one, later rounds differ from the default
    correction's (their ratio has another denominator), and the same seed gives the same run."""
    history = learned(grpo(experimental={"async_old_logprobs": "actor"}).train(4))
    for row in history:
        assert row["importance_weight_mean"] == row["importance_weight_max"] == 1.0
        assert not any(key.startswith("proximal_forward") for key in row)
    default = learned(grpo().train(4))
    assert history[0] == default[0]
    assert any(mine["policy_loss"] != theirs["policy_loss"] for mine, theirs in zip(history[1:], default[1:]))
    assert learned(grpo(experimental={"async_old_logprobs": "actor"}).train(4)) == history
    with pytest.raises(ValueError, match=r"^GRPOConfig.experimental.async_old_logprobs='proximal'; expected one of "
                                         r"\('learner', 'actor'\)$"):
        GRPOConfig(experimental={"async_old_logprobs": "proximal"})


# -- determinism and resumption ------------------------------------------------------------------------------------
def test_the_same_seed_gives_the_same_run_whose_first_round_is_the_synchronous_one():
    history, weights = uninterrupted()
    again = grpo()
    assert learned(again.train(5)) == history
    assert_same_weights(weights, again.unwrapped_policy.state_dict())
    assert any(row["importance_weight_max"] != 1.0 for row in history[1:])  # later rounds really are stale

    synchronous, asynchronous = grpo(async_rollouts=False), grpo()
    sync_row, async_row = synchronous.train(1)[0], asynchronous.train(1)[0]
    for key in ("reward_mean", "entropy", "kl", "policy_loss", "grad_norm"):
        assert sync_row[key] == async_row[key], key
    assert_same_weights(synchronous.unwrapped_policy.state_dict(), asynchronous.unwrapped_policy.state_dict())


def _train_until_killed(output_dir: str, pid_file: str) -> None:
    trainer = grpo(output_dir=output_dir, save_every=1)
    # SIGKILL after round 3's update, before its checkpoint (the checkpoint schedule runs after user callbacks)
    killer = Do(at=3, action=lambda trainer: os.kill(os.getpid(), signal.SIGKILL))

    class RecordActor(Callback):
        def on_train_begin(self, trainer):
            Path(pid_file).write_text(str(trainer.rollout_actor.pid))

    trainer.train(50, callbacks=[RecordActor(), killer])


def test_a_sigkilled_run_leaves_no_actor_and_resumes_to_the_uninterrupted_weights(tmp_path):
    pid_file = tmp_path / "actor.pid"
    learner = multiprocessing.get_context("fork").Process(
        target=_train_until_killed, args=(str(tmp_path / "run"), str(pid_file))
    )
    learner.start()
    learner.join(120)
    assert learner.exitcode == -signal.SIGKILL
    assert wait_gone(int(pid_file.read_text())), "the actor outlived its killed learner"

    resumed = grpo(output_dir=str(tmp_path / "run"), save_every=1)
    assert resumed.load_checkpoint() is True and resumed.iteration == 2
    assert (tmp_path / "run" / "checkpoint" / "behaviour_policy" / "weights.safetensors").is_file()
    tail = learned(resumed.train(3))
    history, weights = uninterrupted()
    assert tail == history[2:]
    assert_same_weights(weights, resumed.unwrapped_policy.state_dict())


# -- settings and shutdown ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (["importance_sampling_cap=0.5"], "GRPOConfig.importance_sampling_cap=0.5; expected a finite number >= 1"),
        (['async_rollouts="yes"'], "grpo argument async_rollouts='yes': expected bool"),
    ],
)
def test_bad_settings_are_one_line(kwargs, message, capsys):
    code, _, err = run_main(capsys, "train", "--env", "MossText-v0", "--agent", "grpo", "--model", TINY_MODEL,
                            "--steps", "64", "--out", "x", "--agent-kwargs", *kwargs)
    assert_one_line_error(code, err, message)
    with pytest.raises(ValueError, match="^GRPOConfig.async_rollouts=1; expected True or False$"):
        GRPOConfig(async_rollouts=1)


def test_no_actor_outlives_train_whether_it_returns_or_raises():
    trainer = grpo()
    record = Do(at=1, action=lambda trainer: threads.append(torch.get_num_threads()))
    threads, before = [], torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        trainer.train(2, callbacks=[record])
        assert threads == [1] and torch.get_num_threads() == 2  # one learner thread while training, then restored
    finally:
        torch.set_num_threads(before)
    assert not is_running(record.actor_pid) and multiprocessing.active_children() == []
    assert trainer.rollout_actor is None

    def interrupt(trainer):
        raise KeyboardInterrupt

    record = Do(at=3, action=interrupt)  # Ctrl-C in the learner after round 2, while the actor samples round 3
    with pytest.raises(KeyboardInterrupt):
        trainer.train(5, callbacks=[record])
    assert not is_running(record.actor_pid) and multiprocessing.active_children() == []

    record = Do(at=4, action=lambda trainer: os.kill(trainer.rollout_actor.pid, signal.SIGKILL))
    # round 4 may have reached the pipe before the kill: then the request for round 5 finds the actor gone
    with pytest.raises(RuntimeError, match="^the actor process died \\(exit code -9\\) before it sent round [45]$"):
        trainer.train(5, callbacks=[record])
    assert not is_running(record.actor_pid) and multiprocessing.active_children() == []

    def reward_server_down(prompts, completions, completion_ids, **info):
        raise ConnectionError("reward server down")

    failing, record = grpo(reward=reward_server_down), Do()
    with pytest.raises(RuntimeError, match="^the actor process failed sampling round 0: RewardPluginError: reward "
                                           "plugin 'reward_server_down' raised ConnectionError: reward server down"):
        failing.train(2, callbacks=[record])
    assert not is_running(record.actor_pid) and multiprocessing.active_children() == []
