"""The parts of a transformers model that running it block by block needs: its list of transformer blocks, its final
norm, and the model with its block list cut to a range for the duration of a forward."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


def final_norm(backbone: nn.Module) -> nn.Module | None:
    """The norm after the last block of a transformers backbone (``.norm`` or ``.ln_f``), or ``None``."""
    return getattr(backbone, "norm", None) or getattr(backbone, "ln_f", None)


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a transformers model (``.layers``, ``.h`` or ``.blocks`` of its base)."""
    base = model.base_model
    for name in ("layers", "h", "blocks"):
        blocks = getattr(base, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise ValueError(f"cannot find the transformer blocks of {type(base).__name__} (expected .layers or .h)")


@contextlib.contextmanager
def blocks_cut_to(backbone: nn.Module, start: int, stop: int) -> Iterator[None]:
    """The backbone with only its blocks ``[start, stop)`` for the duration of the ``with`` block."""
    blocks = transformer_blocks(backbone)
    name = next(n for n in ("layers", "h", "blocks") if getattr(backbone, n, None) is blocks)
    setattr(backbone, name, nn.ModuleList(list(blocks)[start:stop]))
    try:
        yield
    finally:
        setattr(backbone, name, blocks)
