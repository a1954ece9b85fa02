"""An RLlib ``RLModule`` (new API stack) for textenv's token observations: the network ``make_sb3`` gives SB3's
PPO, for RLlib's PPO.

RLlib's default modules take a flat ``Box`` of floats; a textenv observation is ``Dict(input_ids,
attention_mask)`` of int64 token ids, which a float MLP cannot read (token id 17 is not "close to" 18).
:class:`TokenRLModule` embeds the ids and pools them over the attention mask, as
:class:`agents.sb3.TokenFeaturesExtractor` does with its defaults (the same functions,
:mod:`agents.modeling.token_pooling`):

* a token embedding table of ``embed_dim`` (the vocabulary is read off the observation space);
* with ``max_prompt_tokens``: the masked means of the prompt and of the completion slots, and the completion's
  filled fraction (``2 * embed_dim + 1`` features); without it: one masked mean over all valid tokens;
* a policy head and a value head on those shared features, each one ``hidden``-unit ``tanh`` layer (SB3's
  ``net_arch=dict(pi=[128], vf=[128])``), with SB3's orthogonal initialisation (gain 0.01 on the logits, so the
  first policy is close to uniform over the vocabulary).

It outputs the logits of RLlib's default ``TorchCategorical`` over ``Discrete(vocab)`` and implements
``ValueFunctionAPI`` for PPO's value loss and GAE.

``model_config`` keys (all optional): ``embed_dim`` (64), ``hidden`` (128), ``max_prompt_tokens`` (``None``);
other keys (RLlib merges its algorithm's defaults, such as PPO's ``vf_share_layers``, into every module's config)
are not read.
:func:`agents.rllib.token_model_config` reads ``max_prompt_tokens`` from the env.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from agents.modeling.token_pooling import TokenEmbedding, masked_mean, pool_prompt_and_completion, pooled_width

#: ``model_config`` defaults: SB3's ``make_sb3`` features (``embed_dim=64``) and heads (one 128-unit layer each)
DEFAULT_MODEL_CONFIG: dict[str, Any] = {"embed_dim": 64, "hidden": 128, "max_prompt_tokens": None}


class TokenRLModule(TorchRLModule, ValueFunctionAPI):
    """Token-embedding policy and value network for textenv's ``Dict(input_ids, attention_mask)`` observation and
    ``Discrete(vocab)`` action (see the module docstring)."""

    def setup(self) -> None:
        config = {**DEFAULT_MODEL_CONFIG, **(self.model_config or {})}
        space = self.observation_space
        if not isinstance(space, gym.spaces.Dict) or {"input_ids", "attention_mask"} - set(space.spaces):
            raise ValueError(f"TokenRLModule needs textenv's Dict(input_ids, attention_mask) observation, got {space}")
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise ValueError(f"TokenRLModule needs a Discrete action space (one token id), got {self.action_space}")
        seq_len = int(space["input_ids"].shape[-1])
        max_prompt_tokens = config["max_prompt_tokens"]
        if max_prompt_tokens is not None and not 0 < max_prompt_tokens < seq_len:
            raise ValueError(f"max_prompt_tokens={max_prompt_tokens!r}; expected an int in [1, {seq_len})")
        embed_dim, hidden = int(config["embed_dim"]), int(config["hidden"])
        vocab_size = int(np.max(space["input_ids"].high)) + 1

        self.max_prompt_tokens = max_prompt_tokens
        self.embed = TokenEmbedding(vocab_size, embed_dim)
        width = embed_dim if max_prompt_tokens is None else pooled_width(embed_dim)
        self.pi = _head(width, hidden, int(self.action_space.n), gain=0.01)
        self.vf = _head(width, hidden, 1, gain=1.0)

    def _features(self, batch: dict[str, Any]) -> torch.Tensor:
        obs = batch[Columns.OBS]
        ids, mask = obs["input_ids"].long(), obs["attention_mask"].bool()
        embedded = self.embed(ids)
        if self.max_prompt_tokens is None:
            return masked_mean(embedded, mask)
        return pool_prompt_and_completion(embedded, mask, self.max_prompt_tokens)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(self._features(batch))}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features = self._features(batch)
        # the features go along as EMBEDDINGS, so PPO's value loss does not pool the batch a second time
        return {Columns.ACTION_DIST_INPUTS: self.pi(features), Columns.EMBEDDINGS: features}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        features = self._features(batch) if embeddings is None else embeddings
        return self.vf(features).squeeze(-1)


def _head(width: int, hidden: int, out: int, gain: float) -> nn.Sequential:
    """``Linear -> tanh -> Linear`` with SB3's ``ortho_init``: gain sqrt(2) on the hidden layer, ``gain`` on the
    output, zero biases."""
    head = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, out))
    for layer, layer_gain in ((head[0], math.sqrt(2)), (head[2], gain)):
        nn.init.orthogonal_(layer.weight, gain=layer_gain)
        nn.init.zeros_(layer.bias)
    return head
