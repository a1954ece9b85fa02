"""Model-path checks shared by the model-based plugins (no torch import here)."""

from __future__ import annotations

import os
from pathlib import Path


def check_model_path(model: str, plugin: str) -> str:
    """Return ``model`` unchanged if it is an existing path or looks like a hub id / built-in name.

    Raises:
        FileNotFoundError: ``model`` looks like a local path (absolute, relative with ``.``/``~``, or with
            more than two components) and does not exist.
    """
    if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
        raise TypeError(f"{plugin}: model must be a model directory or hub id (str), got {model!r}")
    name = os.fspath(model)
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    looks_local = name.startswith((".", "/", "~")) or "\\" in name or len(name.split("/")) > 2
    if looks_local:
        raise FileNotFoundError(f"{plugin}: model directory {name!r} does not exist")
    return name
