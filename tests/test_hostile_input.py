"""Input a hostile or careless user gives the preference, labelling and reward-model commands: every case is one
line naming the bad value (exit 2), nothing on disk is cut or replaced, and no answer is made up.

Covers the terminal keys ``label`` reads (escape sequences, pastes, non-ASCII), its ``--out``/``--export`` files,
damaged reward-model directories, hostile preference data, and the values ``pairs`` and ``overoptimization`` must
check before they start.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import pytest

import rewards
from agents.cli import main
from agents.preferences.labelling import label_session, read_key, read_labels
from cli_util import assert_one_line_error, run_main
from textenv.models import TINY_MODEL
from textenv.preferences import PreferenceDataError, PreferencePair, load_preferences, write_preferences

PAIRS = [PreferencePair(f" chosen text {i}", f" rejected text {i}", f"Prompt number {i}") for i in range(3)]


@pytest.fixture
def files(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_preferences(pairs, PAIRS)
    return pairs, tmp_path / "labels.jsonl"


def pipe(data: bytes) -> io.TextIOWrapper:
    """A stream whose file descriptor yields ``data`` and then the end of input (as a terminal's keys would)."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    return os.fdopen(read_fd)


# -- 3. keys are read whole ----------------------------------------------------------------------------------------
UP, DOWN, F5, HOME, F1 = b"\x1b[A", b"\x1b[B", b"\x1b[15~", b"\x1bOH", b"\x1bOP"
PASTE = b"\x1b[200~ab\nba\x1b[201~"


def test_read_key_reads_escape_sequences_pastes_and_utf8_characters_whole():
    keys = UP + DOWN + F5 + HOME + F1 + PASTE + "é".encode() + b"\x1b" + b"b"
    with pipe(keys) as stream:
        read = [read_key(stream) for _ in range(10)]
    assert read == ["\x1b[A", "\x1b[B", "\x1b[15~", "\x1bOH", "\x1bOP", "\x1b[200~ab\nba\x1b[201~", "é", "\x1bb",
                    "q", "q"]


def test_arrow_keys_a_paste_and_non_ascii_are_never_answers(files):
    pairs, labels = files
    keys = UP + DOWN + PASTE + "é".encode() + b"a" + F5 + b"q"
    out = io.StringIO()
    with pipe(keys) as stdin:
        counts = label_session(pairs, labels, stdin=stdin, stdout=out)
    assert counts["this_session"] == 1
    state = read_labels(labels, load_preferences(pairs))
    assert {i: r["answer"] for i, r in state.answers.items()} == {0: "a"}
    screen = out.getvalue()
    assert screen.count("unknown key") == 5  # one message per key: Up, Down, the paste, é, F5
    assert "unknown key 'é'" in screen and "unknown key '\\x1b[A'" in screen and "pasted text" in screen
    assert "\x1b" not in screen  # no raw escape sequence is echoed back to the terminal


# -- 4. a refused label run leaves its --out whole -------------------------------------------------------------------
def test_a_refused_out_file_is_not_cut(files, tmp_path, capsys):
    pairs, _ = files
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"first line\nlast line without a newline")
    code, _, err = run_main(capsys, "label", str(pairs), "--out", str(notes))
    assert_one_line_error(code, err, "notes.txt")
    assert notes.read_bytes() == b"first line\nlast line without a newline"

    unterminated = tmp_path / "unterminated.jsonl"  # a pairs file whose last line has no newline
    unterminated.write_bytes(pairs.read_bytes().rstrip(b"\n"))
    before = unterminated.read_bytes()
    code, _, err = run_main(capsys, "label", str(unterminated), "--out", str(unterminated))
    assert_one_line_error(code, err, "is the pairs file itself")
    assert unterminated.read_bytes() == before


def test_a_labels_log_cut_by_a_kill_still_resumes(files):
    pairs, labels = files
    with pipe(b"b") as stdin:
        label_session(pairs, labels, stdin=stdin, stdout=io.StringIO())
    with open(labels, "ab") as f:
        f.write(b'{"pair": 1, "key": "')  # the kill cut the next answer
    with pipe(b"t") as stdin:
        counts = label_session(pairs, labels, stdin=stdin, stdout=io.StringIO())
    assert counts["answered"] == 2
    assert [json.loads(line)["answer"] for line in labels.read_text().splitlines()] == ["b", "tie"]


def test_label_seed_must_be_non_negative_and_the_message_names_the_flag(files, capsys):
    pairs, labels = files
    code, _, err = run_main(capsys, "label", str(pairs), "--out", str(labels), "--seed", "-1")
    assert_one_line_error(code, err, "--seed -1")
    with pytest.raises(ValueError, match="seed=-1"):
        label_session(pairs, labels, seed=-1, stdin=io.StringIO(), stdout=io.StringIO())


# -- 5. --export never replaces its inputs or someone else's file ---------------------------------------------------
def answered(files) -> tuple[Path, Path]:
    pairs, labels = files
    with pipe(b"ab") as stdin:
        label_session(pairs, labels, stdin=stdin, stdout=io.StringIO())
    return pairs, labels


def test_export_refuses_its_inputs_and_other_files(files, tmp_path, capsys):
    pairs, labels = answered(files)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a preference file\n")
    for target, fragment in ((labels, "is the labels file"), (pairs, "is the pairs file"),
                             (notes, "is not a preference file")):
        before = target.read_bytes()
        code, _, err = run_main(capsys, "label", str(pairs), "--out", str(labels), "--export", str(target))
        assert_one_line_error(code, err, str(target), fragment)
        assert target.read_bytes() == before
    # a new file, then the same file again (an earlier export is replaced)
    export = tmp_path / "human.jsonl"
    for _ in range(2):
        assert run_main(capsys, "label", str(pairs), "--out", str(labels), "--export", str(export))[0] == 0
        assert len(load_preferences(export)) == 2


def test_export_into_a_missing_folder_names_the_folder(files, tmp_path, capsys):
    pairs, labels = answered(files)
    target = tmp_path / "no" / "such" / "human.jsonl"
    code, _, err = run_main(capsys, "label", str(pairs), "--out", str(labels), "--export", str(target))
    assert_one_line_error(code, err, str(target.parent), "does not exist")
    assert ".tmp" not in err


# -- 7. a damaged reward-model directory is named -------------------------------------------------------------------
@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    """A whole one-output reward-model directory (untrained: only its files matter here)."""
    from agents.reward_model import load_reward_model

    directory = tmp_path_factory.mktemp("rm") / "rm"
    model, tokenizer = load_reward_model(TINY_MODEL)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    metadata = {"format": "textenv-reward-model/1", "pooling": "last", "token_scores": False,
                "score_stats": {"mean": 0.5, "std": 2.0}}
    (directory / "textenv_reward_model.json").write_text(json.dumps(metadata))
    return directory


def damaged(rm_dir: Path, tmp_path: Path, metadata: object = None, table: bytes | None = None) -> Path:
    """A copy of ``rm_dir`` (its files linked, not copied) with the metadata or the token-score table replaced."""
    copy = tmp_path / "damaged"
    copy.mkdir()
    for file in rm_dir.iterdir():
        (copy / file.name).symlink_to(file)
    (copy / "textenv_reward_model.json").unlink()
    (copy / "textenv_reward_model.json").write_bytes((rm_dir / "textenv_reward_model.json").read_bytes())
    if metadata is not None:
        text = metadata if isinstance(metadata, str) else json.dumps(metadata)
        (copy / "textenv_reward_model.json").write_text(text)
    if table is not None:
        (copy / "token_scores.safetensors").write_bytes(table)
    return copy


GOOD = {"pooling": "last", "token_scores": False, "score_stats": {"mean": 0.5, "std": 2.0}}


@pytest.mark.parametrize(
    "metadata, fragment",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({**GOOD, "token_scores": "false"}, "token_scores='false'"),
        ({**GOOD, "pooling": ["last"]}, "pooling=['last']"),
        ({**GOOD, "score_stats": {"mean": 0.0, "std": -1.0}}, "score_stats"),
        ({**GOOD, "score_stats": {"mean": "0", "std": 1.0}}, "score_stats"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
    ids=["junk", "list", "string-bool", "list-pooling", "negative-std", "string-mean", "deep"],
)
def test_damaged_reward_model_metadata_is_named(metadata, fragment, rm_dir, tmp_path, capsys):
    directory = damaged(rm_dir, tmp_path, metadata=metadata)
    for spec in ({"name": "reward_model", "kwargs": {"path": str(directory), "normalize": True}},
                 {"name": "classifier", "kwargs": {"model": str(directory)}}):
        with pytest.raises(ValueError, match="textenv_reward_model.json") as raised:
            rewards.make(spec)
        assert fragment in str(raised.value)
    data = directory.parent / "pairs.jsonl"
    write_preferences(data, PAIRS)
    code, _, err = run_main(capsys, "train-rm", "--data", str(data), "--out", str(tmp_path / "out"),
                            "--model", str(directory))
    assert_one_line_error(code, err, "textenv_reward_model.json")


@pytest.mark.parametrize("table", [b"junk", b"\xff" * 8 + b"{}", b""], ids=["junk", "huge-header", "empty"])
def test_a_damaged_token_score_table_is_named(table, rm_dir, tmp_path):
    directory = damaged(rm_dir, tmp_path, metadata={**GOOD, "token_scores": True}, table=table)
    reward = rewards.make({"name": "reward_model", "kwargs": {"path": str(directory)}})
    with pytest.raises(rewards.RewardPluginError, match="token_scores.safetensors: not a readable safetensors"):
        reward(["p"], ["c"])


def test_normalize_uses_the_recorded_stats(rm_dir):
    reward = rewards.make({"name": "reward_model", "kwargs": {"path": str(rm_dir), "normalize": True}})
    raw = rewards.make({"name": "reward_model", "kwargs": {"path": str(rm_dir)}})
    assert reward(["p"], ["c"])[0] == pytest.approx((raw(["p"], ["c"])[0] - 0.5) / 2.0)


# -- 8. hostile preference data --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line, fragment",
    [
        ('{"chosen": "a", "rejected": "b", "margin": 1' + "0" * 400 + "}", "field 'margin': expected a finite number"),
        ('{"chosen": "a", "rejected": "b", "margin": 1' + "0" * 5001 + "}", "integer string conversion"),
        ('{"chosen": ' + "[" * 100_000 + "]" * 100_000 + ', "rejected": "b"}', "nested too deeply"),
        ('{"chosen": "a\\ud800", "rejected": "b"}', "field 'chosen': invalid Unicode: a lone surrogate"),
        ('{"chosen": [{"role": "user", "content": "\\udfff"}], "rejected": "b"}', "lone surrogate"),
    ],
    ids=["400-digit margin", "5001-digit margin", "deep nesting", "lone surrogate", "surrogate in a message"],
)
def test_hostile_preference_lines_are_one_line_errors_naming_file_and_line(line, fragment, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"chosen": "good", "rejected": "bad"}\n' + line + "\n")
    with pytest.raises(PreferenceDataError) as raised:
        load_preferences(data)
    assert raised.value.line == 2 and fragment in str(raised.value)
    code, _, err = run_main(capsys, "train-rm", "--data", str(data), "--out", str(tmp_path / "rm"),
                            "--model", TINY_MODEL)
    assert_one_line_error(code, err, f"{data}:2", fragment)
    assert not (tmp_path / "rm").exists()


def test_the_identical_pairs_warning_points_at_the_callers_line(tmp_path):
    from agents.reward_model import RewardModelConfig, RewardModelTrainer

    data = tmp_path / "same.jsonl"
    data.write_text('{"chosen": "x", "rejected": "x"}\n' * 3)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(PreferenceDataError, match="no usable"):
        warnings.simplefilter("always")
        RewardModelTrainer(str(data), RewardModelConfig(model=TINY_MODEL, progress_bar=False))
    [warning] = [w for w in caught if "identical" in str(w.message)]
    assert warning.filename == __file__


# -- 10. pairs and overoptimization check everything before they start ---------------------------------------------
def test_pairs_checks_sizes_before_anything_is_built(tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    code, _, err = run_main(capsys, "pairs", "--pairs", "4", "--gold", "sentiment", "--out", str(out), "--k", "100000",
                            "--policy", TINY_MODEL, "--no-progress")
    assert_one_line_error(code, err, "k=100000", "k * prompts_per_batch <= ")
    assert not out.exists() and not Path(f"{out}.settings.json").exists()


def test_a_failed_pairs_run_leaves_no_settings_file(tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    code, _, err = run_main(capsys, "pairs", "--pairs", "4", "--gold", "sentiment", "--out", str(out),
                            "--policy", str(tmp_path / "no_such_model"), "--no-progress")
    assert_one_line_error(code, err, "no_such_model")
    assert not out.exists() and not Path(f"{out}.settings.json").exists()


def test_the_gold_reward_does_not_get_the_envs_reward_arguments(tmp_path, capsys):
    """MossGuessWords-v0 registers ``reward_kwargs={"turn_cost": ...}`` for its own reward; a gold reward replacing
    it must not receive them (VADER sentiment takes no ``turn_cost``)."""
    out = tmp_path / "pairs.jsonl"
    code, stdout, err = run_main(capsys, "pairs", "--env", "MossGuessWords-v0", "--gold", "length", "--pairs", "2",
                                 "--k", "2", "--prompts-per-batch", "2", "--policy", TINY_MODEL, "--out", str(out),
                                 "--no-progress", "--env-kwargs", "max_turn_tokens=3", "max_total_tokens=12")
    assert code == 0, err
    assert json.loads(stdout)["pairs"] == 2 and len(load_preferences(out)) == 2


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--env", "NoSuch-v0"], "env='NoSuch-v0'"),
        (["--rl-iterations", "-1"], "rl_iterations=-1"),
        (["--gold", "no_such_reward"], "gold='no_such_reward'"),
        (["--k", "100000"], "k=100000"),
        (["--bon-max-n", "1048576"], "bon_max_n=1048576"),
        (["--rm-learning-rate", "nan"], "rm_learning_rate=nan"),
        (["--policy", "./no/such/model"], "policy"),
    ],
)
def test_overoptimization_checks_every_value_before_any_work(flags, fragment, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_main(capsys, "overoptimization", "--smoke", "--out", str(out), *flags)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()
