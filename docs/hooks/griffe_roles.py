"""Griffe extension for the API reference: docstrings here use Sphinx roles (``:class:`~agents.lm.GRPOTrainer` ``),
which Markdown would print as they are; this turns each into inline code before mkdocstrings renders it."""

from __future__ import annotations

import re
from typing import Any

import griffe

RST_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):`~?([^`]+)`")


def plain_roles(text: str) -> str:
    """Sphinx roles (``:class:`~a.b.C` ``) as inline code (`` `a.b.C` ``)."""
    return RST_ROLE.sub(lambda m: f"`{m.group(1)}`", text)


class SphinxRolesAsCode(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
