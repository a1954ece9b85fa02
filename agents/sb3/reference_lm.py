"""A reference causal LM's next-token distribution over textenv observations, batched and KV-cached.

The top-k action wrapper and the nucleus action mask (:mod:`agents.sb3.wrappers`) both need, at every step,
the reference LM's next-token logits for each row of a batch. :class:`ReferenceLM` gets them the way
:class:`agents.lm_policy.CausalLMPolicy` does: :meth:`ReferenceLM.prefill` runs the rows' current contexts
once (left-padded, ``position_ids`` counted from each row's first real token) and keeps
its KV cache; :meth:`ReferenceLM.advance` then feeds one token per row, so no step re-encodes
the sequence. When some rows of a batch start new episodes, :meth:`ReferenceLM.replace_rows` prefills only
those rows' prompts and splices their keys and values into the batch's cache (left-padded to a common
length, all-padding columns trimmed), so the other rows keep theirs.

Helpers :func:`top_k_candidates` and :func:`nucleus_mask` turn logits into candidate ids and top-p masks.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from textenv.kv_cache import cache_kwargs, returned_cache

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
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._logits_to_keep = True

    @torch.no_grad()
    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> torch.Tensor:
        """Encode each row's context (its valid tokens, in order), keep the KV cache for :meth:`advance`, and
        return the next-token logits ``(B, V)``.

        ``input_ids``/``attention_mask`` are textenv observations, shape ``(B, L)`` or ``(L,)``. Each row's
        valid tokens (prompt, then completion so far) are right-aligned, so the batch is left-padded.
        """
        logits, self._cache, self._mask = self._encode(input_ids, attention_mask)
        return logits

    @torch.no_grad()
    def replace_rows(self, rows: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> torch.Tensor:
        """Start rows ``rows`` over from new contexts (shape ``(len(rows), L)``), keep the other rows' cache,
        and return the new rows' next-token logits ``(len(rows), V)``."""
        if self._mask is None:
            raise RuntimeError("call prefill() before replace_rows()")
        rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.device)
        logits, cache, mask = self._encode(input_ids, attention_mask)
        old_layers, new_layers = _get_kv(self._cache), _get_kv(cache)
        if old_layers is None or new_layers is None:
            raise ValueError(f"cannot splice a {type(self._cache).__name__} cache; use prefill() for the whole batch")
        if rows_t.numel() != mask.shape[0]:
            raise ValueError(f"replace_rows got {rows_t.numel()} rows and {mask.shape[0]} contexts")
        width = max(self._mask.shape[1], mask.shape[1])
        full_mask = _left_pad(self._mask, width, dim=1)
        full_mask[rows_t] = _left_pad(mask, width, dim=1)
        first = int(full_mask.any(dim=0).to(torch.int8).argmax())  # columns before it are padding in every row
        self._mask = full_mask[:, first:]
        spliced = []
        for old_pair, new_pair in zip(old_layers, new_layers):
            pair = []
            for old, new in zip(old_pair, new_pair):
                merged = _left_pad(old, width, dim=2)
                merged[rows_t] = _left_pad(new, width, dim=2)
                pair.append(merged[:, :, first:])
            spliced.append(tuple(pair))
        _set_kv(self._cache, spliced)
        return logits

    @property
    def can_replace_rows(self) -> bool:
        """Whether :meth:`replace_rows` can splice this model's cache (a plain ``DynamicCache``)."""
        return self._cache is None or _get_kv(self._cache) is not None

    def _encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[torch.Tensor, Any, torch.Tensor]:
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
        ids_t = torch.as_tensor(packed_ids, device=self.device)
        mask_t = torch.as_tensor(packed_mask, device=self.device)
        positions = (mask_t.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(input_ids=ids_t, attention_mask=mask_t, position_ids=positions, use_cache=True)
        return self._restrict(out.logits[:, -1]), returned_cache(out), mask_t

    def _forward(self, **kwargs: Any) -> Any:
        if self._logits_to_keep:
            try:  # only the last position's logits: the LM head is a fifth of SmolLM2's compute per token
                return self.model(**kwargs, logits_to_keep=1)
            except TypeError:
                self._logits_to_keep = False
        return self.model(**kwargs)

    @torch.no_grad()
    def advance(self, tokens: np.ndarray) -> torch.Tensor:
        """Append one token per row (shape ``(B,)``) and return the next-token logits ``(B, V)``."""
        if self._mask is None:
            raise RuntimeError("call prefill() before advance()")
        tokens_t = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=self.device).view(-1, 1)
        if tokens_t.shape[0] != self._mask.shape[0]:
            raise ValueError(f"advance() got {tokens_t.shape[0]} tokens for a batch of {self._mask.shape[0]}")
        self._mask = torch.cat([self._mask, torch.ones_like(tokens_t)], dim=-1)
        positions = self._mask.sum(-1, keepdim=True) - 1
        out = self._forward(
            input_ids=tokens_t,
            attention_mask=self._mask,
            position_ids=positions,
            **cache_kwargs(self.model, self._cache),
            use_cache=True,
        )
        self._cache = returned_cache(out)
        return self._restrict(out.logits[:, -1])

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
    """Boolean mask of each row's top-p nucleus: the most likely tokens whose mass first reaches ``top_p``.

    Without ``among`` the mask is over the vocabulary, ``(B, V)``. With ``among`` (``(B, k)`` candidate ids)
    it says which candidates are in the nucleus, ``(B, k)``. The most likely token is always in it.
    """
    probs = logits.softmax(-1)
    sorted_probs, order = torch.sort(probs, descending=True, dim=-1)
    keep_sorted = (sorted_probs.cumsum(-1) - sorted_probs) < top_p
    keep_sorted[:, 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    if among is not None:
        keep = torch.gather(keep, 1, torch.as_tensor(among, device=keep.device))
    return keep.cpu().numpy()


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``tensor`` zero-padded on the left of ``dim`` to ``width``."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _get_kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per-layer ``(keys, values)`` (``(B, heads, T, dim)``) of a full-attention ``DynamicCache``; ``None`` for
    any other cache (sliding windows, quantised, ...), which :meth:`ReferenceLM.replace_rows` cannot splice."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        if any(type(layer).__name__ != "DynamicLayer" or layer.keys is None or layer.keys.dim() != 4 for layer in layers):
            return None
        return [(layer.keys, layer.values) for layer in layers]
    keys, values = getattr(cache, "key_cache", None), getattr(cache, "value_cache", None)  # transformers < 4.54
    if isinstance(keys, list) and isinstance(values, list) and all(k.dim() == 4 for k in keys):
        return list(zip(keys, values))
    return None


def _set_kv(cache: Any, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer, (keys, values) in zip(layers, pairs):
            layer.keys, layer.values = keys, values
    else:
        cache.key_cache[:] = [keys for keys, _ in pairs]
        cache.value_cache[:] = [values for _, values in pairs]
