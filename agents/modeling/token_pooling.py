"""Token-id observations as feature vectors, in plain torch: the embedding table and the masked pooling that the
SB3 features extractor (:class:`agents.sb3.TokenFeaturesExtractor`) and the RLlib module
(:class:`agents.rllib.TokenRLModule`) share, so one observation gives the same features in either library.

* :class:`TokenEmbedding` -- an embedding table, optionally copied from a causal LM's input embeddings.
* :func:`masked_mean` -- the mean over the valid slots of a padded sequence.
* :func:`pool_prompt_and_completion` -- textenv's observation pooled as *what was asked*, *what was written so
  far* and *how far the completion is*; :func:`pooled_width` is its width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TokenEmbedding(nn.Module):
    """An embedding table of ``vocab_size`` rows, optionally copied from a causal LM's input embeddings (projected
    to ``embed_dim`` by a learned linear layer when the widths differ).

    Args:
        vocab_size: rows of the table (token ids ``0 .. vocab_size - 1``).
        embed_dim: width of the embeddings it returns.
        init: ``None`` (a fresh table), a causal LM (``transformers`` model), or a name or directory for
            :func:`textenv.models.load_causal_lm`.
        freeze: do not train the table (only with ``init``).
    """

    def __init__(self, vocab_size: int, embed_dim: int, init: Any = None, freeze: bool = False) -> None:
        super().__init__()
        if init is None:
            if freeze:
                raise ValueError("freeze_embeddings=True needs embedding_init (a causal LM or its name)")
            self.table = nn.Embedding(vocab_size, embed_dim)
            self.project: nn.Module = nn.Identity()
            return
        weight = lm_input_embeddings(init)
        if weight.shape[0] < vocab_size:
            raise ValueError(
                f"embedding_init has {weight.shape[0]} token embeddings, fewer than the observation's vocabulary "
                f"of {vocab_size}"
            )
        self.table = nn.Embedding.from_pretrained(weight[:vocab_size].clone(), freeze=freeze)
        width = weight.shape[1]
        self.project = nn.Identity() if width == embed_dim else nn.Linear(width, embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.table(ids))


def lm_input_embeddings(init: Any) -> torch.Tensor:
    """The input-embedding matrix of a causal LM (or of the one :func:`textenv.models.load_causal_lm` loads by
    that name), as a detached float32 CPU tensor."""
    if isinstance(init, (str, bytes)) or hasattr(init, "__fspath__"):
        from textenv.models import load_causal_lm

        init = load_causal_lm(init)
    if not hasattr(init, "get_input_embeddings"):
        raise TypeError(
            f"embedding_init must be a causal LM or a model name, got {type(init).__name__}: {init!r:.80}"
        )
    return init.get_input_embeddings().weight.detach().float().cpu()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` ``(B, L, D)`` over the slots where ``mask`` ``(B, L)`` is true; zeros for a row without
    any."""
    weights = mask.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def pool_prompt_and_completion(embedded: torch.Tensor, mask: torch.Tensor, max_prompt_tokens: int) -> torch.Tensor:
    """textenv's observation layout (the prompt in the first ``max_prompt_tokens`` slots, the completion after
    them) pooled as ``[masked mean of the prompt, masked mean of the completion, filled fraction of the completion
    slots]``: shape ``(B, 2 * D + 1)`` for ``embedded`` ``(B, L, D)``."""
    p = max_prompt_tokens
    completion_mask = mask[:, p:]
    filled = completion_mask.to(embedded.dtype).mean(dim=1, keepdim=True)
    return torch.cat(
        [masked_mean(embedded[:, :p], mask[:, :p]), masked_mean(embedded[:, p:], completion_mask), filled], dim=1
    )


def pooled_width(embed_dim: int) -> int:
    """The width of :func:`pool_prompt_and_completion`'s features for embeddings of width ``embed_dim``."""
    return 2 * embed_dim + 1
