"""A run directory is data, not code: ``textenv eval`` on a run someone else made runs none of its code.

Each route from issue 10 is tried with a payload that writes a marker file when it runs, and with a control
that shows the payload really runs when the user asks for it on the command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.cli import main
from cli_util import assert_one_line_error, run_main, textenv
from textenv.word_task import TOPICS

ROOT = Path(__file__).resolve().parents[1]
MOSS_WORDS = ROOT / "textenv" / "data" / "moss_words"


@pytest.fixture(scope="module")
def sb3_run(tmp_path_factory) -> Path:
    """A finished 64-step PPO run on MossWords-v0 (built once; each test copies it)."""
    out = tmp_path_factory.mktemp("made") / "run"
    assert main(
        ["train", "--env", "MossWords-v0", "--agent", "ppo", "--steps", "64", "--out", str(out), "--no-progress"]
    ) == 0
    return out


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "held_out.txt"
    path.write_text(f"name some {next(iter(TOPICS))} :\n")
    return path


def edit_run(source: Path, target: Path, **changes) -> Path:
    shutil.copytree(source, target)
    spec = json.loads((target / "run.json").read_text())
    spec.update(changes)
    (target / "run.json").write_text(json.dumps(spec))
    return target


def test_a_module_attr_reward_in_run_json_is_not_imported(sb3_run, prompts, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "imported"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "marker_reward.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "def reward(prompts, completions, **info):\n    return [0.0] * len(completions)\n"
    )
    monkeypatch.syspath_prepend(str(plugins))  # importable, as from PYTHONPATH or the current directory
    run = edit_run(sb3_run, tmp_path / "run", reward="marker_reward:reward")

    code, _, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
    assert_one_line_error(code, err, "'marker_reward:reward'", "pass --reward 'marker_reward:reward'")
    assert not marker.exists() and "marker_reward" not in sys.modules

    # the same run in env_kwargs, and inside a reward list
    for changes in ({"reward": None, "env_kwargs": {"reward": "marker_reward:reward"}},
                    {"reward": ["topic_words", {"name": "marker_reward:reward", "weight": 0.5}]}):
        shutil.rmtree(run)
        edit_run(sb3_run, run, **changes)
        code, _, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
        assert_one_line_error(code, err, "pass --reward 'marker_reward:reward'")
        assert not marker.exists()

    # the run's reward_kwargs belong to the run's reward: an overriding --reward does not get them
    shutil.rmtree(run)
    edit_run(sb3_run, run, reward="marker_reward:reward", env_kwargs={"reward_kwargs": {"target_count": 2}})
    code, out, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts), "--reward", "length")
    assert code == 0, err
    assert not marker.exists()

    # control: the user names the plugin on the command line, so it is imported and used
    code, out, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts),
                              "--reward", "marker_reward:reward")
    assert code == 0, err
    assert marker.read_text() == "ran" and json.loads(out)["reward"]["max"] == 0.0


def write_remote_code_tokenizer(directory: Path, marker: Path) -> None:
    """The MossWords tokenizer, but loaded through an ``auto_map`` class whose module writes ``marker``."""
    shutil.copytree(MOSS_WORDS, directory)
    (directory / "prompts.jsonl").unlink()
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="MarkerTokenizer", auto_map={"AutoTokenizer": [None, "marker_tok.MarkerTokenizer"]})
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    (directory / "marker_tok.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n\n\n"
        "class MarkerTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )


def remote_code_run(sb3_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of ``sb3_run`` whose run.json loads its own ``tok/`` with trust_remote_code; (run, marker)."""
    marker = tmp_path / "ran"
    run = edit_run(sb3_run, tmp_path / "run")
    write_remote_code_tokenizer(run / "tok", marker)
    spec = json.loads((run / "run.json").read_text())
    spec["env_kwargs"] = {"tokenizer": str(run / "tok"), "trust_remote_code": True}
    (run / "run.json").write_text(json.dumps(spec))
    return run, marker


def test_trust_remote_code_in_run_json_does_not_run_the_run_directorys_code(sb3_run, prompts, tmp_path, capsys):
    run, marker = remote_code_run(sb3_run, tmp_path)
    code, _, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
    assert_one_line_error(code, err, "env_kwargs.trust_remote_code", "pass --trust-remote-code")
    assert not marker.exists()

    # also when it hides in the reward's keyword arguments
    shutil.rmtree(run)
    edit_run(sb3_run, run, env_kwargs={"reward_kwargs": {"trust_remote_code": True}})
    code, _, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
    assert_one_line_error(code, err, "env_kwargs.reward_kwargs.trust_remote_code", "pass --trust-remote-code")


def test_the_remote_code_route_is_real_when_the_user_allows_it(sb3_run, prompts, tmp_path):
    """Control for the test above, in a subprocess with its own module cache: --trust-remote-code runs the code."""
    run, marker = remote_code_run(sb3_run, tmp_path)
    result = textenv("eval", "--checkpoint", str(run), "--prompts", str(prompts), "--trust-remote-code",
                     env={"HF_MODULES_CACHE": str(tmp_path / "modules")}, check=False)
    assert marker.read_text() == "ran", result.stderr[-2000:]
    assert result.returncode == 0, result.stderr[-2000:]


def test_an_env_id_naming_a_module_is_refused(sb3_run, prompts, tmp_path, capsys):
    run = edit_run(sb3_run, tmp_path / "run", env="marker_module:MossWords-v0")
    code, _, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
    assert_one_line_error(code, err, "'marker_module:MossWords-v0'", "only registered env ids")
    assert "marker_module" not in sys.modules
    shutil.rmtree(run)
    edit_run(sb3_run, run, env="NoSuchEnv-v0")
    code, _, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
    assert_one_line_error(code, err, "'NoSuchEnv-v0', which is not registered here; textenv's envs: MossText-v0")


def test_agent_kwargs_in_run_json_are_checked(sb3_run, prompts, tmp_path, capsys):
    run = edit_run(sb3_run, tmp_path / "run", agent_kwargs={"learning_rate": "abc"})
    code, _, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
    assert_one_line_error(code, err, "run.json", "ppo argument learning_rate='abc': expected float or int")


def test_eval_never_unpickles(sb3_run, prompts, tmp_path, capsys):
    """A pickle in place of the optimiser state is never loaded by eval; a resume reads it weights-only."""
    marker = tmp_path / "unpickled"
    run = tmp_path / "run"
    shutil.copytree(sb3_run, run)
    payload = (
        "import os, pickle, torch\n"
        "class P:\n    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'state': P()}}, {str(run / 'checkpoint' / 'optimizer.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", payload], check=True)
    code, out, err = run_main(capsys, "eval", "--checkpoint", str(run), "--prompts", str(prompts))
    assert code == 0, err
    assert not marker.exists()
    result = textenv("train", "--env", "MossWords-v0", "--agent", "ppo", "--steps", "128", "--out", str(run),
                     "--no-progress", check=False)
    assert not marker.exists()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "optimizer.pt' is not a weights-only optimiser state" in result.stderr
