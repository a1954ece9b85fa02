"""Human preference labelling in a terminal: the "human feedback" of RLHF.

:func:`label_session` shows each pair of a preference file (its prompt and its two texts as ``A`` and ``B``,
in an order drawn per pair from ``(seed, pair)`` and recorded) and takes one key:

====  ===========================================
a     A is better
b     B is better
t     a tie
s     skip this pair
u     undo the last answer (also one from an earlier session)
q     quit (Ctrl-D and Ctrl-C too); rerun to resume
====  ===========================================

The labels file is an append-only JSONL log, fsync'd after every line, so a kill loses at most the key
being written. An answer is ``{"pair": i, "key": ..., "a": "chosen"|"rejected", "answer": "a"|"b"|"tie"|"skip",
"preferred": "chosen"|"rejected"|null, "time": ...}``; ``key`` is a hash of the pair's texts (the log is
checked against the pairs file it belongs to) and ``a`` says which text of the pairs file was shown as A.
An undo appends ``{"undo": i}``, which takes back the latest remaining answer (to pair ``i``). The state
is the log replayed: a rerun shows the first pair without an answer.

:func:`labels_to_preferences` turns the answers into preference pairs (ties and skips left out).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from textenv.jsonl import append_records, drop_partial_line, iter_lines
from textenv.preferences import PreferencePair, load_preferences, write_preferences

KEYS = {"a": "a", "b": "b", "t": "tie", "s": "skip"}
HELP = "[a] A better  [b] B better  [t] tie  [s] skip  [u] undo  [q] quit"


class LabelFileError(ValueError):
    """A labels file that does not belong to the pairs file, or is not a labels file."""


def pair_key(pair: PreferencePair) -> str:
    """A short hash of the pair's prompt and texts (identifies it across sessions)."""
    text = json.dumps([pair.prompt, pair.chosen, pair.rejected], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def a_is_chosen(seed: int, index: int) -> bool:
    """Whether pair ``index`` shows its chosen text as A (a fair coin drawn from ``(seed, index)``)."""
    return bool(np.random.default_rng([seed, index]).random() < 0.5)


@dataclass
class LabelState:
    """The labels log replayed: the current answer to each pair, and the answers in the order given."""

    answers: dict[int, dict[str, Any]] = field(default_factory=dict)
    history: list[int] = field(default_factory=list)

    def next_pair(self, num_pairs: int) -> int | None:
        return next((i for i in range(num_pairs) if i not in self.answers), None)


def read_labels(path: str | os.PathLike, pairs: Sequence[PreferencePair]) -> LabelState:
    """Replay the labels log at ``path`` (missing file: no answers), checking it against ``pairs``."""
    state = LabelState()
    if not Path(path).exists():
        return state
    keys = [pair_key(pair) for pair in pairs]
    for number, raw in iter_lines(path):
        where = f"{path}:{number}"
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LabelFileError(f"{where}: not a labels record ({err})") from None
        if not isinstance(record, dict):
            raise LabelFileError(f"{where}: not a labels record: {record!r:.60}")
        if "undo" in record:
            if not state.history or state.history[-1] != record["undo"]:
                raise LabelFileError(f"{where}: undo of pair {record['undo']!r}, which is not the latest answer")
            del state.answers[state.history.pop()]
            continue
        index = record.get("pair")
        if not isinstance(index, int) or record.get("answer") not in KEYS.values():
            raise LabelFileError(f"{where}: not a labels record: {record!r:.80}")
        if not 0 <= index < len(pairs) or record.get("key") != keys[index]:
            raise LabelFileError(
                f"{where}: pair {index} is not the pair that was labelled (the pairs file has changed, or the labels "
                "belong to another pairs file)"
            )
        if index in state.answers:
            state.history.remove(index)
        state.answers[index] = record
        state.history.append(index)
    return state


def answer_record(pair: PreferencePair, index: int, a_chosen: bool, answer: str) -> dict[str, Any]:
    preferred = None
    if answer in ("a", "b"):
        preferred = "chosen" if (answer == "a") == a_chosen else "rejected"
    return {
        "pair": index,
        "key": pair_key(pair),
        "a": "chosen" if a_chosen else "rejected",
        "answer": answer,
        "preferred": preferred,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def labels_to_preferences(pairs: Sequence[PreferencePair], state: LabelState) -> list[PreferencePair]:
    """The pairs as the labeller ordered them (in pair order; ties and skips left out)."""
    labelled = []
    for index in sorted(state.answers):
        preferred = state.answers[index]["preferred"]
        if preferred is not None:
            pair = pairs[index] if preferred == "chosen" else pairs[index].swapped()
            labelled.append(pair)
    return labelled


# -- the terminal session -----------------------------------------------------------------------------------
@contextlib.contextmanager
def single_keys(stream: IO[str]) -> Iterator[None]:
    """On a terminal, cbreak mode for the block (each key is readable at once, without Enter; Ctrl-C still
    interrupts), restored after; elsewhere nothing. Set before the first question is shown, so a key pressed
    at once is not caught in the terminal's line buffer."""
    fd = stream.fileno()
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_key(stream: IO[str]) -> str:
    """The next key from ``stream`` that is not blank, lower-cased (one byte at a time, unbuffered: use
    :func:`single_keys` on a terminal). End of input reads as ``q``."""
    fd = stream.fileno()
    while True:
        data = os.read(fd, 1)
        if not data:
            return "q"
        if not data.isspace():
            return data.decode("utf-8", "replace").lower()


def show_pair(out: IO[str], pair: PreferencePair, index: int, num_pairs: int, answered: int, a_chosen: bool) -> None:
    a, b = (pair.chosen, pair.rejected) if a_chosen else (pair.rejected, pair.chosen)
    lines = [f"\n=== pair {index + 1} of {num_pairs} ({answered} answered)"]
    if pair.prompt is not None:
        lines.append(f"PROMPT: {pair.prompt}")
    lines += [f"[A] {a}", f"[B] {b}", f"{HELP} > "]
    out.write("\n".join(lines))
    out.flush()


def label_session(
    pairs_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    *,
    seed: int = 0,
    tokenizer: Any = None,
    skip_invalid: bool = False,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
) -> dict[str, int]:
    """Label the pairs of ``pairs_path`` one key at a time, appending each answer to ``labels_path``.

    Returns counts: ``answered`` (after the session), ``pairs``, ``left``, ``this_session`` (answers given).
    """
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    pairs = load_preferences(pairs_path, tokenizer=tokenizer, skip_invalid=skip_invalid)
    drop_partial_line(labels_path)  # an answer cut by a kill is lost, the answers before it are kept
    state = read_labels(labels_path, pairs)
    with single_keys(stdin):
        given = _ask(pairs, state, labels_path, seed, stdin, stdout)
    left = len(pairs) - len(state.answers)
    if left:
        stdout.write(f"stopped: {len(state.answers)} of {len(pairs)} answered; run the same command to resume\n")
    else:
        stdout.write(f"all {len(pairs)} pairs answered; labels in {labels_path}\n")
    stdout.flush()
    return {"answered": len(state.answers), "pairs": len(pairs), "left": left, "this_session": given}


def _ask(
    pairs: Sequence[PreferencePair],
    state: LabelState,
    labels_path: str | os.PathLike,
    seed: int,
    stdin: IO[str],
    stdout: IO[str],
) -> int:
    """The question loop; each answer is on disk before the next question. Returns the answers given."""
    given = 0
    while (index := state.next_pair(len(pairs))) is not None:
        a_chosen = a_is_chosen(seed, index)
        show_pair(stdout, pairs[index], index, len(pairs), len(state.answers), a_chosen)
        key = read_key(stdin)
        stdout.write(f"{key}\n")
        if key == "q":
            break
        if key == "u":
            if not state.history:
                stdout.write("nothing to undo\n")
                continue
            undone = state.history[-1]
            append_records(labels_path, [{"undo": undone}])
            del state.answers[state.history.pop()]
            stdout.write(f"undid the answer to pair {undone + 1}\n")
            continue
        if key not in KEYS:
            stdout.write(f"unknown key {key!r}; {HELP}\n")
            continue
        record = answer_record(pairs[index], index, a_chosen, KEYS[key])
        append_records(labels_path, [record])
        state.answers[index] = record
        state.history.append(index)
        given += 1
    return given


def export_labels(
    pairs_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer: Any = None,
    skip_invalid: bool = False,
) -> dict[str, int]:
    """Write the labelled pairs of ``labels_path`` as a preference file ``out`` (ties and skips left out).
    ``tokenizer`` and ``skip_invalid`` must be those the pairs were labelled with."""
    pairs = load_preferences(pairs_path, tokenizer=tokenizer, skip_invalid=skip_invalid)
    if not Path(labels_path).exists():
        raise FileNotFoundError(f"labels file {str(labels_path)!r} does not exist")
    state = read_labels(labels_path, pairs)
    labelled = labels_to_preferences(pairs, state)
    if not labelled:
        raise LabelFileError(f"{labels_path} has no a/b answers to export (ties and skips are left out)")
    write_preferences(out, labelled)
    answers = [record["answer"] for record in state.answers.values()]
    return {
        "written": len(labelled),
        "ties": answers.count("tie"),
        "skips": answers.count("skip"),
        "unanswered": len(pairs) - len(answers),
    }
