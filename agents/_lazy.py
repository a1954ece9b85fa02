"""Names a package exports but imports on first use, so that importing the package does not import an optional
third-party library."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str], requires: tuple[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's module-level ``__getattr__`` and ``__dir__`` for ``exports`` (name -> the module defining it).

    With ``requires=(module, extra)``, using a name when ``module`` cannot be imported raises ``ImportError`` in one
    line that names the extra to install (``pip install 'textenv[extra]'``).
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if requires is not None:
            needed, extra = requires
            try:
                importlib.import_module(needed)
            except ImportError:
                raise ImportError(
                    f"{package}.{name} needs {needed}, which is not installed: pip install 'textenv[{extra}]'"
                ) from None
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__
