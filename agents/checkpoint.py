"""Atomic checkpoint directories.

A checkpoint is written whole into a temporary directory next to its target, then moved into place with
``rename``: the previous checkpoint is renamed to ``checkpoint.old`` first and deleted only once the new one is in
place, so a kill at any moment leaves at least one whole checkpoint (``checkpoint`` or, for the instant between
the two renames, ``checkpoint.old``). Nothing here unpickles: weights are safetensors and the trainer state is
loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

CHECKPOINT_DIR = "checkpoint"
PREVIOUS_DIR = "checkpoint.old"
COMPLETE_MARKER = "trainer_state.json"  # written last: a directory without it is not a checkpoint


def write_atomically(output_dir: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` and move ``tmp_dir`` to ``output_dir/checkpoint``; return that path."""
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
        shutil.rmtree(previous, ignore_errors=True)
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def find_checkpoint(path: str | os.PathLike) -> Path | None:
    """The whole checkpoint at ``path``: a checkpoint directory itself, or an output directory holding one."""
    path = Path(path)
    for candidate in (path, path / CHECKPOINT_DIR, path / PREVIOUS_DIR):
        if (candidate / COMPLETE_MARKER).is_file():
            return candidate
    return None
