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
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

CHECKPOINT_DIR = "checkpoint"
PREVIOUS_DIR = "checkpoint.old"
DAMAGED_DIR = "checkpoint.damaged"
COMPLETE_MARKER = "trainer_state.json"  # written last: a directory without it is not a checkpoint


class DamagedCheckpointError(ValueError):
    """A checkpoint file that cannot be read whole (truncated, corrupted); the message names the file."""


def write_atomically(output_dir: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` and move ``tmp_dir`` to ``output_dir/checkpoint``; return that path.

    The checkpoint it replaces is kept as ``output_dir/checkpoint.old``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(f".{CHECKPOINT_DIR}.tmp-*"):  # left by a run killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT_DIR}.tmp-", dir=output_dir))
    try:
        write(tmp)
        if not (tmp / COMPLETE_MARKER).is_file():
            raise RuntimeError(f"checkpoint writer did not write {COMPLETE_MARKER}")
        target, previous = output_dir / CHECKPOINT_DIR, output_dir / PREVIOUS_DIR
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
            warnings.warn(
                f"{damaged[0]}; using the previous checkpoint {str(candidate)!r}", RuntimeWarning, stacklevel=2
            )
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
        warnings.warn(
            f"{problem}; moved it to {str(damaged)!r} and resuming from the previous checkpoint",
            RuntimeWarning,
            stacklevel=2,
        )
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
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
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
