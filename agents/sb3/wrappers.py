"""Gymnasium wrappers that make textenv envs fit standard RL agents.

* :class:`TopKActionWrapper` -- ``Discrete(vocab)`` becomes ``Discrete(k)``: action ``i`` writes the ``i``-th
  most likely next token under a reference causal LM. The candidate ids are added to the observation
  (``candidate_ids``, most likely first) so the policy can see what each action means. With ``top_p`` it
  also provides ``action_masks()`` over the ``k`` actions (candidates outside the top-p nucleus masked).
* :class:`NucleusMaskWrapper` -- keeps ``Discrete(vocab)`` and provides ``action_masks()`` that allow only the
  reference LM's top-p nucleus (the NLPO idea), for sb3-contrib's ``MaskablePPO``.
* :class:`FlattenTokenObservation` -- the ``Dict`` observation as one flat int64 ``Box`` (``input_ids``,
  ``attention_mask``, then ``candidate_ids`` if present), for algorithm settings that cannot take a ``Dict``
  (see :data:`agents.sb3.factory.DICT_LIMITATIONS`).

The LM wrappers keep the reference LM's KV cache for the episode: the prompt is prefilled at ``reset`` and
each step feeds one token (:class:`agents.sb3.reference_lm.ReferenceLM`). The reference LM must use the
env's tokenizer. For many envs at once, :mod:`agents.sb3.vec_wrappers` does the same with one batched LM
call per step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agents.sb3.reference_lm import ReferenceLM, nucleus_mask, top_k_candidates

DEFAULT_REFERENCE_LM = "smollm2-135m-instruct"


def check_top_p(top_p: Any, allow_none: bool = True) -> float | None:
    if top_p is None and allow_none:
        return None
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r}; expected a float in (0, 1]")
    return float(top_p)


def check_k(k: Any, allowed: np.ndarray) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}; expected a positive int")
    if k > int(allowed.sum()):
        raise ValueError(f"k={k} is more than the {int(allowed.sum())} tokens the env allows")
    return int(k)


def env_allowed_tokens(env: Any) -> np.ndarray:
    """The env's own ``action_masks()`` (all tokens it accepts), read through any wrappers."""
    return np.asarray(env.unwrapped.action_masks(), dtype=bool)


def candidate_space(base: spaces.Dict, k: int) -> spaces.Dict:
    """``base`` plus ``candidate_ids``: ``Box(0, vocab-1, (k,), int64)``."""
    high = int(np.max(base["input_ids"].high))
    return spaces.Dict({**base.spaces, "candidate_ids": spaces.Box(0, high, shape=(k,), dtype=np.int64)})


def check_discrete_action(action: Any, n: int) -> int:
    if isinstance(action, np.ndarray) and action.size == 1:
        action = action.reshape(())
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer, np.ndarray)):
        raise TypeError(f"action must be an int in [0, {n}), got {type(action).__name__}: {action!r}")
    if isinstance(action, np.ndarray) and not np.issubdtype(action.dtype, np.integer):
        raise TypeError(f"action must be an int in [0, {n}), got {action!r}")
    if not 0 <= int(action) < n:
        raise ValueError(f"action {int(action)} is out of range; expected an int in [0, {n})")
    return int(action)


class _ReferenceLMWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Keeps a :class:`ReferenceLM`'s cache in step with one env's episode; subclasses use the logits."""

    def __init__(self, env: gym.Env, reference_lm: Any) -> None:
        super().__init__(env)
        if not isinstance(env.observation_space, spaces.Dict) or "input_ids" not in env.observation_space.spaces:
            raise TypeError(
                f"{type(self).__name__} wraps a textenv env (Dict observations), got {env.observation_space}"
            )
        self.allowed = env_allowed_tokens(env)
        self.reference = ReferenceLM(reference_lm, vocab_size=self.allowed.size, allowed=self.allowed)
        self._logits: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._logits = self.reference.prefill(obs["input_ids"], obs["attention_mask"])
        return self._after(obs), info

    def _step_token(self, token: int) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(token)
        self._logits = self.reference.advance(np.array([token]))
        return self._after(obs), reward, terminated, truncated, info

    def _after(self, obs: dict[str, np.ndarray]) -> Any:
        return obs


class TopKActionWrapper(_ReferenceLMWrapper):
    """Action ``i`` = the ``i``-th most likely next token under a reference causal LM.

    Args:
        env: a textenv env (``Dict`` observations, ``Discrete(vocab)`` actions).
        reference_lm: a ``transformers`` causal LM or a name for :func:`textenv.models.load_causal_lm`
            (loaded once per process and shared by every wrapper that names it). It must use the env's
            tokenizer.
        k: number of actions (candidates). Must not exceed the tokens the env allows.
        top_p: if set, :meth:`action_masks` masks the candidates outside the reference LM's top-p nucleus
            (the most likely candidate is never masked).

    Observations gain ``candidate_ids`` (``(k,)`` int64, most likely first). The last step's ``info`` is the
    env's, and every step's ``info`` holds the written ``token_id``.
    """

    def __init__(self, env: gym.Env, reference_lm: Any = DEFAULT_REFERENCE_LM, k: int = 8, top_p: float | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, reference_lm=reference_lm, k=k, top_p=top_p)
        super().__init__(env, reference_lm)
        self.k = check_k(k, self.allowed)
        self.top_p = check_top_p(top_p)
        self.observation_space = candidate_space(env.observation_space, self.k)
        self.action_space = spaces.Discrete(self.k)
        self.candidates = np.zeros(self.k, dtype=np.int64)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        token = int(self.candidates[check_discrete_action(action, self.k)])
        obs, reward, terminated, truncated, info = self._step_token(token)
        return obs, reward, terminated, truncated, {**info, "token_id": token}

    def action_masks(self) -> np.ndarray:
        """``(k,)`` booleans: all True without ``top_p``, else which candidates are in the nucleus."""
        if self.top_p is None:
            return np.ones(self.k, dtype=bool)
        return nucleus_mask(self._logits, self.top_p, among=self.candidates[None])[0]

    def _after(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.candidates = top_k_candidates(self._logits, self.k)[0]
        return {**obs, "candidate_ids": self.candidates.copy()}


class NucleusMaskWrapper(_ReferenceLMWrapper):
    """``action_masks()`` allows only the reference LM's top-p nucleus of next tokens (NLPO-style masking).

    Args:
        env: a textenv env.
        reference_lm: a causal LM or its name (see :class:`TopKActionWrapper`); it must use the env's tokenizer.
        top_p: nucleus mass in ``(0, 1]``; the most likely allowed token is always unmasked.

    Observations and actions are the env's; tokens the env itself disallows stay masked.
    """

    def __init__(self, env: gym.Env, reference_lm: Any = DEFAULT_REFERENCE_LM, top_p: float = 0.9) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, reference_lm=reference_lm, top_p=top_p)
        super().__init__(env, reference_lm)
        self.top_p = check_top_p(top_p, allow_none=False)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self._step_token(self.unwrapped.task.check_action(action))

    def action_masks(self) -> np.ndarray:
        """``(vocab,)`` booleans: the current nucleus (within the env's allowed tokens)."""
        return nucleus_mask(self._logits, self.top_p)[0] & self.allowed


FLAT_KEYS = ("input_ids", "attention_mask", "candidate_ids")


def flat_token_space(space: spaces.Space, wrapper: str) -> tuple[list[str], dict[str, int], spaces.Box]:
    """The keys, ``token_layout`` and flat ``Box`` of a textenv ``Dict`` observation space (one env's)."""
    if not isinstance(space, spaces.Dict) or not {"input_ids", "attention_mask"} <= set(space.spaces):
        raise TypeError(f"{wrapper} wraps textenv envs (Dict observations), got {space}")
    keys = [key for key in FLAT_KEYS if key in space.spaces]
    layout = {key: int(space[key].shape[0]) for key in keys}
    low = np.concatenate([space[key].low for key in keys]).astype(np.int64)
    high = np.concatenate([space[key].high for key in keys]).astype(np.int64)
    return keys, layout, spaces.Box(low, high, dtype=np.int64)


def flatten_tokens(observation: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """One observation ``(L,)`` or a batch ``(n, L)`` of them, concatenated along the last axis as int64."""
    return np.concatenate([observation[key] for key in keys], axis=-1).astype(np.int64, copy=False)


class FlattenTokenObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """textenv's ``Dict`` observation as one flat int64 ``Box``: ``input_ids``, ``attention_mask``, then
    ``candidate_ids`` if present. ``token_layout`` (``{key: length}``) tells
    :class:`agents.sb3.features.TokenFeaturesExtractor` how to split it. The same for a whole SB3 ``VecEnv``:
    :class:`agents.sb3.vec_wrappers.FlattenTokenVecObservation`.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        self.keys, self.token_layout, self.observation_space = flat_token_space(
            env.observation_space, "FlattenTokenObservation"
        )

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return flatten_tokens(observation, self.keys)
