"""textenv ids as RLlib environments: :func:`register_textenv` puts an env creator for a textenv id into Ray Tune's
registry, under the id itself, so ``PPOConfig().environment("MossWords-v0")`` builds the env on every EnvRunner.

Why a creator: an EnvRunner is a separate process (on a cluster, another machine). RLlib builds its env there with
``gym.make(id)``, and a bare textenv id is only in Gymnasium's registry after ``import textenv``, which that
process never does. The creator registered here lives in this module, so a worker that unpickles it imports
:mod:`agents.rllib.env`, hence :mod:`textenv`, and nothing else; which id it builds is the caller's code, never
something read from a file.

The creator returns textenv's batched vector env (one numpy step and one reward call for all of an EnvRunner's
envs) when RLlib asks for ``num_envs`` envs at once (``gym_env_vectorize_mode="vector_entry_point"``, what
:func:`agents.rllib.textenv_ppo_config` sets), and a single env otherwise (RLlib's ``"sync"`` / ``"async"``
modes vectorise those themselves).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import gymnasium as gym

import textenv


def make_textenv(env_id: str, env_config: Mapping[str, Any]) -> gym.Env | gym.vector.VectorEnv:
    """Build ``env_id`` with the keyword arguments ``env_config`` (RLlib's ``EnvContext``, a dict).

    With a ``num_envs`` entry (RLlib's ``vector_entry_point`` mode) it returns textenv's
    :class:`~textenv.vector_env.TextGenerationVectorEnv` of that many rows (``NEXT_STEP`` autoreset, as RLlib's
    own vectorisation), else one :class:`~textenv.env.TextGenerationEnv`.
    """
    kwargs = dict(env_config)
    num_envs = kwargs.pop("num_envs", None)
    if num_envs is None:
        return gym.make(env_id, **kwargs)
    return gym.make_vec(env_id, num_envs=int(num_envs), vectorization_mode="vector_entry_point", **kwargs)


def register_textenv(env_id: str) -> str:
    """Register ``env_id`` (a textenv id, e.g. ``"MossWords-v0"``) with RLlib under the same name, and return it.

    Raises ``ValueError`` naming the known ids when ``env_id`` is not one of them.
    """
    from ray.tune.registry import register_env

    if env_id not in textenv.ENV_IDS:
        raise ValueError(f"env_id={env_id!r} is not a textenv id; expected one of {sorted(textenv.ENV_IDS)}")
    register_env(env_id, functools.partial(make_textenv, env_id))
    return env_id
