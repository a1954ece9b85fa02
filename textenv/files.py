"""Files read and written for the user: JSON read as data, and the permissions new outputs get.

:func:`parse_json` reads JSON from disk as data: every way it can fail (bad UTF-8, bad JSON, an integer too long to
convert, nesting too deep) is one ``ValueError`` naming where the text came from. Outputs written through a
temporary file or folder (owner-only, 0600/0700) get the permissions the user's umask gives a new file or folder
(:func:`default_mode`, :func:`set_default_modes`) before they are moved into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def parse_json(data: str | bytes, where: str) -> Any:
    """``json.loads(data)``, with every failure a ``ValueError`` that starts with ``where`` (e.g. ``"file:3"``).

    ``json.loads`` raises ``JSONDecodeError`` for bad JSON, a plain ``ValueError`` for an integer of more than
    4300 digits, ``RecursionError`` for deeply nested arrays and ``UnicodeDecodeError`` for bytes that are not
    UTF-8; a file read from disk may hold any of them.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as err:
        raise ValueError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to read") from None
    except ValueError as err:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ValueError(f"{where}: unreadable JSON ({err})") from None


def default_mode(directory: bool = False) -> int:
    """The permissions a new file (or folder) gets under the user's umask: what ``open``/``mkdir`` would give.
    ``tempfile``'s files and folders are owner-only (0600/0700); an output moved into place from one is set to
    this first."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def set_default_modes(directory: str | os.PathLike) -> None:
    """Give ``directory`` and everything in it the permissions of a new folder or file (:func:`default_mode`);
    links are left alone."""
    folder_mode, file_mode = default_mode(directory=True), default_mode()
    root = Path(directory)
    os.chmod(root, folder_mode)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        os.chmod(path, folder_mode if path.is_dir() else file_mode)
