"""``textenv label`` driven through a pseudo-terminal: one key per answer, undo, quit and resume, a kill and
resume, and the export of the answers as a preference file."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.preferences.labelling import a_is_chosen, pair_key, read_key, read_labels
from agents.cli import main
from cli_util import default_sigint
from textenv.preferences import PreferencePair, load_preferences, write_preferences

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [PreferencePair(f" chosen text {i}", f" rejected text {i}", f"Prompt number {i}") for i in range(4)]


def _controlling_terminal() -> None:
    """In the child, after its new session starts: make the pty its controlling terminal (so Ctrl-C signals it)."""
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    default_sigint()


class Terminal:
    """A process whose stdin, stdout and stderr are a pseudo-terminal (as when a person runs it)."""

    def __init__(self, *args: str) -> None:
        master, slave = pty.openpty()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agents", *args], stdin=slave, stdout=slave, stderr=slave, env=env,
            start_new_session=True, preexec_fn=_controlling_terminal, cwd=ROOT,
        )
        os.close(slave)
        self.master, self.seen = master, ""

    def read_until(self, pattern: str, timeout: float = 180.0) -> str:  # a cold start on a loaded machine
        """Everything printed since the last call, up to and including the first match of ``pattern``."""
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.seen)):
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {pattern!r} within {timeout}s; the terminal shows:\n{self.seen}")
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the process closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"the process ended before {pattern!r}; the terminal shows:\n{self.seen}")
            self.seen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        shown, self.seen = self.seen[: match.end()], self.seen[match.end() :]
        return shown

    def press(self, key: str, then: str) -> str:
        os.write(self.master, key.encode())
        return self.read_until(then)

    def exit_code(self) -> int:
        code = self.proc.wait(timeout=30)
        os.close(self.master)
        return code


def shown_pair(screen: str) -> tuple[str, str]:
    """The texts shown as A and B on the last pair screen."""
    a = re.findall(r"\[A\] (.*)\n", screen)[-1]
    b = re.findall(r"\[B\] (.*)\n", screen)[-1]
    return a, b


PROMPT = r"\[q\] quit > "


@pytest.fixture
def files(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_preferences(pairs, PAIRS)
    return pairs, tmp_path / "labels.jsonl"


def test_label_through_a_pty_with_undo_quit_kill_and_resume(files, tmp_path):
    pairs, labels = files
    args = ("label", str(pairs), "--out", str(labels), "--seed", "3")

    # session 1: answer, an unknown key, answer, undo, answer again, quit
    term = Terminal(*args)
    screen = term.read_until(PROMPT)
    assert "=== pair 1 of 4 (0 answered)" in screen and "PROMPT: Prompt number 0" in screen
    first_a, first_b = shown_pair(screen)
    assert {first_a, first_b} == {" chosen text 0", " rejected text 0"}
    assert (first_a == " chosen text 0") == a_is_chosen(3, 0)  # the order drawn from (seed, pair)
    screen = term.press("a", PROMPT)  # no Enter needed: one key is one answer
    assert "=== pair 2 of 4 (1 answered)" in screen
    second_a, _ = shown_pair(screen)
    assert "unknown key 'x'" in term.press("x", PROMPT)
    assert "=== pair 3 of 4 (2 answered)" in term.press("b", PROMPT)
    screen = term.press("u", PROMPT)
    assert "undid the answer to pair 2" in screen and "=== pair 2 of 4 (1 answered)" in screen
    assert shown_pair(screen)[0] == second_a  # the same order again
    assert "=== pair 3 of 4 (2 answered)" in term.press("t", PROMPT)
    assert "stopped: 2 of 4 answered" in term.press("q", "resume\n")
    assert term.exit_code() == 0

    log = [json.loads(line) for line in labels.read_text().splitlines()]
    assert [(r.get("pair"), r.get("answer"), r.get("undo")) for r in log] == [
        (0, "a", None), (1, "b", None), (None, None, 1), (1, "tie", None)
    ]
    assert log[0]["preferred"] == ("chosen" if first_a == " chosen text 0" else "rejected")
    assert log[3]["preferred"] is None

    # session 2 resumes at pair 3; skip it, then the process is killed while pair 4 waits for a key
    term = Terminal(*args)
    assert "=== pair 3 of 4 (2 answered)" in term.read_until(PROMPT)
    screen = term.press("s", PROMPT)
    assert "=== pair 4 of 4 (3 answered)" in screen
    os.killpg(term.proc.pid, signal.SIGKILL)
    assert term.exit_code() == -signal.SIGKILL
    with open(labels, "a") as f:
        f.write('{"pair": 3, "key": "')  # as if the kill had cut an answer while it was written

    # session 3: the cut answer is gone, the others kept; undo reaches back to session 2's skip
    term = Terminal(*args)
    assert "=== pair 4 of 4 (3 answered)" in term.read_until(PROMPT)
    screen = term.press("u", PROMPT)
    assert "undid the answer to pair 3" in screen and "=== pair 3 of 4 (2 answered)" in screen
    assert "=== pair 4 of 4 (3 answered)" in term.press("b", PROMPT)
    term.press("b", r"all 4 pairs answered.*\n")
    assert term.exit_code() == 0

    state = read_labels(labels, load_preferences(pairs))
    assert {i: r["answer"] for i, r in state.answers.items()} == {0: "a", 1: "tie", 2: "b", 3: "b"}

    # export: ties and skips left out, each pair ordered as the labeller chose
    out = tmp_path / "human.jsonl"
    assert main(["label", str(pairs), "--out", str(labels), "--export", str(out)]) == 0
    exported = load_preferences(out)
    expected_first = PAIRS[0] if first_a == " chosen text 0" else PAIRS[0].swapped()
    assert exported[0] == expected_first and len(exported) == 3
    for index, pair in zip((2, 3), exported[1:]):  # "b" was pressed: the text shown as B is chosen
        shown_b = PAIRS[index].rejected if a_is_chosen(3, index) else PAIRS[index].chosen
        assert pair.chosen == shown_b and pair.prompt == PAIRS[index].prompt


def test_ctrl_c_keeps_the_answers_and_restores_the_terminal(files):
    import termios

    pairs, labels = files
    term = Terminal("label", str(pairs), "--out", str(labels))
    term.read_until(PROMPT)
    assert termios.tcgetattr(term.master)[3] & termios.ICANON == 0  # one key at a time while asking
    term.press("t", PROMPT)
    assert "interrupted; the answers given are kept" in term.press("\x03", r"resume\)\n")
    assert termios.tcgetattr(term.master)[3] & termios.ICANON  # line mode is back
    assert term.exit_code() == 130
    assert [json.loads(line)["answer"] for line in labels.read_text().splitlines()] == ["tie"]


def test_labels_of_another_pairs_file_are_refused(files, tmp_path, capsys):
    pairs, labels = files
    labels.write_text(json.dumps({"pair": 0, "key": "0000000000000000", "a": "chosen", "answer": "a",
                                  "preferred": "chosen"}) + "\n")
    assert main(["label", str(pairs), "--out", str(labels)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{labels}:1: pair 0 is not the pair that was labelled" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["label", "{tmp}/missing.jsonl", "--out", "{tmp}/l.jsonl"], "missing.jsonl' does not exist"),
        (["label", "{pairs}", "--out", "{tmp}/none.jsonl", "--export", "{tmp}/x.jsonl"], "none.jsonl' does not exist"),
    ],
)
def test_label_command_errors_are_one_line(files, tmp_path, capsys, argv, message):
    pairs, _ = files
    argv = [a.format(tmp=tmp_path, pairs=pairs) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("textenv: error: ") and err.count("\n") == 1 and message in err


def test_export_without_answers_is_an_error(files, tmp_path, capsys):
    pairs, labels = files
    labels.write_text("")
    assert main(["label", str(pairs), "--out", str(labels), "--export", str(tmp_path / "x.jsonl")]) == 2
    assert "no a/b answers to export" in capsys.readouterr().err


def test_read_key_from_a_pipe_skips_blanks_and_reads_eof_as_quit():
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b" \nA\nb")
    os.close(write_fd)
    with os.fdopen(read_fd) as stream:
        assert [read_key(stream) for _ in range(3)] == ["a", "b", "q"]


def test_invalid_pairs_line_is_an_error_or_skipped_with_a_warning(files, tmp_path, capsys):
    pairs, labels = files
    with open(pairs, "a") as f:
        f.write('{"chosen": "", "rejected": "x"}\n')  # line 5
    labels.write_text(json.dumps({"pair": 0, "key": pair_key(PAIRS[0]), "a": "chosen", "answer": "b",
                                  "preferred": "rejected"}) + "\n")
    argv = ["label", str(pairs), "--out", str(labels), "--export", str(tmp_path / "human.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"textenv: error: {pairs}:5: field 'chosen': empty text\n"
    assert main([*argv, "--skip-invalid"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"textenv: warning: skipped 1 invalid line(s) of {pairs}:\n  {pairs}:5: field 'chosen'")
    assert load_preferences(tmp_path / "human.jsonl") == [PAIRS[0].swapped()]
