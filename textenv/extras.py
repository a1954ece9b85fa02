"""Optional third-party libraries (``pip install "textenv[EXTRA]"``), imported only when a feature needs them.

Without the extra, the feature fails with :class:`MissingExtraError`: one line naming what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """A feature needs a library from one of textenv's extras that is not installed; the message says which."""


def import_extra(module: str, extra: str, feature: str) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExtraError` naming ``extra`` when it is missing.

    Args:
        module: the library's import name (``"reasoning_gym"``).
        extra: the textenv extra that installs it (``"tasks"``).
        feature: what needs it, for the message (``"textenv/ReasoningGym-v0"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        missing = getattr(err, "name", None) or module
        if missing != module and not missing.startswith(module + ".") and not module.startswith(missing + "."):
            raise  # the library is there but one of its own imports is broken: show that error
        raise MissingExtraError(
            f"{feature} needs the {module!r} library, which is not installed: pip install \"textenv[{extra}]\""
        ) from None
