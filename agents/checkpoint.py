"""Checkpoint directories: atomic writes, the previous checkpoint kept, damage detected before loading.

A checkpoint is written whole into a temporary directory next to its target, then moved into place with
``rename``: the previous checkpoint becomes ``checkpoint.old`` (replacing an older one) and the new one becomes
``checkpoint``. A kill at any moment leaves at least one whole checkpoint, and after a successful write the one
before it stays as ``checkpoint.old``, a fallback for a ``checkpoint`` damaged later on disk.

:func:`latest_checkpoint` returns the newest checkpoint; :func:`find_checkpoint` the newest whose files are whole
(:func:`check_checkpoint`), warning about a damaged one it skips; :func:`check_checkpoint` raises
:class:`DamagedCheckpointError` naming the damaged file; :func:`recover_checkpoint` moves a damaged ``checkpoint``
aside before a run resumes, so the directory again holds ``checkpoint`` (whole) and the one before it. Nothing
here unpickles: weights are safetensors, JSON is parsed as JSON, and a ``torch.save`` file is only checked as a zip
archive (its members' CRCs); loaders read it with ``torch.load(weights_only=True)``.

Output folders: a command writes only into a folder that is new, empty, or an earlier output of the same command
(:func:`claim_output_dir`, which leaves a small marker file, :data:`OUTPUT_MARKER`, naming the command); anything
else -- a file, a project folder, another command's output -- is refused with :class:`OutputDirError` before any
work starts. :func:`write_directory_atomically` replaces an output folder whole (a model directory), keeping what
the user added to it since: it replaces only what the command wrote. Outputs get the permissions the user's umask
gives new files and folders.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from textenv.files import parse_json, set_default_modes
from textenv.user_warnings import warn_caller

CHECKPOINT_DIR = "checkpoint"
PREVIOUS_DIR = "checkpoint.old"
DAMAGED_DIR = "checkpoint.damaged"
COMPLETE_MARKER = "trainer_state.json"  # written last: a directory without it is not a checkpoint
OUTPUT_MARKER = ".textenv-output.json"  # in every output folder: {"command": ..., "files": [what it wrote]}


class DamagedCheckpointError(ValueError):
    """A checkpoint file that cannot be read whole (truncated, corrupted); the message names the file."""


class OutputDirError(ValueError):
    """A path a command may not write its output folder into; the message names it and says why."""


# -- output folders --------------------------------------------------------------------------------------------
def output_command(path: str | os.PathLike) -> str | None:
    """The command whose output folder ``path`` is, from its :data:`OUTPUT_MARKER` (``None``: no marker)."""
    marker = Path(path) / OUTPUT_MARKER
    if not marker.is_file():
        return None
    return _read_marker(marker)["command"]


def _read_marker(marker: Path) -> dict[str, Any]:
    record = parse_json(marker.read_bytes(), str(marker))
    if not isinstance(record, dict) or not isinstance(record.get("command"), str):
        raise OutputDirError(f"{str(marker)!r} is damaged (expected {{\"command\": ...}}); it marks a textenv output")
    files = record.get("files")
    if files is not None and not (isinstance(files, list) and all(isinstance(f, str) for f in files)):
        raise OutputDirError(f"{str(marker)!r} is damaged: 'files' is not a list of names")
    return record


def check_output_dir(path: str | os.PathLike, command: str, *, markers: tuple[str, ...] = ()) -> Path:
    """Raise :class:`OutputDirError` unless ``command`` may write its output folder at ``path``.

    Allowed: a path that does not exist yet (under folders, not files), an empty folder, or an earlier output of
    ``command``: its :data:`OUTPUT_MARKER` names ``command``, or, for a folder written before the marker existed,
    it holds one of ``markers`` (files only that command writes, e.g. ``run.json``).
    """
    path = Path(path)
    hint = f"choose a new or empty folder, or an earlier `textenv {command}` output"
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise OutputDirError(f"{str(path)!r}: {str(parent)!r} is a file, not a folder; {hint}")
        return path
    if not path.is_dir():
        raise OutputDirError(f"{str(path)!r} is a file; `textenv {command}` writes a folder there ({hint})")
    owner = output_command(path)
    if owner == command or (owner is None and any((path / name).exists() for name in markers)):
        return path
    if owner is not None:
        raise OutputDirError(f"{str(path)!r} holds the output of `textenv {owner}`, not of `textenv {command}`; {hint}")
    if next(path.iterdir(), None) is not None:
        raise OutputDirError(
            f"{str(path)!r} is a folder with other files in it, not an earlier `textenv {command}` output "
            f"(nothing there is replaced or deleted); {hint}"
        )
    return path


def claim_output_dir(path: str | os.PathLike, command: str, *, markers: tuple[str, ...] = ()) -> Path:
    """:func:`check_output_dir`, then create the folder and mark it as ``command``'s output; return it."""
    path = check_output_dir(path, command, markers=markers)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / OUTPUT_MARKER).is_file():
        _write_marker(path, command, None)
    return path


def _write_marker(directory: Path, command: str, files: list[str] | None) -> None:
    record: dict[str, Any] = {"command": command}
    if files is not None:
        record["files"] = files
    tmp = directory / f"{OUTPUT_MARKER}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, directory / OUTPUT_MARKER)


def write_directory_atomically(
    target: str | os.PathLike, command: str, write: Callable[[Path], None], *, markers: tuple[str, ...] = ()
) -> Path:
    """Write ``command``'s output folder ``target`` whole: ``write(tmp)`` fills a temporary folder beside it, which
    then replaces ``target`` with two renames (a kill leaves the old folder or the new one, never a mix).

    Only what ``command`` wrote is replaced: entries of the old folder that its marker does not list as written
    by ``command`` (files the user added) are copied into the new one first. Check ``target`` with
    :func:`check_output_dir` before any work (``markers`` as there); it is checked again here.
    """
    target = Path(target)
    check_output_dir(target, command, markers=markers)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old = tmp.with_name(tmp.name.replace(".tmp-", ".old-", 1))  # as unique as tmp: nobody else's folder
    try:
        write(tmp)
        set_default_modes(tmp)  # before the user's files are copied in: those keep their own
        written = sorted(p.name for p in tmp.iterdir())
        if target.is_dir():
            previous = (_read_marker(target / OUTPUT_MARKER).get("files") if (target / OUTPUT_MARKER).is_file()
                        else None) or []
            for entry in target.iterdir():
                if entry.name in written or entry.name in previous or entry.name == OUTPUT_MARKER:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.copytree(entry, tmp / entry.name, symlinks=True)
                else:
                    shutil.copy2(entry, tmp / entry.name, follow_symlinks=False)
        _write_marker(tmp, command, [*written, OUTPUT_MARKER])
        if target.exists():
            os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# -- checkpoints -----------------------------------------------------------------------------------------------
def write_atomically(output_dir: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` and move ``tmp_dir`` to ``output_dir/checkpoint``; return that path.

    The checkpoint it replaces is kept as ``output_dir/checkpoint.old``. A ``checkpoint`` or ``checkpoint.old``
    there that is not a checkpoint (no :data:`COMPLETE_MARKER`: the user's own folder) is never moved or deleted:
    :class:`OutputDirError`.
    """
    output_dir = Path(output_dir)
    target, previous = output_dir / CHECKPOINT_DIR, output_dir / PREVIOUS_DIR
    for existing in (target, previous):
        if existing.exists() and not (existing / COMPLETE_MARKER).is_file():
            raise OutputDirError(
                f"{str(existing)!r} is not a checkpoint (no {COMPLETE_MARKER}); a checkpoint would replace it there, "
                "so move it away or choose another output folder"
            )
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(f".{CHECKPOINT_DIR}.tmp-*"):  # left by a run killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT_DIR}.tmp-", dir=output_dir))
    try:
        write(tmp)
        if not (tmp / COMPLETE_MARKER).is_file():
            raise RuntimeError(f"checkpoint writer did not write {COMPLETE_MARKER}")
        set_default_modes(tmp)
        if target.exists():
            if previous.exists():
                shutil.rmtree(previous)
            os.rename(target, previous)
        os.rename(tmp, target)
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def latest_checkpoint(path: str | os.PathLike) -> Path | None:
    """The newest checkpoint at ``path`` (a checkpoint directory or an output directory), whole or not."""
    return next(_candidates(path), None)


def _candidates(path: str | os.PathLike) -> Iterator[Path]:
    """The checkpoints at ``path``, newest first: itself, its ``checkpoint``, its ``checkpoint.old``."""
    path = Path(path)
    for candidate in (path, path / CHECKPOINT_DIR, path / PREVIOUS_DIR):
        if (candidate / COMPLETE_MARKER).is_file():
            yield candidate


def find_checkpoint(path: str | os.PathLike, *, warn: bool = True) -> Path | None:
    """The newest whole checkpoint at ``path``: a checkpoint directory itself, or an output directory holding one.

    An output directory's ``checkpoint`` is preferred; when it is damaged, ``checkpoint.old`` is returned (with a
    warning naming the damaged file). Returns ``None`` when there is no checkpoint at all.

    Raises:
        DamagedCheckpointError: every checkpoint there is damaged.
    """
    damaged: list[DamagedCheckpointError] = []
    for candidate in _candidates(path):
        try:
            check_checkpoint(candidate)
        except DamagedCheckpointError as err:
            damaged.append(err)
            continue
        if damaged and warn:
            warn_caller(f"{damaged[0]}; using the previous checkpoint {str(candidate)!r}", RuntimeWarning)
        return candidate
    if damaged:
        raise damaged[0]
    return None


def recover_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """Make ``output_dir/checkpoint`` the newest whole checkpoint before a run resumes from it.

    A damaged ``checkpoint`` is moved aside to ``checkpoint.damaged`` (with a warning naming the damaged file) and
    ``checkpoint.old`` takes its place; after a kill between the two renames of :func:`write_atomically`,
    ``checkpoint.old`` is moved back. Returns the whole checkpoint, or ``None`` when there is none.

    Raises:
        DamagedCheckpointError: no checkpoint there is whole.
    """
    output_dir = Path(output_dir)
    target, previous = output_dir / CHECKPOINT_DIR, output_dir / PREVIOUS_DIR
    found = find_checkpoint(output_dir, warn=False)
    if found is None or found != previous:
        return found
    if target.exists():
        try:
            check_checkpoint(target)
            problem = "it is not a checkpoint"
        except DamagedCheckpointError as err:
            problem = str(err)
        damaged = output_dir / DAMAGED_DIR
        shutil.rmtree(damaged, ignore_errors=True)
        os.rename(target, damaged)
        warn_caller(f"{problem}; moved it to {str(damaged)!r} and resuming from the previous checkpoint", RuntimeWarning)
    os.rename(previous, target)
    return target


def check_checkpoint(directory: str | os.PathLike) -> None:
    """Raise :class:`DamagedCheckpointError` naming the first file of ``directory`` that is not whole.

    Checked: every ``*.safetensors`` (header and size), ``*.json`` (parses), ``*.pt``/``*.pth``
    (a whole zip archive, every member's CRC), and the completion marker's presence.
    """
    directory = Path(directory)
    if not (directory / COMPLETE_MARKER).is_file():
        raise DamagedCheckpointError(f"{str(directory)!r} is not a whole checkpoint (no {COMPLETE_MARKER})")
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        problem = _file_problem(file)
        if problem:
            raise DamagedCheckpointError(f"checkpoint file {str(file)!r} is damaged: {problem}")


def _file_problem(file: Path) -> str | None:
    suffix = file.suffix
    try:
        if suffix == ".safetensors":
            return _safetensors_problem(file)
        if suffix == ".json":
            json.loads(file.read_text(encoding="utf-8"))
        elif suffix in (".pt", ".pth"):
            with zipfile.ZipFile(file) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"member {bad!r} fails its CRC check"
    except (OSError, ValueError, RecursionError, zipfile.BadZipFile, EOFError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _safetensors_problem(file: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes up to the file's end."""
    size = file.stat().st_size
    with file.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return f"{size} bytes, shorter than the 8-byte header length"
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > size - 8:
            return f"header of {header_len} bytes does not fit in {size} bytes"
        header = json.loads(f.read(header_len))
    end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        return f"{size} bytes, but its header describes {8 + header_len + end}"
    return None
