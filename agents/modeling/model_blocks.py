"""The parts of a transformers model that running it block by block needs: its list of transformer blocks, its final
norm, the model with its block list cut to a range for the duration of a forward, the hidden states that leave
its first blocks, and freezing all but its top blocks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
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


@contextlib.contextmanager
def states_leaving_first_blocks(backbone: nn.Module, blocks: int) -> Iterator[list[torch.Tensor]]:
    """The backbone cut to its first ``blocks`` blocks, and a list that receives, at each of its forwards, the hidden
    states those blocks output (what enters block ``blocks`` of the whole model; a pre-hook on the final norm)."""
    norm = final_norm(backbone)
    if norm is None:
        raise ValueError(f"cannot find the final norm of {type(backbone).__name__} (expected .norm or .ln_f)")
    kept: list[torch.Tensor] = []
    hook = norm.register_forward_pre_hook(lambda _module, args: kept.append(args[0].detach()))
    try:
        with blocks_cut_to(backbone, 0, blocks):
            yield kept
    finally:
        hook.remove()


def freeze_lower_blocks(model: nn.Module, trainable_blocks: int | None, head: nn.Module | None = None) -> int:
    """Train only the top ``trainable_blocks`` transformer blocks of ``model`` (a transformers model: its
    ``base_model`` holds the blocks), its final norm and ``head`` (default: the ``score`` head of a sequence
    classifier, if any); the input embeddings, the blocks below and a causal LM's LM head are frozen. ``None``
    trains every parameter. Returns the number of trainable parameters of ``model``."""
    if trainable_blocks is None:
        model.requires_grad_(True)
    else:
        blocks = transformer_blocks(model)
        if trainable_blocks > len(blocks):
            raise ValueError(f"trainable_blocks={trainable_blocks}, but the model has {len(blocks)} blocks")
        model.requires_grad_(False)
        for block in blocks[len(blocks) - trainable_blocks :]:
            block.requires_grad_(True)
        norm = final_norm(model.base_model)
        if norm is not None:
            norm.requires_grad_(True)
        head = head if head is not None else getattr(model, "score", None)
        if head is not None:
            head.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
