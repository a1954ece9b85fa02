"""The reference-LM wrappers for an SB3 ``VecEnv``: one batched reference-LM call per step for all envs.

:class:`TopKVecEnvWrapper` and :class:`NucleusMaskVecEnvWrapper` do what
:class:`agents.sb3.wrappers.TopKActionWrapper` and :class:`agents.sb3.wrappers.NucleusMaskWrapper` do, for
every env of a ``VecEnv`` at once (a ``DummyVecEnv`` of textenv envs, or the native vector env through
its SB3 adapter). They keep one batched KV cache: every step feeds the ``n_envs`` chosen tokens in one
incremental forward. SB3 VecEnvs reset an ended env inside ``step``: the ended rows'
``terminal_observation`` get their candidates from that forward, and only their new prompts are prefilled
(one batched forward) and spliced into the cache (:meth:`agents.sb3.reference_lm.ReferenceLM.replace_rows`).

MaskablePPO asks a ``VecEnv`` for masks with ``env_method("action_masks")``; these wrappers answer that
call themselves.

:class:`FlattenTokenVecObservation` is :class:`agents.sb3.wrappers.FlattenTokenObservation` for a ``VecEnv``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from agents.sb3.reference_lm import ReferenceLM, nucleus_mask, top_k_candidates
from agents.sb3.wrappers import (
    DEFAULT_REFERENCE_LM,
    candidate_space,
    check_k,
    check_top_p,
    flat_token_space,
    flatten_tokens,
)


class _ReferenceLMVecEnvWrapper(VecEnvWrapper):
    def __init__(self, venv: VecEnv, reference_lm: Any, **spaces_kw: Any) -> None:
        space = venv.observation_space
        if not isinstance(space, spaces.Dict) or "input_ids" not in space.spaces:
            raise TypeError(f"{type(self).__name__} wraps textenv envs (Dict observations), got {space}")
        self.allowed = np.asarray(venv.env_method("action_masks", indices=[0])[0], dtype=bool)
        self.reference = ReferenceLM(reference_lm, vocab_size=self.allowed.size, allowed=self.allowed)
        self._logits: Any = None
        self._tokens = np.zeros(venv.num_envs, dtype=np.int64)
        super().__init__(venv, **spaces_kw)

    def reset(self) -> Any:
        obs = self.venv.reset()
        self._logits = self.reference.prefill(obs["input_ids"], obs["attention_mask"])
        return self._after(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._tokens = self._to_tokens(np.asarray(actions).reshape(self.num_envs))
        self.venv.step_async(self._tokens)

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        # Every row's context now ends with the token just written: for an ended row that is its final context.
        logits = self.reference.advance(self._tokens)
        ended = np.flatnonzero(dones)
        if ended.size:
            self._on_episode_end(ended, logits, infos)
            if self.reference.can_replace_rows:  # prefill only the new prompts; other rows keep their cache
                fresh = self.reference.replace_rows(ended, obs["input_ids"][ended], obs["attention_mask"][ended])
                logits[torch.as_tensor(ended, device=logits.device)] = fresh
            else:
                logits = self.reference.prefill(obs["input_ids"], obs["attention_mask"])
        self._logits = logits
        return self._after(obs), rewards, dones, infos

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        if method_name == "action_masks":
            masks = self.action_masks()
            return [masks[i] for i in self._get_indices(indices)]
        return self.venv.env_method(method_name, *args, indices=indices, **kwargs)

    def has_attr(self, attr_name: str) -> bool:
        return attr_name == "action_masks" or self.venv.has_attr(attr_name)

    def action_masks(self) -> np.ndarray:
        raise NotImplementedError

    def _to_tokens(self, actions: np.ndarray) -> np.ndarray:
        return actions.astype(np.int64)

    def _after(self, obs: dict[str, np.ndarray]) -> Any:
        return obs

    def _on_episode_end(self, rows: np.ndarray, final_logits: torch.Tensor, infos: list[dict]) -> None:
        pass


class TopKVecEnvWrapper(_ReferenceLMVecEnvWrapper):
    """``Discrete(vocab)`` -> ``Discrete(k)`` for every env of a ``VecEnv`` (see
    :class:`agents.sb3.wrappers.TopKActionWrapper` for the arguments and the observation)."""

    def __init__(self, venv: VecEnv, reference_lm: Any = DEFAULT_REFERENCE_LM, k: int = 8, top_p: float | None = None):
        allowed = np.asarray(venv.env_method("action_masks", indices=[0])[0], dtype=bool)
        self.k = check_k(k, allowed)
        self.top_p = check_top_p(top_p)
        self.candidates = np.zeros((venv.num_envs, self.k), dtype=np.int64)
        super().__init__(
            venv,
            reference_lm,
            observation_space=candidate_space(venv.observation_space, self.k),
            action_space=spaces.Discrete(self.k),
        )

    def action_masks(self) -> np.ndarray:
        if self.top_p is None:
            return np.ones((self.num_envs, self.k), dtype=bool)
        return nucleus_mask(self._logits, self.top_p, among=self.candidates)

    def _to_tokens(self, actions: np.ndarray) -> np.ndarray:
        if not np.issubdtype(actions.dtype, np.integer) or ((actions < 0) | (actions >= self.k)).any():
            raise ValueError(f"actions must be ints in [0, {self.k}), got {actions!r}")
        return self.candidates[np.arange(self.num_envs), actions]

    def _after(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.candidates = top_k_candidates(self._logits, self.k)
        return {**obs, "candidate_ids": self.candidates.copy()}

    def _on_episode_end(self, rows: np.ndarray, final_logits: torch.Tensor, infos: list[dict]) -> None:
        """Give each ended row's ``terminal_observation`` (used to bootstrap truncated episodes) its candidates."""
        for row, candidates in zip(rows, top_k_candidates(final_logits[torch.as_tensor(rows)], self.k)):
            infos[row]["terminal_observation"]["candidate_ids"] = candidates


class NucleusMaskVecEnvWrapper(_ReferenceLMVecEnvWrapper):
    """Top-p nucleus action masks for every env of a ``VecEnv`` (see
    :class:`agents.sb3.wrappers.NucleusMaskWrapper`)."""

    def __init__(self, venv: VecEnv, reference_lm: Any = DEFAULT_REFERENCE_LM, top_p: float = 0.9) -> None:
        self.top_p = check_top_p(top_p, allow_none=False)
        super().__init__(venv, reference_lm)

    def action_masks(self) -> np.ndarray:
        return nucleus_mask(self._logits, self.top_p) & self.allowed


class FlattenTokenVecObservation(VecEnvWrapper):
    """Every env's ``Dict`` observation as one flat int64 ``Box`` (also each ``terminal_observation``), with
    ``token_layout`` for :class:`agents.sb3.features.TokenFeaturesExtractor`; see
    :class:`agents.sb3.wrappers.FlattenTokenObservation`."""

    def __init__(self, venv: VecEnv) -> None:
        self.keys, self.token_layout, space = flat_token_space(venv.observation_space, "FlattenTokenVecObservation")
        super().__init__(venv, observation_space=space)

    def reset(self) -> np.ndarray:
        return flatten_tokens(self.venv.reset(), self.keys)

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = flatten_tokens(info["terminal_observation"], self.keys)
        return flatten_tokens(obs, self.keys), rewards, dones, infos
