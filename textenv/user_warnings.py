"""Warnings that point at the user's line, not at the library line that raised them.

``warnings.warn(..., stacklevel=2)`` names the caller of the function that warns, which is often another function
of the library (a trainer calling :func:`textenv.preferences.load_preferences`). :func:`warn_caller` walks up past
every frame of ``textenv``, ``rewards`` and ``agents`` and names the first line outside them: the user's call.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

#: the folders whose frames are skipped: the three packages of this project
LIBRARY_DIRS = tuple(str(Path(__file__).resolve().parents[1] / name) + os.sep for name in ("textenv", "rewards", "agents"))


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the nearest frame outside the library."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.realpath(frame.f_code.co_filename).startswith(LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
