"""The `textenv` command line, end to end (in subprocesses where a run's process matters), on the small word task and
the tiny model."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agents.runs.compare as compare_module
from cli_util import assert_one_line_error, default_sigint, run_main, textenv


def test_console_script_is_installed():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '[project.scripts]\ntextenv = "agents.cli:main"\n' in pyproject
    script = Path(sys.executable).parent / "textenv"
    if "from agents.cli import main" not in script.read_text():
        pytest.skip(f"{script} was installed from an older pyproject.toml; reinstall with pip install -e .")
    result = subprocess.run([str(script), "envs"], capture_output=True, text=True, check=True)
    assert "MossText-v0" in result.stdout


def test_envs_and_rewards_list_what_is_registered():
    envs = textenv("envs").stdout
    assert "MossText-v0" in envs and "max_new_tokens = 24" in envs and "reward = 'sentiment'" in envs
    listed = textenv("rewards").stdout
    for name in ("sentiment", "keyword", "length", "repetition", "classifier", "fluency"):
        assert f"{name} " in listed and "builtin" in listed


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--env", "NoSuchEnv-v0", "--agent", "ppo", "--steps", "8", "--out", "x"],
         "unknown env 'NoSuchEnv-v0'; registered textenv envs: MossText-v0"),
        (["train", "--env", "MossText-v0", "--agent", "sac", "--steps", "8", "--out", "x"],
         "unknown agent 'sac'; expected one of: ppo, a2c, dqn"),
        (["train", "--env", "MossText-v0", "--agent", "ppo", "--steps", "8", "--out", "x", "--reward", "nope"],
         "unknown reward"),
        (["sample", "--env", "MossText-v0", "--reward", "nope"], "sentiment"),
        (["train", "--env", "MossText-v0", "--agent", "ppo", "--steps", "8", "--out", "x",
          "--env-kwargs", "max_new_tokens=abc"], "env argument max_new_tokens='abc': expected int"),
        (["train", "--env", "MossText-v0", "--agent", "ppo", "--steps", "8", "--out", "x",
          "--env-kwargs", "colour=3"], "unknown env argument 'colour'; valid: tokenizer"),
        (["compare", "--env", "MossText-v0", "--agents", "ppo,nope", "--budget", "8", "--out", "x"],
         "unknown agent 'nope'"),
    ],
)
def test_bad_names_and_arguments_exit_2_with_the_valid_choices(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, *args)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "x").exists()


def test_sample_random_policy_prints_episodes():
    out = textenv("sample", "--env", "MossWords-v0", "-n", "3", "--seed", "1").stdout
    assert out.count("--- episode") == 3 and "prompt:" in out and "reward:" in out


def test_sample_with_an_lm_policy():
    out = textenv(
        "sample", "--env", "MossText-v0", "--policy", "tiny-random-smollm2", "-n", "2",
        "--env-kwargs", "max_new_tokens=4",
    ).stdout
    assert out.count("completion:") == 2


def _curve_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_compare_two_agents_two_seeds_then_rerun_skips_done_pairs(tmp_path):
    out = tmp_path / "cmp"
    args = [
        "compare", "--env", "MossWords-v0", "--agents", "ppo,a2c", "--seeds", "2", "--budget", "256",
        "--out", str(out), "--jobs", "2",
    ]
    first = textenv(*args)
    assert "| ppo | 2/2 |" in first.stdout and "| a2c | 2/2 |" in first.stdout
    summary = _curve_rows(out / compare_module.SUMMARY_CSV)
    assert [row["agent"] for row in summary] == ["ppo", "a2c"]
    for row in summary:
        assert float(row["ci95_low"]) <= float(row["iqm"]) <= float(row["ci95_high"])
    png = out / compare_module.CURVES_PNG
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = sorted(out.glob("runs/*/seed*"))
    assert len(runs) == 4
    for run in runs:
        rows = _curve_rows(run / "curve.csv")
        assert rows and int(rows[-1]["timesteps"]) <= 256
        assert json.loads((run / "summary.json").read_text())["status"] == "done"
    stamps = {run: (run / "summary.json").stat().st_mtime_ns for run in runs}

    textenv(*args)  # everything is done: nothing reruns
    assert {run: (run / "summary.json").stat().st_mtime_ns for run in runs} == stamps

    (runs[0] / "summary.json").unlink()  # one pair unfinished: only it runs again
    third = textenv(*args)
    assert (runs[0] / "summary.json").is_file() and "4/4 runs finished" in third.stdout
    assert {run: (run / "summary.json").stat().st_mtime_ns for run in runs[1:]} == {r: stamps[r] for r in runs[1:]}


def test_train_ctrl_c_keeps_a_marked_partial_run_and_resumes(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "agents", "train", "--env", "MossWords-v0", "--agent", "ppo", "--steps", "200000",
               "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)
    deadline = time.time() + 300  # generous: a cold start on a loaded 2-core machine
    while time.time() < deadline and len(_curve_rows(out / "curve.csv") if (out / "curve.csv").is_file() else []) < 2:
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["timesteps"] < 200000
    assert (out / "checkpoint" / "policy.safetensors").is_file()

    resumed = textenv(
        "train", "--env", "MossWords-v0", "--agent", "ppo", "--steps", str(summary["timesteps"] + 64),
        "--out", str(out), "--no-progress",
    )
    final = json.loads(resumed.stdout)
    assert final["status"] == "done" and final["timesteps"] >= summary["timesteps"] + 64
    assert final["timesteps"] < summary["timesteps"] + 64 + 2048  # continued from the checkpoint, not from 0


def test_iqm_and_bootstrap():
    assert compare_module.iqm([1, 2, 3, 4]) == pytest.approx(2.5)
    assert compare_module.iqm([0, 1, 1, 100]) == pytest.approx(1.0)  # outliers do not move it
    assert compare_module.iqm([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]) == pytest.approx(4.5)
    low, high = compare_module.bootstrap_ci([1.0, 1.1, 0.9, 1.05, 0.95, 1.0])
    assert 0.9 <= low <= 1.0 <= high <= 1.1


@pytest.mark.parametrize("agent", ["lm-ppo", "grpo", "rloo"])
def test_help_agent_lists_every_lm_config_field_with_type_default_and_help(agent, capsys):
    import dataclasses

    from agents.runs.agent_args import RUNNER_ARGUMENTS, lm_config_class

    code, out, err = run_main(capsys, "train", "--agent", agent, "--help-agent")
    assert code == 0, err
    from agents.lm.experimental import ExperimentalSettings

    fields = [f for f in dataclasses.fields(lm_config_class(agent)) if f.name not in RUNNER_ARGUMENTS]
    assert len(fields) >= 15
    config_name = lm_config_class(agent).__name__
    switches = [f for f in dataclasses.fields(ExperimentalSettings) if f.metadata.get("only") in (None, config_name)]
    text = " ".join(out.split())
    for f in fields + switches:
        help_text = f.metadata["help"]
        assert len(help_text) > 20, f.name
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name == "experimental":  # the study switches: a JSON object, its fields listed under it
            assert "  experimental: JSON object" in out and out.index("  experimental:") > out.index("  num_envs:")
        else:
            assert f"{f.name}: {f.type} = {default!r}" in out, f.name
        assert " ".join(help_text.split()) in text, f.name
    assert ("kl_importance_weight" in out) == (agent == "grpo")  # a GRPO-only switch is listed for GRPO only


def test_help_agent_lists_sb3_constructor_parameters_and_textenv_defaults(capsys):
    from agents.sb3 import DEFAULT_HYPERPARAMS

    code, out, err = run_main(capsys, "train", "--agent", "dqn", "--help-agent")
    assert code == 0, err
    for key, value in DEFAULT_HYPERPARAMS["dqn"].items():
        assert f"  {key}: " in out and f"= {value!r} (textenv)" in out, key
    assert "  tau: float = 1.0\n" in out  # a library default, not textenv's
    assert "the soft update coefficient" in out  # help from DQN's docstring
    assert "  n_envs: int = 1\n" in out  # make_sb3's own arguments
    code, _, err = run_main(capsys, "train", "--agent", "sac", "--help-agent")
    assert code == 2 and "unknown agent 'sac'" in err
