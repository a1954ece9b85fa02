"""Faults in the command line's runs: kills resume, damaged checkpoints are named, reused run directories must
match, and every bad value is one line with exit 2."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.checkpoint import DamagedCheckpointError, check_checkpoint, find_checkpoint, latest_checkpoint
from agents.cli import main
from cli_util import assert_one_line_error, run_main, textenv

WORDS = ["--env", "MossWords-v0", "--agent", "ppo", "--no-progress"]
LM = [
    "--env", "MossText-v0", "--agent", "grpo", "--model", "tiny-random-smollm2", "--no-progress",
    "--env-kwargs", "tokenizer=tiny-random-smollm2", "max_new_tokens=4",
    "--agent-kwargs", "num_envs=4", "num_generations=2", "learning_rate=0.001",
]


def saved_timesteps(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "trainer_state.json").read_text())["num_timesteps"])


# -- kill -9 at a random moment, then resume ------------------------------------------------------------------
@pytest.mark.parametrize(
    "run_args", [WORDS + ["--save-every-steps", "256"], LM + ["--save-every-steps", "32"]], ids=["sb3-ppo", "lm-grpo"]
)
def test_a_kill_at_a_random_moment_resumes_from_the_last_save(run_args, tmp_path):
    out = tmp_path / "run"
    delay = random.Random().uniform(0.0, 3.0)
    command = [sys.executable, "-m", "agents", "train", *run_args, "--steps", "1000000", "--out", str(out),
               "--save-every-minutes", "0"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while latest_checkpoint(out) is None and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, process.stderr.read()
    assert latest_checkpoint(out) is not None, "no checkpoint within 240 s"
    time.sleep(delay)  # a random moment after the first save: mid-step, mid-save, between two renames ...
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    process.stderr.close()

    last = find_checkpoint(out, warn=False)
    assert last is not None, f"killed {delay:.2f} s after the first save: no whole checkpoint"
    check_checkpoint(last)
    killed_at = saved_timesteps(last)
    assert killed_at > 0

    resumed = textenv("train", *run_args, "--steps", str(killed_at + 32), "--out", str(out))
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "done", delay
    assert summary["resumed_from"] == killed_at, delay  # the last save, not 0
    assert summary["timesteps"] >= killed_at + 32
    check_checkpoint(out / "checkpoint")
    assert saved_timesteps(out / "checkpoint") == summary["timesteps"]
    assert saved_timesteps(out / "checkpoint.old") <= summary["timesteps"]


# -- damaged checkpoints ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> Path:
    """A PPO run saved at 128 steps (checkpoint.old) and 256 steps (checkpoint)."""
    out = tmp_path_factory.mktemp("damage") / "run"
    assert main(["train", *WORDS, "--steps", "128", "--out", str(out)]) == 0
    assert main(["train", *WORDS, "--steps", "256", "--out", str(out)]) == 0
    assert saved_timesteps(out / "checkpoint.old") == 128 and saved_timesteps(out / "checkpoint") == 256
    return out


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGEABLE = ["policy.safetensors", "optimizer.pt", "state.json", "trainer_state.json"]


@pytest.mark.parametrize("name", DAMAGEABLE)
def test_eval_names_a_damaged_checkpoint_file_and_resume_falls_back(name, two_checkpoints, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    truncate(run / "checkpoint" / name)
    prompts = tmp_path / "p.txt"
    prompts.write_text("name some colors :\n")

    code, _, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
    assert_one_line_error(code, err, f"checkpoint/{name}' is damaged")

    with pytest.warns(RuntimeWarning, match=f"checkpoint/{name}' is damaged.*resuming from the previous checkpoint"):
        code, out, err = run_main(capsys, "train", *WORDS, "--steps", "256", "--out", str(run))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["resumed_from"] == 128 and summary["timesteps"] == 256
    # the damaged checkpoint is set aside; the directory again holds a whole checkpoint and the one before it
    check_checkpoint(run / "checkpoint")
    assert saved_timesteps(run / "checkpoint") == 256 and saved_timesteps(run / "checkpoint.old") == 128
    with pytest.raises(DamagedCheckpointError):
        check_checkpoint(run / "checkpoint.damaged")
    code, _, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
    assert code == 0, err


def test_resume_with_every_checkpoint_damaged_is_one_line(two_checkpoints, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    truncate(run / "checkpoint" / "policy.safetensors")
    truncate(run / "checkpoint.old" / "optimizer.pt")
    code, _, err = run_main(capsys, "train", *WORDS, "--steps", "384", "--out", str(run))
    assert_one_line_error(code, err, "checkpoint/policy.safetensors' is damaged")


@pytest.mark.parametrize(
    "name, damage, problem",
    [
        ("model.safetensors", truncate, "8228 bytes, but its header describes 16456"),
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes() + b"\0"),
         "16457 bytes, but its header describes 16456"),
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:4]), "shorter than the 8-byte header length"),
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:40]), "does not fit"),
        ("trainer_state.json", truncate, "JSONDecodeError"),
        ("optimizer.pt", truncate, "BadZipFile"),
        ("optimizer.pt",
         lambda p: p.write_bytes(p.read_bytes().replace(b"\x00\x00\x80\x3f", b"\x00\x00\x80\x40", 1)), "CRC"),
    ],
)
def test_check_checkpoint_names_the_damaged_file(name, damage, problem, tmp_path):
    import torch
    from safetensors.torch import save_file

    from agents.checkpoint import write_atomically

    def write(directory: Path) -> None:
        (directory / "policy").mkdir()
        save_file({"w": torch.ones(64, 64)}, str(directory / "policy" / "model.safetensors"))
        torch.save({"state": {0: {"exp_avg": torch.ones(64)}}}, directory / "optimizer.pt")
        (directory / "trainer_state.json").write_text(json.dumps({"num_timesteps": 1, "pad": "x" * 100}))

    checkpoint = write_atomically(tmp_path, write)
    check_checkpoint(checkpoint)
    damaged = next(checkpoint.rglob(name))
    damage(damaged)
    with pytest.raises(DamagedCheckpointError, match=problem) as raised:
        check_checkpoint(checkpoint)
    assert str(damaged) in str(raised.value)
    with pytest.raises(DamagedCheckpointError):
        find_checkpoint(tmp_path)  # no checkpoint.old yet: nothing whole to fall back to
    write_atomically(tmp_path, write)  # a new whole checkpoint; the damaged one becomes checkpoint.old
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint"
    with pytest.raises(DamagedCheckpointError):
        check_checkpoint(tmp_path / "checkpoint.old")


# -- reusing --out ---------------------------------------------------------------------------------------------
def test_out_reuse_must_match_the_run_directory(two_checkpoints, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    made = (run / "run.json").read_text()

    for args, fragment in [
        (["--env", "MossWords-v0", "--agent", "a2c", "--steps", "256"], "agent: 'ppo' there, 'a2c' here"),
        ([*WORDS, "--steps", "512", "--env-kwargs", "max_new_tokens=6"], "env_kwargs.max_new_tokens: 4 there, 6 here"),
        ([*WORDS, "--steps", "256", "--seed", "1"], "seed: 0 there, 1 here"),
        ([*WORDS, "--steps", "256", "--agent-kwargs", "learning_rate=0.01"],
         "agent_kwargs.learning_rate: '(unset)' there, 0.01 here"),
        ([*WORDS, "--steps", "256", "--reward", "length"], "env_kwargs.reward: 'topic_words' there, 'length' here"),
    ]:
        code, _, err = run_main(capsys, "train", *args, "--out", str(run))
        assert_one_line_error(code, err, "holds a different run", fragment)
        assert (run / "run.json").read_text() == made
        assert saved_timesteps(run / "checkpoint") == 256

    # the same spec (a registered default spelled out counts as the same), more steps: it continues
    code, out, err = run_main(capsys, "train", *WORDS, "--steps", "384", "--out", str(run),
                              "--env-kwargs", "max_new_tokens=4")
    assert code == 0, err
    assert json.loads(out)["resumed_from"] == 256
    assert json.loads((run / "run.json").read_text())["steps"] == 384

    foreign = tmp_path / "foreign"
    (foreign / "checkpoint").mkdir(parents=True)
    code, _, err = run_main(capsys, "train", *WORDS, "--steps", "64", "--out", str(foreign))
    assert_one_line_error(code, err, str(foreign), "not an earlier `textenv train` output")
    assert (foreign / "checkpoint").is_dir() and not list((foreign / "checkpoint").iterdir())


# -- bad values: one line, exit 2, nothing written -------------------------------------------------------------
TRAIN = ["train", "--env", "MossWords-v0", "--agent", "ppo", "--steps", "64", "--out", "x"]


@pytest.mark.parametrize(
    "args, message",
    [
        (TRAIN + ["--env-kwargs", "max_new_tokens=0"], "max_new_tokens"),
        (TRAIN + ["--env-kwargs", "prompts=/nonexistent/p.txt"], "/nonexistent/p.txt"),
        (TRAIN + ["--agent-kwargs", "learning_rate=abc"], "ppo argument learning_rate='abc': expected float or int"),
        (TRAIN + ["--agent-kwargs", "n_steps=0"], "n_steps=0"),
        (TRAIN + ["--agent-kwargs", "seed=3"], "unknown ppo argument 'seed' (set by the command line's own flags)"),
        (TRAIN + ["--save-every-steps", "-5"], "every_steps=-5"),
        (["train", "--env", "MossWords-v0", "--agent", "grpo", "--steps", "64", "--out", "x", "--agent-kwargs",
          "learning_rate=abc"], "grpo argument learning_rate='abc': expected float or int"),
        (["train", "--env", "MossWords-v0", "--agent", "rloo", "--steps", "64", "--out", "x", "--agent-kwargs",
          "num_generations=1"], "num_generations=1"),
        (["train", "--env", "MossWords-v0", "--agent", "ppo", "--out", "x"], "train needs --steps"),
        (["sample", "--env", "MossWords-v0", "-n", "-1"], "-n must be > 0, got -1"),
        (["sample", "--env", "MossWords-v0", "--temperature", "0"], "--temperature must be > 0"),
        (["sample", "--env", "MossWords-v0", "--env-kwargs", "max_new_tokens=0"], "max_new_tokens"),
        (["sample", "--env", "MossWords-v0", "--policy", "/nonexistent/model"], "--policy '/nonexistent/model'"),
        (["compare", "--env", "MossWords-v0", "--agents", "ppo", "--budget", "64", "--out", "x", "--agent-kwargs",
          "learning_rate=abc"], "learning_rate='abc'"),
        (["compare", "--env", "MossWords-v0", "--agents", "ppo", "--budget", "64", "--out", "x", "--seeds", "0"],
         "--seeds and --jobs must be positive"),
        (["eval", "--checkpoint", "x", "--prompts", "builtin:test"], "is not a textenv run directory"),
        (["eval", "--checkpoint", "x", "--prompts", "builtin:test", "--samples", "0"], "--samples must be > 0"),
    ],
)
def test_bad_values_are_one_line_exit_2_and_write_nothing(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, *args)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "x").exists()


def test_eval_with_bad_prompts_is_one_line(two_checkpoints, tmp_path, capsys):
    code, _, err = run_main(capsys, "eval", "--checkpoint", str(two_checkpoints), "--prompts", str(tmp_path / "no.txt"))
    assert_one_line_error(code, err, "no.txt")
    (tmp_path / "run.json").write_text("{not json")
    code, _, err = run_main(capsys, "eval", "--checkpoint", str(tmp_path), "--prompts", "builtin:test")
    assert_one_line_error(code, err, "run.json' is damaged")


def test_lm_run_names_a_damaged_policy_and_resumes_from_the_previous_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_main(capsys, "train", *LM, "--steps", "8", "--out", str(run))
    assert code == 0, err
    first = saved_timesteps(run / "checkpoint")
    code, out, err = run_main(capsys, "train", *LM, "--steps", str(first + 8), "--out", str(run))
    assert code == 0, err
    assert saved_timesteps(run / "checkpoint.old") == first < saved_timesteps(run / "checkpoint")
    truncate(run / "checkpoint" / "policy" / "model.safetensors")
    prompts = tmp_path / "p.txt"
    prompts.write_text("The movie was\n")

    code, _, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
    assert_one_line_error(code, err, "checkpoint/policy/model.safetensors' is damaged")
    with pytest.warns(RuntimeWarning, match="model.safetensors' is damaged.*resuming from the previous checkpoint"):
        code, out, err = run_main(capsys, "train", *LM, "--steps", str(first + 16), "--out", str(run))
    assert code == 0, err
    assert json.loads(out)["resumed_from"] == first
    code, out, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
    assert code == 0, err
    assert json.loads(out)["kl_to_reference"]["mean"] == json.loads(out)["kl_to_reference"]["mean"]  # finite, not NaN


def test_save_schedule_by_steps_and_by_minutes(monkeypatch):
    import agents.runs.runner as runner

    clock = [0.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    schedule = runner.SaveSchedule(every_steps=100, every_minutes=1.0)
    schedule.start(0)
    assert not schedule.due(99) and schedule.due(100) and not schedule.due(150)
    clock[0] = 59.0
    assert not schedule.due(199)
    clock[0] = 61.0
    assert schedule.due(199)  # a minute since the save at 100 steps
    assert not schedule.due(250) and schedule.due(299)
    off = runner.SaveSchedule(every_steps=0, every_minutes=0)
    off.start(0)
    clock[0] = 1e9
    assert not off.due(10**9)
    with pytest.raises(ValueError, match="every_minutes=-1"):
        runner.SaveSchedule(every_minutes=-1)
