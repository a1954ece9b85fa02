"""Checkpoints of the LM agents: atomic writes, safe formats, and exact resumption of an interrupted run."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from agents.checkpoint import find_checkpoint, write_atomically
from agents.lm import GRPOConfig, GRPOTrainer, LMPPOConfig, LMPPOTrainer
from textenv.models import TINY_MODEL

EOS, TARGET = 2, 107
ENV_KWARGS = dict(
    tokenizer=TINY_MODEL,
    prompts=["The movie was", "I walked into the theater and", "My friend said"],
    reward=lambda prompts, completions, completion_ids, **info: [float(ids.count(TARGET)) for ids in completion_ids],
    max_new_tokens=6,
    max_prompt_tokens=12,
    allowed_token_ids=list(range(100, 115)) + [EOS],
)


def ppo(output_dir, **overrides):
    settings = dict(
        num_envs=8, num_minibatches=2, update_epochs=2, learning_rate=2e-3, critic_learning_rate=2e-3,
        adaptive_kl=True, kl_target=0.05, kl_horizon=100,  # so the controller's state matters on resume
        save_every=1, output_dir=str(output_dir), progress_bar=False, seed=7,
    )
    config = LMPPOConfig(**{**settings, **overrides})
    return LMPPOTrainer("MossText-v0", TINY_MODEL, config, env_kwargs=ENV_KWARGS)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_same_optimizer_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    state_a, state_b = a.state_dict()["state"], b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        for name, value in state_a[index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b[index][name])), (index, name)


def test_interrupted_and_resumed_run_reaches_the_same_weights(tmp_path):
    uninterrupted = ppo(tmp_path / "a")
    history_a = uninterrupted.train(3)

    interrupted = ppo(tmp_path / "b")
    interrupted.train(2)  # checkpoints after iterations 1 and 2, then the process "dies"
    del interrupted
    with open(tmp_path / "b" / "progress.csv", "a", newline="") as f:  # a row the dead run logged after its checkpoint
        f.write("3" + ",0" * (len(read_csv(tmp_path / "a" / "progress.csv")[0]) - 1) + "\n")

    resumed = ppo(tmp_path / "b")
    assert resumed.load_checkpoint() is True
    assert resumed.iteration == 2 and resumed.num_episodes == 16
    history_b = resumed.train(1)

    assert_same_tensors(uninterrupted.unwrapped_policy.state_dict(), resumed.unwrapped_policy.state_dict())
    assert_same_tensors(uninterrupted.value_model.state_dict(), resumed.value_model.state_dict())
    assert_same_optimizer_state(uninterrupted.optimizer, resumed.optimizer)
    assert uninterrupted.kl_controller.value == resumed.kl_controller.value != 0.05
    assert uninterrupted.reward_moments.state_dict() == resumed.reward_moments.state_dict()
    for key in ("reward_mean", "kl", "value_loss", "policy_loss", "kl_coef", "entropy"):
        assert history_a[2][key] == history_b[0][key], key
    # the CSV reads as one uninterrupted run: the dead run's extra row was dropped
    rows_a, rows_b = read_csv(tmp_path / "a" / "progress.csv"), read_csv(tmp_path / "b" / "progress.csv")
    assert [r["iteration"] for r in rows_b] == ["1.0", "2.0", "3.0"]
    assert [r["reward_mean"] for r in rows_a] == [r["reward_mean"] for r in rows_b]


def test_checkpoint_layout_uses_safe_formats(tmp_path):
    trainer = ppo(tmp_path, save_every=0)
    trainer.train(1)
    checkpoint = tmp_path / "checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint", "execution_plan.txt", "progress.csv", "tensorboard"
    ]
    assert (checkpoint / "policy" / "model.safetensors").is_file()
    assert (checkpoint / "policy" / "tokenizer.json").is_file()
    head = load_file(checkpoint / "value" / "value_head.safetensors")
    assert torch.equal(head["weight"], trainer.value_model.head.weight.detach())
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    assert set(state) == {"optimizers", "torch_rng", "cuda_rng"}
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["config_class"] == "LMPPOConfig" and LMPPOConfig.from_dict(config) == trainer.config
    assert json.loads((checkpoint / "trainer_state.json").read_text())["iteration"] == 1
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    def good(directory):
        (directory / "weights.bin").write_text("old")
        (directory / "trainer_state.json").write_text("{}")

    def dies_halfway(directory):
        (directory / "weights.bin").write_text("new, partial")
        raise KeyboardInterrupt("killed while writing")

    write_atomically(tmp_path, good)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path, dies_halfway)
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint"
    assert (tmp_path / "checkpoint" / "weights.bin").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]  # no half-written directory left behind
    # a kill between the two renames leaves only checkpoint.old, which is still found
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.old")
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint.old"


def test_group_trainer_resumes_and_missing_checkpoint_is_reported(tmp_path):
    def grpo(output_dir):
        config = GRPOConfig(num_envs=8, num_generations=4, learning_rate=2e-3, output_dir=str(output_dir),
                            progress_bar=False, seed=3)
        return GRPOTrainer("MossText-v0", TINY_MODEL, config, env_kwargs=ENV_KWARGS)

    fresh = grpo(tmp_path / "none")
    assert fresh.load_checkpoint() is False and fresh.iteration == 0
    straight = grpo(tmp_path / "a")
    straight.train(2)
    first = grpo(tmp_path / "b")
    first.train(1)
    resumed = grpo(tmp_path / "b")
    assert resumed.load_checkpoint(tmp_path / "b" / "checkpoint")
    resumed.train(1)
    assert_same_tensors(straight.unwrapped_policy.state_dict(), resumed.unwrapped_policy.state_dict())
