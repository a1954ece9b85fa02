"""The frozen lower blocks of a reward model, run once per sequence: their output is cached and training runs only
the trainable top blocks on it.

With ``trainable_blocks=N`` the blocks below the top ``N`` never change, so the hidden state that enters the first
trainable block is a fixed function of each sequence. :class:`FrozenTrunkCache` computes it once for every distinct
``prefix + continuation`` of the data (without gradients, in eval mode) and keeps it; each training step then
forwards only the top ``N`` blocks (and the final norm) on the cached states, passed to the backbone as
``inputs_embeds`` with its block list cut to the top ``N``. For SmolLM2 with ``N=4`` that is 4 of 30 blocks per
step instead of 30, every epoch after the first pass.

It is exact for backbones whose forward adds nothing to ``inputs_embeds`` (rotary-position models: Llama, Mistral,
Qwen, SmolLM2). :func:`cache_is_exact` checks that on real pairs before the cache is used (GPT-2 style absolute
position embeddings fail it, and the trainer then forwards the whole model as before). The frozen blocks run in
eval mode, so a model with dropout in its frozen blocks trains as if that dropout were off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from agents.modeling.decoding import position_ids
from agents.modeling.model_blocks import blocks_cut_to, states_leaving_first_blocks, transformer_blocks
from agents.reward_model.scoring import (
    EncodedPair,
    PairScorer,
    TokenScores,
    collate_pairs,
    pool_hidden,
)

SequenceKey = tuple[tuple[int, ...], tuple[int, ...]]  # (prefix ids, continuation ids)


@dataclass
class CachedPairBatch:
    """A batch of pairs as cached entry states: ``S`` distinct sequences, right-padded, and ``B`` pairs."""

    states: torch.Tensor  # (S, L, H) the hidden states entering the first trainable block
    ids: torch.Tensor  # (S, L) the token ids (the token-score table reads them)
    mask: torch.Tensor  # (S, L)
    continuation_mask: torch.Tensor  # (S, L) the continuation's positions (mean pooling)
    chosen_index: torch.Tensor  # (B,)
    rejected_index: torch.Tensor  # (B,)
    margin: torch.Tensor  # (B,)

    @property
    def num_pairs(self) -> int:
        return int(self.chosen_index.shape[0])


class FrozenTrunkCache:
    """Hidden states entering block ``first_trainable`` of ``model`` (a one-output sequence classifier), per
    distinct sequence of the encoded pairs, computed on first use and kept (float32, on the model's device)."""

    def __init__(self, model: nn.Module, first_trainable: int, pad_token_id: int, batch_size: int = 16) -> None:
        self.model, self.first_trainable = model, first_trainable
        self.pad_token_id, self.batch_size = pad_token_id, batch_size
        self.states: dict[SequenceKey, torch.Tensor] = {}

    def fill(self, pairs: Sequence[EncodedPair]) -> None:
        """Compute the entry states of every sequence of ``pairs`` not cached yet (whole sequences, in batches)."""
        missing: dict[SequenceKey, None] = {}
        for pair in pairs:
            for continuation in (pair.chosen, pair.rejected):
                key = (pair.prefix, continuation)
                if key not in self.states:
                    missing.setdefault(key, None)
        keys = list(missing)
        for start in range(0, len(keys), self.batch_size):
            self._compute(keys[start : start + self.batch_size])

    @torch.no_grad()
    def _compute(self, keys: list[SequenceKey]) -> None:
        device = next(self.model.parameters()).device
        sequences = [prefix + continuation for prefix, continuation in keys]
        width = max(len(s) for s in sequences)
        ids = torch.full((len(keys), width), self.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, sequence in enumerate(sequences):
            ids[i, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
            mask[i, : len(sequence)] = 1
        backbone = self.model.base_model
        was_training = self.model.training
        self.model.eval()
        try:
            with states_leaving_first_blocks(backbone, self.first_trainable) as captured:
                backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
        finally:
            self.model.train(was_training)
        hidden = captured[-1].float()
        for i, (key, sequence) in enumerate(zip(keys, sequences)):
            self.states[key] = hidden[i, : len(sequence)].clone()

    def collate(self, pairs: Sequence[EncodedPair]) -> CachedPairBatch:
        """The cached batch of ``pairs`` (computing what is missing)."""
        self.fill(pairs)
        index: dict[SequenceKey, int] = {}
        chosen = [index.setdefault((p.prefix, p.chosen), len(index)) for p in pairs]
        rejected = [index.setdefault((p.prefix, p.rejected), len(index)) for p in pairs]
        rows = [self.states[key] for key in index]
        width = max(len(r) for r in rows)
        states = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=rows[0].device)
        ids = torch.full_like(mask, self.pad_token_id)
        continuation_mask = torch.zeros_like(mask)
        for i, (row, (prefix, continuation)) in enumerate(zip(rows, index)):
            states[i, : len(row)] = row
            ids[i, : len(row)] = torch.tensor(prefix + continuation, dtype=torch.long)
            mask[i, : len(row)] = 1
            continuation_mask[i, len(prefix) : len(row)] = 1
        return CachedPairBatch(
            states=states,
            ids=ids,
            mask=mask,
            continuation_mask=continuation_mask,
            chosen_index=torch.tensor(chosen, device=mask.device),
            rejected_index=torch.tensor(rejected, device=mask.device),
            margin=torch.tensor([p.margin for p in pairs], dtype=torch.float32, device=mask.device),
        )


def top_block_scores(
    model: nn.Module, first_trainable: int, batch: CachedPairBatch, pooling: str = "last"
) -> torch.Tensor:
    """The score ``(S,)`` of every sequence of a cached batch: blocks ``first_trainable..`` and the final norm on the
    cached states, the score head on the pooled hidden states (:func:`pool_hidden`)."""
    backbone = model.base_model
    head = next(model.score.parameters())
    states, mask = batch.states.to(head.device, head.dtype), batch.mask.to(head.device)
    with blocks_cut_to(backbone, first_trainable, len(transformer_blocks(backbone))):
        hidden = backbone(
            inputs_embeds=states,
            attention_mask=mask,
            position_ids=position_ids(mask),
            use_cache=False,
        ).last_hidden_state
    pooled = pool_hidden(hidden, mask, batch.continuation_mask.to(mask.device), pooling)
    return model.score(pooled).squeeze(-1).float()


def cache_is_exact(
    scorer: PairScorer, cache: FrozenTrunkCache, pairs: Sequence[EncodedPair], tolerance: float = 1e-4
) -> bool:
    """Whether the cached path scores ``pairs`` as the full forward does (eval mode, no gradients), to
    ``tolerance`` relative to the largest score."""
    model = scorer.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            full_batch = collate_pairs(list(pairs), cache.pad_token_id).to(device)
            full = scorer.sequence_scores(full_batch)
            cached_batch = cache.collate(pairs)
            cached = top_block_scores(model, cache.first_trainable, cached_batch, scorer.pooling)
            cached = scorer.with_token_scores(cached, cached_batch.ids, cached_batch.continuation_mask)
    finally:
        model.train(was_training)
    full = torch.cat([full[full_batch.chosen_index], full[full_batch.rejected_index]])
    cached = torch.cat([cached[cached_batch.chosen_index], cached[cached_batch.rejected_index]])
    return float((full - cached).abs().max()) <= tolerance * (1.0 + float(full.abs().max()))


class CachedPairScorer(PairScorer):
    """A :class:`PairScorer` that also scores :class:`CachedPairBatch` batches (the top blocks only). One module,
    so that under DDP every forward goes through the wrapper and gradients are synced."""

    def __init__(
        self,
        model: nn.Module,
        first_trainable: int,
        share_prompt_forward: bool = True,
        pooling: str = "last",
        token_scores: TokenScores | None = None,
    ) -> None:
        super().__init__(model, share_prompt_forward=share_prompt_forward, pooling=pooling, token_scores=token_scores)
        self.first_trainable = first_trainable

    def forward(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, CachedPairBatch):
            return super().forward(batch)
        scores = top_block_scores(self.model, self.first_trainable, batch, self.pooling)
        scores = self.with_token_scores(scores, batch.ids, batch.continuation_mask)
        return scores[batch.chosen_index.to(scores.device)], scores[batch.rejected_index.to(scores.device)]
