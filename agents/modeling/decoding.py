"""One decoding path for every causal LM in the agents: prefill a batch of left-padded contexts once, then append
tokens (sampled, or given by an env) to the KV cache, and turn next-token logits into samples.

Who uses it: the LM agents' rollouts and loss forwards (:mod:`agents.lm.rollout`), the env-stepping policy
(:mod:`agents.modeling.lm_policy`) and the SB3 wrappers' reference LM (:mod:`agents.sb3.reference_lm`).

Layout: a batch is left-padded (``attention_mask`` 0 on padding). A token's position id is the number of real
tokens before it in its row (:func:`position_ids`), so padding, wherever it sits, never shifts a row's positions;
appended columns continue each row's count. Appended columns may hold padding too (``mask`` 0), e.g. when an env
inserts a different number of tokens into each row of a multi-turn episode.

Example::

    decoder = KVDecoder(model)
    logits = decoder.prefill(prompt_ids, prompt_mask)             # (B, V): the first completion token's logits
    for _ in range(n):
        log_probs = torch.log_softmax(filter_logits(logits, temperature=0.7, top_p=0.9), -1)
        tokens = sample_categorical(log_probs, generator)
        logits = decoder.append(tokens[:, None])[:, -1]            # one new position per row
    decoder.append(env_tokens, env_mask)                          # tokens the env inserts, ragged across rows
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import numpy as np
import torch

from textenv.kv_cache import cache_kwargs, returned_cache

# -- positions and prompts ---------------------------------------------------------------------------------------


def position_ids(attention_mask: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
    """Position id of every column: the number of real tokens before it in its row, plus ``start`` (``(B, 1)``,
    the real tokens already in the cache). Padding columns get their row's current count (0 before the first
    real token)."""
    positions = attention_mask.long().cumsum(-1) - 1
    if start is not None:
        positions = positions + start
    return positions.clamp(min=0)


def leading_padding(attention_mask: Any) -> int:
    """How many leading columns are padding in every row (prompts are left-padded to ``max_prompt_tokens``,
    usually far more than a batch's longest prompt). Dropping them changes no logit: positions come from
    :func:`position_ids`."""
    if isinstance(attention_mask, torch.Tensor):
        attention_mask = attention_mask.cpu().numpy()
    used = np.asarray(attention_mask).any(axis=0)
    return int(np.argmax(used)) if used.any() else 0


def distinct_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(rows, row_of)``: one row index per distinct prompt (ids and padding alike) and, for every row, the index
    into ``rows`` of its prompt; ``None`` when no prompt repeats."""
    keyed = torch.where(prompt_mask > 0, prompt_ids, torch.full_like(prompt_ids, -1))
    unique, row_of = torch.unique(keyed, dim=0, return_inverse=True)
    if unique.shape[0] == keyed.shape[0]:
        return None
    rows = torch.empty(unique.shape[0], dtype=torch.long, device=prompt_ids.device)
    rows[row_of] = torch.arange(keyed.shape[0], device=prompt_ids.device)  # any row of each prompt will do
    return rows, row_of


# -- the forward -------------------------------------------------------------------------------------------------


def lm_forward(
    model: Any,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor,
    *,
    past: torch.Tensor | None = None,
    cache: Any = None,
    logits_to_keep: int = 1,
    use_cache: bool = True,
    inputs_embeds: torch.Tensor | None = None,
) -> Any:
    """``model``'s forward over new columns ``input_ids`` (``(B, n)``; or their ``inputs_embeds``, ``(B, n, H)``,
    with ``input_ids=None``) with position ids from :func:`position_ids`. ``past``: the attention mask of what
    ``cache`` already holds (``(B, L)``); the model sees ``[past, attention_mask]``. Only the last
    ``logits_to_keep`` positions go through the LM head (0: all)."""
    start = None if past is None else past.sum(-1, keepdim=True)
    full_mask = attention_mask if past is None else torch.cat([past, attention_mask], dim=1)
    kwargs: dict[str, Any] = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    kwargs.update(attention_mask=full_mask, position_ids=position_ids(attention_mask, start), use_cache=use_cache)
    accepted = _forward_parameters(type(getattr(model, "module", model)))  # the module inside a DDP wrapper
    if cache is not None:
        kwargs.update(cache_kwargs(model, cache))
    if "logits_to_keep" in accepted:
        out = model(**kwargs, logits_to_keep=logits_to_keep)
    else:
        out = model(**kwargs)
        if logits_to_keep:
            out.logits = out.logits[:, -logits_to_keep:]
    if use_cache and out.get("past_key_values") is None:
        out.past_key_values = returned_cache(out)  # the cache under the name every caller reads
    return out


@functools.cache
def _forward_parameters(model_class: type) -> frozenset[str]:
    """The keyword names of a model class's ``forward`` (``logits_to_keep``: transformers >= 4.45; the cache's
    name is :mod:`textenv.kv_cache`'s business)."""
    return frozenset(inspect.signature(model_class.forward).parameters)


class KVDecoder:
    """A causal LM's KV cache over a batch of left-padded contexts: :meth:`prefill` once, then :meth:`append`
    tokens (one sampled token per row, or a ragged block of tokens given by an env). Gradients flow unless the
    caller runs it under ``torch.no_grad``.

    Args:
        model: a transformers causal LM (or its DDP wrapper): runs every :meth:`append`.
        prompt_model: runs :meth:`prefill` instead of ``model`` (the same weights: the module inside ``model``'s
            DDP wrapper, so that one backward meets one DDP forward); default ``model``.
    """

    def __init__(self, model: Any, prompt_model: Any = None) -> None:
        self.model = model
        self.prompt_model = model if prompt_model is None else prompt_model
        self.cache: Any = None
        self.attention_mask: torch.Tensor | None = None  # (B, L): what the cache holds
        self.logits: torch.Tensor | None = None  # (B, V): the next token's logits

    def prefill(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        shared: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Encode left-padded contexts (columns that are padding in every row are dropped first) and return the
        next-token logits ``(B, V)``. With ``shared`` (from :func:`distinct_prompts`) only one row per distinct
        context is forwarded; its cache and logits go to every row with that context."""
        first = leading_padding(attention_mask)
        input_ids, attention_mask = input_ids[:, first:], attention_mask[:, first:]
        rows = shared[0] if shared is not None else slice(None)
        out = lm_forward(self.prompt_model, input_ids[rows], attention_mask[rows])
        cache, logits = out.past_key_values, out.logits[:, -1]
        if shared is not None:
            cache.batch_select_indices(shared[1])
            logits = logits[shared[1]]
        self.cache, self.attention_mask, self.logits = cache, attention_mask, logits
        return logits

    def append(
        self, tokens: torch.Tensor, mask: torch.Tensor | None = None, logits_to_keep: int = 1
    ) -> torch.Tensor:
        """Append ``tokens`` (``(B, n)``; ``mask`` 0 marks padding columns of rows that append fewer) to the cache
        and return the logits ``(B, logits_to_keep, V)`` of the last positions (0: all ``n``)."""
        if self.attention_mask is None:
            raise RuntimeError("call prefill() before append()")
        if tokens.dim() != 2 or tokens.shape[0] != self.attention_mask.shape[0]:
            raise ValueError(
                f"append() needs tokens of shape ({self.attention_mask.shape[0]}, n), got {tuple(tokens.shape)}"
            )
        mask = torch.ones_like(tokens) if mask is None else mask.to(self.attention_mask.dtype)
        out = lm_forward(
            self.model, tokens, mask, past=self.attention_mask, cache=self.cache, logits_to_keep=logits_to_keep
        )
        self.cache = out.past_key_values
        self.attention_mask = torch.cat([self.attention_mask, mask], dim=1)
        self.logits = out.logits[:, -1]
        return out.logits

    @property
    def can_replace_rows(self) -> bool:
        """Whether :meth:`replace_rows` can splice this model's cache (a plain full-attention ``DynamicCache``)."""
        return self.cache is None or _get_kv(self.cache) is not None

    def replace_rows(self, rows: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Start rows ``rows`` over from new left-padded contexts (``(len(rows), L')``): prefill only those, splice
        their keys and values into the batch's cache (left-padded to a common width, all-padding columns
        trimmed), keep the other rows' cache; return the new rows' next-token logits ``(len(rows), V)``."""
        if self.attention_mask is None:
            raise RuntimeError("call prefill() before replace_rows()")
        if rows.numel() != attention_mask.shape[0]:
            raise ValueError(f"replace_rows got {rows.numel()} rows and {attention_mask.shape[0]} contexts")
        old_cache, old_mask, old_logits = self.cache, self.attention_mask, self.logits
        new_logits = self.prefill(input_ids, attention_mask)
        new_cache, new_mask = self.cache, self.attention_mask
        old_layers, new_layers = _get_kv(old_cache), _get_kv(new_cache)
        if old_layers is None or new_layers is None:
            raise ValueError(f"cannot splice a {type(old_cache).__name__} cache; prefill() the whole batch")
        width = max(old_mask.shape[1], new_mask.shape[1])
        full_mask = _left_pad(old_mask, width, dim=1).clone()  # the caller's tensor may be a view of old_mask
        full_mask[rows] = _left_pad(new_mask, width, dim=1)
        first = leading_padding(full_mask)
        spliced = []
        for old_pair, new_pair in zip(old_layers, new_layers):
            pair = []
            for old, new in zip(old_pair, new_pair):  # the cache's own tensors: written in place when wide enough
                merged = _left_pad(old, width, dim=2)
                merged[rows] = _left_pad(new, width, dim=2)
                pair.append(merged[:, :, first:])
            spliced.append((pair[0], pair[1]))
        _set_kv(old_cache, spliced)
        logits = old_logits.clone() if old_logits is not None else None
        if logits is not None:
            logits[rows] = new_logits
        self.cache, self.attention_mask, self.logits = old_cache, full_mask[:, first:], logits
        return new_logits


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``tensor`` zero-padded on the left of ``dim`` to ``width`` (``tensor`` itself when already that wide)."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _get_kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per-layer ``(keys, values)`` (``(B, heads, T, dim)``) of a full-attention ``DynamicCache``; ``None`` for
    any other cache (sliding windows, quantised, ...), which cannot be spliced."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        if any(
            type(layer).__name__ != "DynamicLayer" or layer.keys is None or layer.keys.dim() != 4 for layer in layers
        ):
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


# -- from logits to tokens ---------------------------------------------------------------------------------------


def masked_logits(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Set the logits of tokens the env does not allow (``allowed`` False) to -inf."""
    if allowed is None:
        return logits
    return logits.masked_fill(~allowed, float("-inf"))


def nucleus_keep(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Boolean mask ``(B, V)`` of each row's top-p nucleus: the most likely tokens whose probability mass first
    reaches ``top_p`` (the most likely token always)."""
    sorted_probs, order = torch.sort(logits.float().softmax(-1), descending=True, dim=-1)
    keep_sorted = (sorted_probs.cumsum(-1) - sorted_probs) < top_p
    keep_sorted[:, 0] = True
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def filter_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Float logits of the sampling distribution: divided by ``temperature``, -inf outside ``allowed``, outside
    the ``top_k`` most likely tokens (0: all) and outside the ``top_p`` nucleus (1.0: all)."""
    logits = masked_logits(logits.float() / temperature, allowed)
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        logits = logits.masked_fill(~nucleus_keep(logits, top_p), float("-inf"))
    return logits


def entropy_from_logprobs(log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) over the last dimension; -inf log-probs (masked tokens) contribute 0."""
    return -(log_probs.exp() * log_probs.clamp(min=torch.finfo(log_probs.dtype).min)).sum(-1)


def sample_categorical(log_probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row from ``softmax(log_probs)`` by inverting the CDF with one uniform number per row: exact,
    and far cheaper on CPU than ``torch.multinomial`` (or one random number per vocabulary entry) over a 50k-token
    vocabulary. The CDF is accumulated in float64 so that tokens of tiny probability keep their share."""
    cdf = log_probs.exp().double().cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=torch.float64)
    tokens = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    return tokens.clamp(max=cdf.shape[1] - 1)
