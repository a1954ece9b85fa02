"""A reference causal LM's next-token distribution over textenv observations, batched and KV-cached.

The top-k action wrapper and the nucleus action mask (:mod:`agents.sb3.wrappers`) both need, at every step,
the reference LM's next-token logits for each row of a batch. :class:`ReferenceLM` gets them from the agents' one
decoding path, :class:`agents.modeling.decoding.KVDecoder`: :meth:`ReferenceLM.prefill` packs the rows' current contexts
(left-padded) and runs them once, keeping the KV cache; :meth:`ReferenceLM.advance` then feeds one token per row,
so no step re-encodes the sequence. When some rows of a batch start new episodes, :meth:`ReferenceLM.replace_rows`
prefills only those rows' contexts and splices them into the batch's cache, so the other rows keep theirs.

Helpers :func:`top_k_candidates` and :func:`nucleus_mask` turn logits into candidate ids and top-p masks.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from agents.modeling.decoding import KVDecoder, nucleus_keep

_SHARED: dict[str, Any] = {}
_SHARED_LOCK = threading.Lock()


def shared_reference_model(name: str) -> Any:
    """Load a causal LM by name once per process (eval mode, read-only) and share it between wrappers.

    rl_zoo3 and ``make_vec_env`` build one wrapper per env from keyword arguments; sharing the model keeps
    ``n_envs`` wrappers from holding ``n_envs`` copies of it.
    """
    with _SHARED_LOCK:
        model = _SHARED.get(name)
        if model is None:
            from textenv.models import load_causal_lm

            model = _SHARED[name] = load_causal_lm(name).eval().requires_grad_(False)
        return model


class ReferenceLM:
    """Next-token logits of a causal LM for a batch of textenv contexts, with its KV cache.

    Args:
        model: a ``transformers`` causal LM, or a name for :func:`textenv.models.load_causal_lm` (loaded once
            per process and shared).
        vocab_size: the env's action-space size. Logits are cut (or ``-inf``-padded) to it.
        allowed: optional boolean ``(vocab_size,)`` array: tokens outside it get ``-inf`` logits (the env's
            ``action_masks()``), so candidates and nuclei only ever hold actions the env accepts.
    """

    def __init__(self, model: Any, vocab_size: int, allowed: np.ndarray | None = None) -> None:
        self.model = shared_reference_model(model) if isinstance(model, str) else model.eval()
        self.device = next(self.model.parameters()).device
        self.vocab_size = int(vocab_size)
        self._bias: torch.Tensor | None = None
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            if allowed.shape != (self.vocab_size,) or not allowed.any():
                raise ValueError(
                    f"allowed must be a boolean array of shape ({self.vocab_size},) with a True entry, got "
                    f"shape {allowed.shape}"
                )
            if not allowed.all():
                bias = torch.zeros(self.vocab_size, device=self.device)
                self._bias = bias.masked_fill(torch.as_tensor(~allowed, device=self.device), float("-inf"))
        self.decoder = KVDecoder(self.model)

    @torch.no_grad()
    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> torch.Tensor:
        """Encode each row's context (its valid tokens, in order), keep the KV cache for :meth:`advance`, and
        return the next-token logits ``(B, V)``.

        ``input_ids``/``attention_mask`` are textenv observations, shape ``(B, L)`` or ``(L,)``. Each row's
        valid tokens (prompt, then completion so far) are right-aligned, so the batch is left-padded.
        """
        return self._restrict(self.decoder.prefill(*self._pack(input_ids, attention_mask)))

    @torch.no_grad()
    def replace_rows(self, rows: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> torch.Tensor:
        """Start rows ``rows`` over from new contexts (shape ``(len(rows), L)``), keep the other rows' cache,
        and return the new rows' next-token logits ``(len(rows), V)``."""
        rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.device)
        return self._restrict(self.decoder.replace_rows(rows_t, *self._pack(input_ids, attention_mask)))

    @property
    def can_replace_rows(self) -> bool:
        """Whether :meth:`replace_rows` can splice this model's cache (a plain ``DynamicCache``)."""
        return self.decoder.can_replace_rows

    def _pack(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's valid tokens right-aligned: a left-padded batch."""
        ids = np.atleast_2d(np.asarray(input_ids, dtype=np.int64))
        mask = np.atleast_2d(np.asarray(attention_mask)).astype(bool)
        lengths = mask.sum(axis=1)
        if ids.shape != mask.shape or (lengths == 0).any():
            raise ValueError(
                f"need input_ids and attention_mask of one shape with a valid token in every row; got shapes "
                f"{ids.shape} and {mask.shape}, empty rows {np.flatnonzero(lengths == 0).tolist()}"
            )
        width = int(lengths.max())
        packed_ids = np.zeros((ids.shape[0], width), dtype=np.int64)
        packed_mask = np.zeros((ids.shape[0], width), dtype=np.int64)
        for row in range(ids.shape[0]):  # rows are few (n_envs)
            valid = ids[row][mask[row]]
            packed_ids[row, width - valid.size :] = valid
            packed_mask[row, width - valid.size :] = 1
        return torch.as_tensor(packed_ids, device=self.device), torch.as_tensor(packed_mask, device=self.device)

    @torch.no_grad()
    def advance(self, tokens: np.ndarray) -> torch.Tensor:
        """Append one token per row (shape ``(B,)``) and return the next-token logits ``(B, V)``."""
        if self.decoder.attention_mask is None:
            raise RuntimeError("call prefill() before advance()")
        tokens_t = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=self.device).view(-1, 1)
        if tokens_t.shape[0] != self.decoder.attention_mask.shape[0]:
            raise ValueError(
                f"advance() got {tokens_t.shape[0]} tokens for a batch of {self.decoder.attention_mask.shape[0]}"
            )
        return self._restrict(self.decoder.append(tokens_t)[:, -1])

    def _restrict(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[-1] > self.vocab_size:
            logits = logits[:, : self.vocab_size]
        elif logits.shape[-1] < self.vocab_size:
            logits = torch.nn.functional.pad(logits, (0, self.vocab_size - logits.shape[-1]), value=float("-inf"))
        return logits if self._bias is None else logits + self._bias


def top_k_candidates(logits: torch.Tensor, k: int) -> np.ndarray:
    """The ``k`` most likely token ids per row, most likely first: ``(B, k)`` int64."""
    return torch.topk(logits, k, dim=-1).indices.cpu().numpy().astype(np.int64)


def nucleus_mask(logits: torch.Tensor, top_p: float, among: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of each row's top-p nucleus (:func:`agents.modeling.decoding.nucleus_keep`).

    Without ``among`` the mask is over the vocabulary, ``(B, V)``. With ``among`` (``(B, k)`` candidate ids)
    it says which candidates are in the nucleus, ``(B, k)``. The most likely token is always in it.
    """
    keep = nucleus_keep(logits, top_p)
    if among is not None:
        keep = torch.gather(keep, 1, torch.as_tensor(among, device=keep.device))
    return keep.cpu().numpy()
