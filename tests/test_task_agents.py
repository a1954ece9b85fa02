"""Every agent on the task envs: the LM agents (GRPO, RLOO, LM-PPO) and an SB3 agent train on textenv/ReasoningGym-v0
and textenv/TextArena-v0 through the runner and the command line, and held-out evaluation reads the test split."""

from __future__ import annotations

import json

import pytest

from agents.runs.evaluate import evaluate
from agents.runs.runner import RunSpec, train
from cli_util import assert_one_line_error, run_main
from textenv.models import TINY_MODEL

SMALL_SPACE = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
RG_KWARGS = {
    "task": "chain_sum", "task_config": SMALL_SPACE, "train_size": 32, "test_size": 6, "max_new_tokens": 4,
    "reward_kwargs": {"format_weight": 0.5},
}
LM_KWARGS = {"num_envs": 4, "num_generations": 2}


@pytest.mark.parametrize(
    ("agent", "agent_kwargs"),
    [("grpo", LM_KWARGS), ("rloo", LM_KWARGS), ("lm-ppo", {"num_envs": 4, "num_minibatches": 1})],
)
def test_lm_agents_train_on_reasoning_gym_and_log_the_reward_components(tmp_path, agent, agent_kwargs):
    spec = RunSpec(
        agent=agent, env="textenv/ReasoningGym-v0", steps=8, model=TINY_MODEL, env_kwargs=RG_KWARGS,
        agent_kwargs=agent_kwargs,
    )
    summary = train(spec, tmp_path / "run", progress_bar=False)
    assert summary["status"] == "done" and summary["timesteps"] >= 8
    with open(tmp_path / "run" / "progress.csv") as f:
        header = f.readline()
    assert "reward_correct_mean" in header and "reward_format_mean" in header, header


def test_train_and_eval_on_the_held_out_split_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_main(
        capsys, "train", "--agent", "grpo", "--env", "textenv/ReasoningGym-v0", "--model", TINY_MODEL,
        "--steps", "8", "--out", str(out), "--no-progress",
        "--env-kwargs", "task=chain_sum", f"task_config={json.dumps(SMALL_SPACE)}", "train_size=32", "test_size=6",
        "max_new_tokens=4", "--agent-kwargs", "num_envs=4", "num_generations=2",
    )
    assert code == 0, err
    code, stdout, err = run_main(capsys, "eval", "--checkpoint", str(out), "--prompts", "split:test", "--samples", "2")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["episodes"] == 12  # the 6 test questions, twice
    assert set(result["reward_components"]) == {"correct", "format"}
    code, _, err = run_main(capsys, "eval", "--checkpoint", str(out), "--prompts", "split:validation")
    assert_one_line_error(code, err, "split='validation'")


def test_bad_task_arguments_on_the_command_line_exit_2_in_one_line(tmp_path, capsys):
    base = ["train", "--agent", "grpo", "--env", "textenv/ReasoningGym-v0", "--steps", "8", "--out", str(tmp_path)]
    code, _, err = run_main(capsys, *base, "--env-kwargs", "task=chain_sum", 'task_config={"terms": 2}')
    assert_one_line_error(code, err, "'terms' is not a setting of chain_sum")
    code, _, err = run_main(capsys, *base, "--env-kwargs", "task=chain_sums")
    assert_one_line_error(code, err, "unknown reasoning-gym task 'chain_sums'")
    code, _, err = run_main(capsys, *base, "--env-kwargs", "tasks=chain_sum")
    assert_one_line_error(code, err, "unknown env argument 'tasks'")
    code, _, err = run_main(capsys, "sample", "--env", "textenv/TextArena-v0", "--env-kwargs", "game=Wordle-v0")
    assert_one_line_error(code, err, "needs the NLTK data")


def test_grpo_plays_a_textarena_game(tmp_path):
    spec = RunSpec(
        agent="grpo", env="textenv/TextArena-v0", steps=16, model=TINY_MODEL,
        env_kwargs={"game": "GuessTheNumber-v0", "max_turn_tokens": 3, "max_total_tokens": 24, "test_size": 8},
        agent_kwargs=LM_KWARGS,
    )
    summary = train(spec, tmp_path / "run", progress_bar=False)
    assert summary["status"] == "done"
    result = evaluate(tmp_path / "run", "split:test", batch_size=4)
    assert result["episodes"] == 8 and "game_reward" in result["reward_components"]


def test_sb3_ppo_trains_on_reasoning_gym(tmp_path):
    spec = RunSpec(
        agent="ppo", env="textenv/ReasoningGym-v0", steps=32, env_kwargs={**RG_KWARGS, "tokenizer": TINY_MODEL},
        agent_kwargs={"n_steps": 16, "batch_size": 16, "n_epochs": 1},
    )
    summary = train(spec, tmp_path / "run", progress_bar=False)
    assert summary["status"] == "done" and summary["timesteps"] >= 32


def test_compare_gives_each_agent_its_own_arguments_and_sb3_acts_among_the_top_k(tmp_path, capsys):
    """One comparison of an LM agent and SB3 PPO on the LM's top-k tokens: the arguments only one agent takes go
    with --agent-kwargs-for, both runs finish into one table, and the PPO run's policy chooses among k actions."""
    from safetensors import safe_open

    out = tmp_path / "cmp"
    code, stdout, err = run_main(
        capsys, "compare", "--env", "textenv/ReasoningGym-v0", "--model", TINY_MODEL, "--agents", "grpo,ppo",
        "--seeds", "1", "--budget", "16", "--out", str(out),
        "--env-kwargs", "task=chain_sum", f"task_config={json.dumps(SMALL_SPACE)}", "train_size=32", "test_size=6",
        "max_new_tokens=4", f"tokenizer={json.dumps(TINY_MODEL)}",
        "--agent-kwargs", "learning_rate=0.0001",
        "--agent-kwargs-for", "grpo", "num_envs=4", "num_generations=2",
        "--agent-kwargs-for", "ppo", "top_k=3", "n_envs=2", "n_steps=8", "batch_size=8", "n_epochs=1",
    )
    assert code == 0, err
    assert "| grpo | 1/1 |" in stdout and "| ppo | 1/1 |" in stdout
    ppo_run = out / "runs" / "ppo" / "seed0"
    saved = json.loads((ppo_run / "run.json").read_text())["agent_kwargs"]
    assert saved == {"learning_rate": 0.0001, "top_k": 3, "n_envs": 2, "n_steps": 8, "batch_size": 8, "n_epochs": 1}
    assert json.loads((out / "runs" / "grpo" / "seed0" / "run.json").read_text())["agent_kwargs"] == {
        "learning_rate": 0.0001, "num_envs": 4, "num_generations": 2}
    with safe_open(str(next(ppo_run.glob("checkpoint*/policy.safetensors"))), "pt") as weights:
        assert weights.get_tensor("action_net.weight").shape[0] == 3  # one logit per candidate, not per token
    result = evaluate(ppo_run, "split:test")
    assert result["episodes"] == 6 and 0 <= result["reward"]["mean"] <= 1.5  # correct + 0.5 format, on the test split


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--agent-kwargs-for", "rloo", "num_envs=4"], "--agent-kwargs-for 'rloo': not one of --agents (grpo, ppo)"),
        (["--agent-kwargs-for", "ppo", "top_k"], "--agent-kwargs-for ppo takes KEY=VALUE pairs, got 'top_k'"),
        (["--agent-kwargs-for", "ppo", "top_k=two"], "ppo argument top_k='two': expected NoneType or int"),
        (["--agent-kwargs-for", "ppo", "num_generations=2"], "unknown ppo argument 'num_generations'"),
    ],
)
def test_bad_per_agent_arguments_are_one_line(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(
        capsys, "compare", "--env", "textenv/ReasoningGym-v0", "--model", TINY_MODEL, "--agents", "grpo,ppo",
        "--budget", "16", "--out", "x", "--env-kwargs", "task=chain_sum", *extra,
    )
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "x").exists()
