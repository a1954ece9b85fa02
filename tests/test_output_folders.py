"""Commands that write a folder never replace or delete what was there unless it is their own earlier output.

``train-rm``, ``train``, ``compare`` and ``overoptimization`` refuse (one line, exit 2, nothing touched) a file, a
project folder with other files, and another command's output; a rerun into their own earlier output replaces
only what they wrote (a file the user added survives). Outputs get the permissions the user's umask gives.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from agents.checkpoint import (
    OUTPUT_MARKER,
    OutputDirError,
    check_output_dir,
    claim_output_dir,
    write_atomically,
    write_directory_atomically,
)
from cli_util import assert_one_line_error, run_main
from textenv.files import default_mode
from textenv.models import TINY_MODEL
from textenv.preferences import PreferencePair, write_preferences

TRAIN_RM = ["--model", TINY_MODEL, "--num-train-epochs", "1", "--trainable-blocks", "1", "--progress-bar", "false"]


def project_folder(root: Path) -> dict[str, bytes]:
    """A folder a user works in: files, and a ``logs/`` subfolder (what train-rm used to clear). Its contents."""
    (root / "logs").mkdir(parents=True)
    files = {"notes.txt": b"my notes\n", "logs/2024.txt": b"lab log\n", "data.csv": b"a,b\n1,2\n"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def pairs_file(path: Path, count: int = 16) -> Path:
    rng = random.Random(0)
    words = "apple river stone cloud music green table window".split()
    pairs = [
        PreferencePair(
            prompt=f"item {i % 4}:",
            chosen=" wonderful " + " ".join(rng.choice(words) for _ in range(3)),
            rejected=" " + " ".join(rng.choice(words) for _ in range(4)),
        )
        for i in range(count)
    ]
    write_preferences(path, pairs)
    return path


# -- train-rm ---------------------------------------------------------------------------------------------------
def test_train_rm_refuses_a_project_folder_and_leaves_it_whole(tmp_path, capsys):
    data = pairs_file(tmp_path / "pairs.jsonl")
    project = tmp_path / "project"
    before = project_folder(project)
    code, _, err = run_main(capsys, "train-rm", "--data", str(data), "--out", str(project), *TRAIN_RM)
    assert_one_line_error(code, err, str(project), "not an earlier `textenv train-rm` output")
    assert contents(project) == before


def test_train_rm_refuses_a_file_as_out(tmp_path, capsys):
    data = pairs_file(tmp_path / "pairs.jsonl")
    target = tmp_path / "model.txt"
    target.write_text("keep me")
    code, _, err = run_main(capsys, "train-rm", "--data", str(data), "--out", str(target), *TRAIN_RM)
    assert_one_line_error(code, err, str(target), "is a file")
    assert target.read_text() == "keep me"
    code, _, err = run_main(capsys, "train-rm", "--data", str(data), "--out", str(target / "rm"), *TRAIN_RM)
    assert_one_line_error(code, err, "is a file, not a folder")


def test_train_rm_rerun_replaces_only_what_it_wrote(tmp_path, capsys):
    data = pairs_file(tmp_path / "pairs.jsonl")
    out = tmp_path / "rm"
    assert run_main(capsys, "train-rm", "--data", str(data), "--out", str(out), *TRAIN_RM,
                    "--token-scores", "true")[0] == 0
    assert (out / "token_scores.safetensors").is_file() and (out / "logs").is_dir()
    (out / "README.md").write_text("my model card")  # the user adds a file to the model directory
    first_weights = (out / "model.safetensors").read_bytes()
    assert run_main(capsys, "train-rm", "--data", str(data), "--out", str(out), *TRAIN_RM, "--seed", "1")[0] == 0
    assert (out / "README.md").read_text() == "my model card"
    assert not (out / "token_scores.safetensors").exists()  # the first run's table was train-rm's: replaced
    assert (out / "model.safetensors").read_bytes() != first_weights
    metadata = json.loads((out / "textenv_reward_model.json").read_text())
    assert metadata["token_scores"] is False and metadata["settings"]["seed"] == 1
    assert (out / "logs").is_dir() and not list(tmp_path.glob(".rm.*"))
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    assert marker["command"] == "train-rm" and "README.md" not in marker["files"]
    # the permissions a new file or folder gets under the umask (tempfile's are owner-only)
    assert (out.stat().st_mode & 0o777) == default_mode(directory=True)
    assert ((out / "model.safetensors").stat().st_mode & 0o777) == default_mode()


# -- the shared check ----------------------------------------------------------------------------------------------
def test_check_output_dir_allows_new_empty_and_own_outputs_only(tmp_path):
    assert check_output_dir(tmp_path / "new" / "deeper", "train-rm") == tmp_path / "new" / "deeper"
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", "train-rm")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "run.json").write_text("{}")
    check_output_dir(legacy, "train", markers=("run.json",))  # written before the marker file existed
    with pytest.raises(OutputDirError, match="not an earlier `textenv train-rm` output"):
        check_output_dir(legacy, "train-rm")
    claimed = claim_output_dir(tmp_path / "claimed", "compare")
    (claimed / "summary.md").write_text("table")
    check_output_dir(claimed, "compare")
    with pytest.raises(OutputDirError, match="holds the output of `textenv compare`"):
        check_output_dir(claimed, "train")
    (claimed / OUTPUT_MARKER).write_text("[1, 2")
    with pytest.raises(ValueError, match=OUTPUT_MARKER.replace(".", r"\.")):
        check_output_dir(claimed, "compare")


def test_write_directory_atomically_refuses_before_writing(tmp_path):
    project = tmp_path / "project"
    before = project_folder(project)
    calls = []
    with pytest.raises(OutputDirError):
        write_directory_atomically(project, "train-rm", calls.append)
    assert not calls and contents(project) == before


def test_a_checkpoint_never_replaces_a_folder_that_is_not_one(tmp_path):
    """The LM trainers' checkpoint writer moved ``checkpoint`` aside and deleted ``checkpoint.old`` whatever they
    held."""
    for name in ("checkpoint", "checkpoint.old"):
        root = tmp_path / name.replace(".", "_")
        (root / name).mkdir(parents=True)
        (root / name / "thesis.tex").write_text("years of work")
        with pytest.raises(OutputDirError, match="not a checkpoint"):
            write_atomically(root, lambda tmp: (tmp / "trainer_state.json").write_text("{}"))
        assert (root / name / "thesis.tex").read_text() == "years of work"


# -- train, compare, overoptimization ---------------------------------------------------------------------------
WORDS_RUN = ["--env", "MossWords-v0", "--agent", "ppo", "--steps", "64", "--no-progress"]


@pytest.mark.parametrize(
    "command",
    [
        ["train", *WORDS_RUN],
        ["compare", "--env", "MossWords-v0", "--agents", "ppo", "--seeds", "1", "--budget", "64"],
        ["overoptimization", "--smoke"],
    ],
    ids=["train", "compare", "overoptimization"],
)
def test_commands_writing_a_folder_refuse_a_project_folder_and_a_file(command, tmp_path, capsys):
    project = tmp_path / "project"
    before = project_folder(project)
    code, _, err = run_main(capsys, *command, "--out", str(project))
    assert_one_line_error(code, err, str(project), f"not an earlier `textenv {command[0]}` output")
    assert contents(project) == before
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    code, _, err = run_main(capsys, *command, "--out", str(target))
    assert_one_line_error(code, err, str(target), "is a file")
    assert target.read_text() == "keep me"


def test_train_reruns_into_its_own_output_and_a_legacy_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(capsys, "train", *WORDS_RUN, "--out", str(out))[0] == 0
    assert json.loads((out / OUTPUT_MARKER).read_text())["command"] == "train"
    (out / OUTPUT_MARKER).unlink()  # a run directory written before the marker existed
    code, out_text, _ = run_main(capsys, "train", *WORDS_RUN, "--out", str(out))
    assert code == 0 and json.loads(out_text)["status"] == "done"
    code, _, err = run_main(capsys, "train-rm", "--data", str(pairs_file(tmp_path / "p.jsonl")), "--out", str(out),
                            *TRAIN_RM)
    assert_one_line_error(code, err, "holds the output of `textenv train`")


def test_outputs_are_written_with_the_umask_permissions(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        out = tmp_path / "run"
        assert run_main(capsys, "train", *WORDS_RUN, "--out", str(out))[0] == 0
        checkpoint = out / "checkpoint"
        assert (checkpoint.stat().st_mode & 0o777) == 0o750
        assert all((p.stat().st_mode & 0o777) == 0o640 for p in checkpoint.rglob("*") if p.is_file())
    finally:
        os.umask(old)
