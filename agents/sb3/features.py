"""A stable-baselines3 features extractor for textenv's token observations.

SB3 hands every ``Box`` observation to the policy as ``float32``. :class:`TokenFeaturesExtractor` casts the
token ids back to integers, embeds them, and pools over the attention mask, so padding never changes the
features. It accepts

* textenv's ``Dict(input_ids, attention_mask)`` observation (``MultiInputPolicy``), optionally with the
  ``candidate_ids`` key that :class:`agents.sb3.wrappers.TopKActionWrapper` adds, and
* the flat ``Box`` that :class:`agents.sb3.wrappers.FlattenTokenObservation` makes of it (``MlpPolicy``);
  pass that wrapper's ``token_layout`` as ``layout`` (:func:`agents.make_sb3` does it for you).

Pooling (``pooling=``):

* ``"mean"`` -- masked mean of the token embeddings. With ``max_prompt_tokens`` given, the prompt slots and
  the completion slots are pooled separately and concatenated with the completion's fill fraction, so the
  policy sees *what was asked*, *what it wrote so far* and *how far it is*.
* ``"gru"`` -- a one-layer GRU over the valid tokens only (packed), last hidden state.
* ``"transformer"`` -- a small ``nn.TransformerEncoder`` with a key-padding mask and positions counted from
  the first valid token (left padding does not shift them), then a masked mean.

Candidate tokens (``candidate_ids``, shape ``(k,)``) are embedded with the same table and appended in rank
order, so an MLP head can score "the i-th candidate" by what the token is. With ``candidate_scores=m`` a small
MLP shared by all candidates also scores each one against the context (``m`` numbers per candidate, appended):
what makes a candidate good is then learned once, not once per rank.

``embedding_init`` (a causal LM, or its built-in name / directory) initialises the table from the LM's input
embeddings (projected to ``embed_dim`` by a learned linear layer when the sizes differ);
``freeze_embeddings`` keeps them fixed.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from agents.modeling.decoding import position_ids
from agents.modeling.token_pooling import TokenEmbedding, masked_mean, pool_prompt_and_completion, pooled_width

POOLINGS = ("mean", "gru", "transformer")
TOKEN_KEYS = ("input_ids", "attention_mask", "candidate_ids")


class TokenFeaturesExtractor(BaseFeaturesExtractor):
    """Embed token ids and pool them over the attention mask (see the module docstring).

    Args:
        observation_space: textenv's ``Dict`` observation space, or a flat ``Box`` with ``layout``.
        embed_dim: width of the token embeddings (and of the pooled context).
        pooling: ``"mean"``, ``"gru"`` or ``"transformer"``.
        max_prompt_tokens: the env's prompt slots; with ``pooling="mean"`` it pools prompt and completion
            separately (default: one pool over every valid token).
        num_layers: transformer layers (``pooling="transformer"``).
        num_heads: transformer attention heads; must divide ``embed_dim``.
        embedding_init: a causal LM (``transformers`` model) or a name for
            :func:`textenv.models.load_causal_lm` whose input embeddings initialise the table.
        freeze_embeddings: do not train the embedding table (only with ``embedding_init``).
        layout: for a flat ``Box``: ``{key: length}`` in the order the keys were concatenated.
        candidate_scores: with ``candidate_ids`` in the observation, append ``candidate_scores`` numbers per
            candidate from an MLP shared by all candidates (0: off).
    """

    def __init__(
        self,
        observation_space: gym.Space,
        embed_dim: int = 64,
        pooling: str = "mean",
        max_prompt_tokens: int | None = None,
        num_layers: int = 1,
        num_heads: int = 4,
        embedding_init: Any = None,
        freeze_embeddings: bool = False,
        layout: dict[str, int] | None = None,
        candidate_scores: int = 0,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of {POOLINGS}")
        if not isinstance(embed_dim, int) or embed_dim <= 0:
            raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
        self.layout = _token_layout(observation_space, layout)
        seq_len = self.layout["input_ids"]
        self.num_candidates = self.layout.get("candidate_ids", 0)
        vocab_size = _vocab_size(observation_space, self.layout)
        if max_prompt_tokens is not None and not 0 < max_prompt_tokens < seq_len:
            raise ValueError(f"max_prompt_tokens={max_prompt_tokens!r}; expected an int in [1, {seq_len})")
        split_segments = pooling == "mean" and max_prompt_tokens is not None
        context_dim = pooled_width(embed_dim) if split_segments else embed_dim
        if not isinstance(candidate_scores, int) or candidate_scores < 0:
            raise ValueError(f"candidate_scores must be an int >= 0, got {candidate_scores!r}")
        self.candidate_scores = candidate_scores if self.num_candidates else 0
        candidate_dim = self.num_candidates * (embed_dim + self.candidate_scores)
        super().__init__(observation_space, features_dim=context_dim + candidate_dim)

        self.pooling = pooling
        self.max_prompt_tokens = max_prompt_tokens if split_segments else None
        self.embed = TokenEmbedding(vocab_size, embed_dim, embedding_init, freeze_embeddings)
        if pooling == "gru":
            self.gru = nn.GRU(embed_dim, embed_dim, batch_first=True)
        elif pooling == "transformer":
            if embed_dim % num_heads:
                raise ValueError(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
            self.positions = nn.Embedding(seq_len, embed_dim)
            layer = nn.TransformerEncoderLayer(
                embed_dim, num_heads, dim_feedforward=2 * embed_dim, dropout=0.0, batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        if self.candidate_scores:
            self.scorer = nn.Sequential(
                nn.Linear(context_dim + embed_dim, 64), nn.ReLU(), nn.Linear(64, self.candidate_scores)
            )

    def forward(self, observations: Any) -> torch.Tensor:
        parts = self._split(observations)
        ids = parts["input_ids"].round().long()
        mask = parts["attention_mask"].round().bool()
        context = getattr(self, f"_pool_{self.pooling}")(ids, mask)
        if not self.num_candidates:
            return context
        candidates = self.embed(parts["candidate_ids"].round().long())
        features = [context, candidates.flatten(1)]
        if self.candidate_scores:
            paired = torch.cat([context.unsqueeze(1).expand(-1, candidates.shape[1], -1), candidates], dim=2)
            features.append(self.scorer(paired).flatten(1))
        return torch.cat(features, dim=1)

    # -- pooling ------------------------------------------------------------------------------------------
    def _pool_mean(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        embedded = self.embed(ids)
        if self.max_prompt_tokens is None:
            return masked_mean(embedded, mask)
        return pool_prompt_and_completion(embedded, mask, self.max_prompt_tokens)

    def _pool_gru(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Move each row's valid tokens to the front (stable, so their order is kept) and pack them: the GRU
        # never reads a padding slot. A row without valid tokens reads one slot and is zeroed afterwards.
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        packed_ids = torch.gather(ids, 1, order)
        lengths = mask.sum(dim=1)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(packed_ids), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        _, hidden = self.gru(packed)
        return hidden[-1] * (lengths > 0).unsqueeze(1)

    def _pool_transformer(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(ids) + self.positions(position_ids(mask))
        # A row without any valid token would make attention softmax over nothing (NaN): let it attend to
        # slot 0; the masked mean below zeroes that row anyway.
        key_padding = ~mask
        key_padding[:, 0] &= mask.any(dim=1)
        hidden = self.encoder(hidden, src_key_padding_mask=key_padding)
        return masked_mean(hidden, mask)

    # -- observation layout -------------------------------------------------------------------------------
    def _split(self, observations: Any) -> dict[str, torch.Tensor]:
        if isinstance(observations, dict):
            return observations
        parts, start = {}, 0
        for key, length in self.layout.items():
            parts[key] = observations[:, start : start + length]
            start += length
        return parts


def _token_layout(space: gym.Space, layout: dict[str, int] | None) -> dict[str, int]:
    if isinstance(space, gym.spaces.Dict):
        missing = [key for key in TOKEN_KEYS[:2] if key not in space.spaces]
        unknown = [key for key in space.spaces if key not in TOKEN_KEYS]
        if missing or unknown:
            raise ValueError(
                f"observation space keys {list(space.spaces)}: expected 'input_ids' and 'attention_mask' "
                f"(and optionally 'candidate_ids'); missing {missing}, unknown {unknown}"
            )
        return {key: int(np.prod(space[key].shape)) for key in TOKEN_KEYS if key in space.spaces}
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        if layout is None:
            raise ValueError(
                "a flat Box observation needs layout={key: length} (FlattenTokenObservation.token_layout); "
                "agents.make_sb3 passes it for you"
            )
        if list(layout)[:2] != list(TOKEN_KEYS[:2]) or sum(layout.values()) != space.shape[0]:
            raise ValueError(
                f"layout={layout!r} does not describe a Box of shape {space.shape}: expected input_ids, "
                f"attention_mask[, candidate_ids] lengths summing to {space.shape[0]}"
            )
        return dict(layout)
    raise TypeError(f"TokenFeaturesExtractor needs textenv's Dict observation space or a flat Box, got {space}")


def _vocab_size(space: gym.Space, layout: dict[str, int]) -> int:
    if isinstance(space, gym.spaces.Dict):
        high = max(int(np.max(space[key].high)) for key in ("input_ids", "candidate_ids") if key in space.spaces)
    else:
        high = int(np.max(space.high))
    return high + 1
