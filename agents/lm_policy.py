"""A causal LM acting in textenv environments: prefill the prompt once, then one token per step from a KV cache.

Works on a batch of observations (a vector env's, or a single env's with a batch of one): the observation's
left-padded prompt slots are exactly what the model prefills, and completion tokens are fed back one at a
time, so no step re-encodes the sequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from textenv.kv_cache import cache_kwargs, returned_cache


class CausalLMPolicy:
    """Samples tokens for textenv observations with a causal LM and its KV cache.

    Args:
        model: a transformers causal LM.
        max_prompt_tokens: the environment's prompt slots (``env.unwrapped.task.max_prompt_tokens``).
        temperature: sampling temperature; 0 means greedy.
        top_k: keep only the ``top_k`` most likely tokens (0 = all).
        top_p: nucleus sampling threshold (1.0 = off).
        seed: seed of the policy's own torch generator.
    """

    def __init__(
        self,
        model: Any,
        max_prompt_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> None:
        if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0, top_k >= 0, 0 < top_p <= 1; got {temperature}, {top_k}, {top_p}")
        self.model = model.eval()
        self.max_prompt_tokens = max_prompt_tokens
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        device = next(model.parameters()).device
        self.generator = torch.Generator(device=device)
        if seed is not None:
            self.generator.manual_seed(seed)
        self._cache: Any = None
        self._logits: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None

    @torch.no_grad()
    def start(self, observation: dict[str, np.ndarray]) -> None:
        """Prefill the prompts of a batch of fresh observations (arrays of shape ``(B, L)`` or ``(L,)``)."""
        device = next(self.model.parameters()).device
        ids = torch.as_tensor(np.atleast_2d(observation["input_ids"])[:, : self.max_prompt_tokens], device=device)
        mask = torch.as_tensor(np.atleast_2d(observation["attention_mask"])[:, : self.max_prompt_tokens], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        self._cache, self._mask, self._logits = returned_cache(out), mask, out.logits[:, -1]

    @torch.no_grad()
    def act(self) -> np.ndarray:
        """Sample the next token for every sequence in the batch."""
        if self._logits is None:
            raise RuntimeError("call start(observation) before act()")
        logits = self._logits.float()
        if self.temperature == 0:
            return logits.argmax(-1).cpu().numpy()
        logits = logits / self.temperature
        if self.top_k:
            kth = torch.topk(logits, min(self.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            drop = cumulative - sorted_logits.softmax(-1) >= self.top_p  # keep the smallest set reaching top_p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        probs = logits.softmax(-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1).cpu().numpy()

    @torch.no_grad()
    def observe(self, tokens: np.ndarray) -> None:
        """Feed the tokens just taken (shape ``(B,)``) so the next :meth:`act` conditions on them."""
        assert self._mask is not None
        device = self._mask.device
        tokens_t = torch.as_tensor(np.atleast_1d(tokens), device=device).view(-1, 1)
        self._mask = torch.cat([self._mask, torch.ones_like(tokens_t)], dim=-1)
        positions = self._mask.sum(-1, keepdim=True) - 1
        out = self.model(
            input_ids=tokens_t,
            attention_mask=self._mask,
            position_ids=positions,
            **cache_kwargs(self.model, self._cache),
            use_cache=True,
        )
        self._cache, self._logits = returned_cache(out), out.logits[:, -1]


def run_episode(env: Any, policy: CausalLMPolicy, seed: int | None = None) -> dict[str, Any]:
    """Play one episode of a single textenv env with ``policy``; return the last step's info and reward."""
    obs, _ = env.reset(seed=seed)
    policy.start(obs)
    while True:
        token = int(policy.act()[0])
        obs, reward, terminated, truncated, info = env.step(token)
        if terminated or truncated:
            return {**info, "reward": float(reward), "terminated": terminated, "truncated": truncated}
        policy.observe(np.array([token]))
