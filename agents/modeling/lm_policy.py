"""A causal LM acting in textenv environments: prefill the prompt once, then one token per step from a KV cache.

Works on a batch of observations (a vector env's, or a single env's with a batch of one): the observation's
left-padded prompt slots are exactly what the model prefills, and completion tokens are fed back one at a
time, so no step re-encodes the sequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.modeling.decoding import KVDecoder, filter_logits, sample_categorical


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
        self.decoder = KVDecoder(self.model)

    @torch.no_grad()
    def start(self, observation: dict[str, np.ndarray]) -> None:
        """Prefill the prompts of a batch of fresh observations (arrays of shape ``(B, L)`` or ``(L,)``)."""
        device = next(self.model.parameters()).device
        ids = torch.as_tensor(np.atleast_2d(observation["input_ids"])[:, : self.max_prompt_tokens], device=device)
        mask = torch.as_tensor(np.atleast_2d(observation["attention_mask"])[:, : self.max_prompt_tokens], device=device)
        self.decoder.prefill(ids, mask)

    @torch.no_grad()
    def act(self) -> np.ndarray:
        """Sample the next token for every sequence in the batch."""
        if self.decoder.logits is None:
            raise RuntimeError("call start(observation) before act()")
        if self.temperature == 0:
            return self.decoder.logits.argmax(-1).cpu().numpy()
        logits = filter_logits(self.decoder.logits, self.temperature, self.top_k, self.top_p)
        return sample_categorical(torch.log_softmax(logits, dim=-1), self.generator).cpu().numpy()

    @torch.no_grad()
    def observe(self, tokens: np.ndarray) -> None:
        """Feed the tokens just taken (shape ``(B,)``) so the next :meth:`act` conditions on them."""
        if self.decoder.attention_mask is None:
            raise RuntimeError("call start(observation) before observe()")
        device = self.decoder.attention_mask.device
        self.decoder.append(torch.as_tensor(np.atleast_1d(tokens), device=device).view(-1, 1))


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
