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
is the log replayed: a rerun shows the first pair without an answer. A labels file is checked whole before
anything is written to it (a file that is not a labels log, the pairs file itself, or the log of other pairs is
refused untouched).

Keys are read whole: an escape sequence (arrow, function, Home/End keys, Alt+key, a bracketed paste) or a
non-ASCII character is one unknown key, never an answer.

:func:`labels_to_preferences` turns the answers into preference pairs (ties and skips left out);
:func:`export_labels` writes them to a new file (never over one of its inputs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from textenv.files import parse_json
from textenv.jsonl import append_records, drop_partial_line
from textenv.preferences import PreferencePair, load_preferences, read_preferences, write_preferences

KEYS = {"a": "a", "b": "b", "t": "tie", "s": "skip"}
HELP = "[a] A better  [b] B better  [t] tie  [s] skip  [u] undo  [q] quit"
RECORD_STARTS = (b'{"pair":', b'{"undo":')  # how every line of a labels log begins (json.dumps of the records)
ESC = 0x1B
SEQUENCE_WAIT = 0.05  # seconds to wait for the rest of an escape sequence after ESC (a lone Esc key sends no more)


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
    """Replay the labels log at ``path`` (missing file: no answers), checking it against ``pairs``.

    A last line without its newline (an answer a kill cut while it was written) is left out if it begins like a
    labels record; anything else that is not a labels record raises :class:`LabelFileError` naming the line.
    """
    state = LabelState()
    if not Path(path).exists():
        return state
    if Path(path).is_dir():
        raise LabelFileError(f"{path} is a folder; expected a labels file (JSONL)")
    keys = [pair_key(pair) for pair in pairs]
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    cut = lines.pop()  # b"" after a final newline; else the part of a line a kill cut
    if cut.strip() and not cut.lstrip(b"\xef\xbb\xbf").startswith(RECORD_STARTS):
        raise LabelFileError(f"{path}:{len(lines) + 1}: not a labels record: {cut[:60]!r}")
    for number, raw in enumerate(lines, start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = parse_json(raw, where)
        except ValueError as err:
            raise LabelFileError(f"{err} (not a labels record)") from None
        if not isinstance(record, dict):
            raise LabelFileError(f"{where}: not a labels record: {record!r:.60}")
        if "undo" in record:
            if not state.history or state.history[-1] != record["undo"]:
                raise LabelFileError(f"{where}: undo of pair {record['undo']!r:.20}, which is not the latest answer")
            del state.answers[state.history.pop()]
            continue
        index = record.get("pair")
        if isinstance(index, bool) or not isinstance(index, int) or record.get("answer") not in KEYS.values():
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


def check_not_input(path: str | os.PathLike, inputs: dict[str, str | os.PathLike], what: str) -> None:
    """Refuse to write ``path`` when it is one of ``inputs`` (``{flag: path}``): the same file by any name."""
    target = Path(path)
    for flag, source in inputs.items():
        if target.exists() and Path(source).exists() and os.path.samefile(target, source):
            raise LabelFileError(f"{what} {str(path)!r} is {flag} itself; writing it would destroy that input")


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
    """The next key from ``stream`` that is not blank, lower-cased, read whole (unbuffered: use
    :func:`single_keys` on a terminal). End of input reads as ``q``.

    A key is one ASCII character, one UTF-8 character (``"é"``), or a whole escape sequence (``"\\x1b[A"`` for
    Up; a bracketed paste ``ESC[200~ ... ESC[201~`` is one key, its text never read as answers), so a key that is
    not an answer is refused once, as one key.
    """
    fd = stream.fileno()
    while True:
        data = os.read(fd, 1)
        if not data:
            return "q"
        if data[0] == ESC:
            return _escape_sequence(fd)
        if data[0] >= 0x80:
            return _utf8_character(fd, data)
        if not data.isspace():
            return data.decode("ascii").lower()


def _read_more(fd: int, wait: float = SEQUENCE_WAIT) -> bytes:
    """One more byte of a key already begun, or ``b""`` when none comes within ``wait`` seconds (or at EOF)."""
    ready, _, _ = select.select([fd], [], [], wait)
    return os.read(fd, 1) if ready else b""


def _escape_sequence(fd: int) -> str:
    """The rest of a sequence that began with ESC: CSI (``ESC [`` parameters, then a final byte in ``@``-``~``),
    SS3 (``ESC O`` and one byte), Alt+key (``ESC`` and one byte), or a lone Esc key. A bracketed paste is read to
    its end marker."""
    sequence = b"\x1b" + _read_more(fd)
    if sequence == b"\x1b[":
        while len(sequence) < 32:
            byte = _read_more(fd)
            sequence += byte
            if not byte or 0x40 <= byte[0] <= 0x7E:
                break
        if sequence == b"\x1b[200~":  # bracketed paste: everything up to ESC[201~ is the pasted text
            pasted = b""
            while not pasted.endswith(b"\x1b[201~"):
                byte = os.read(fd, 1)
                if not byte:
                    break
                pasted += byte
            return "\x1b[200~" + pasted.decode("utf-8", "replace")
    elif sequence == b"\x1bO":
        sequence += _read_more(fd)
    return sequence.decode("utf-8", "replace")


def _utf8_character(fd: int, first: bytes) -> str:
    """A whole UTF-8 character from its first byte (2, 3 or 4 bytes long); a stray byte alone."""
    length = 2 if first[0] >= 0xC0 else 1
    length = 3 if first[0] >= 0xE0 else length
    length = 4 if first[0] >= 0xF0 else length
    data = first
    while len(data) < length:
        byte = _read_more(fd)
        if not byte:
            break
        data += byte
    return data.decode("utf-8", "replace")


def describe_key(key: str) -> str:
    """How a key is echoed and named: itself when printable, else its escape (``'\\x1b[A'``), a paste by its
    length."""
    if key.startswith("\x1b[200~"):
        return f"pasted text ({len(key) - 6} characters)"
    return key if key.isprintable() else repr(key)[1:-1]


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
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}; expected an int >= 0 (it draws the A/B order of each pair)")
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    pairs = load_preferences(pairs_path, tokenizer=tokenizer, skip_invalid=skip_invalid)
    check_not_input(labels_path, {"the pairs file": pairs_path}, "the labels file")
    state = read_labels(labels_path, pairs)  # the whole file is checked before anything is written to it
    drop_partial_line(labels_path)  # an answer cut by a kill is lost, the answers before it are kept
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
        stdout.write(f"{describe_key(key)}\n")
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
            stdout.write(f"unknown key '{describe_key(key)}'; {HELP}\n")
            continue
        record = answer_record(pairs[index], index, a_chosen, KEYS[key])
        append_records(labels_path, [record])
        state.answers[index] = record
        state.history.append(index)
        given += 1
    return given


def _check_earlier_export(out: str | os.PathLike) -> None:
    """An existing ``out`` is replaced only when it is a preference file (an earlier export)."""
    target = Path(out)
    if not target.exists() or (target.is_file() and target.stat().st_size == 0):
        return
    try:
        if target.is_dir():
            raise ValueError("it is a folder")
        read_preferences(target)
    except ValueError as err:
        raise LabelFileError(
            f"--export {str(out)!r} exists and is not a preference file ({err}); choose a new file or an earlier "
            "export to replace"
        ) from None


def export_labels(
    pairs_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer: Any = None,
    skip_invalid: bool = False,
) -> dict[str, int]:
    """Write the labelled pairs of ``labels_path`` as a preference file ``out`` (ties and skips left out).
    ``tokenizer`` and ``skip_invalid`` must be those the pairs were labelled with.

    ``out`` is a new file or an earlier export (a preference file), never one of the inputs: anything else raises
    :class:`LabelFileError` with nothing written.
    """
    pairs = load_preferences(pairs_path, tokenizer=tokenizer, skip_invalid=skip_invalid)
    if not Path(labels_path).exists():
        raise FileNotFoundError(f"labels file {str(labels_path)!r} does not exist")
    check_not_input(out, {"the pairs file": pairs_path, "the labels file (--out)": labels_path}, "--export")
    _check_earlier_export(out)
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
