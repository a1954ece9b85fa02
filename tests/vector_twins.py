"""Test helper: step a native vector env and a ``SyncVectorEnv`` of single envs side by side, asserting that every
observation, reward, flag and info entry is the same."""

from __future__ import annotations

from typing import Any

import numpy as np


def assert_same(left: Any, right: Any, where: str = "info") -> None:
    """Equal infos: the same keys (nested dicts too), equal arrays (object arrays element by element)."""
    if isinstance(left, dict) or isinstance(right, dict):
        assert isinstance(left, dict) and isinstance(right, dict) and left.keys() == right.keys(), where
        for key in left:
            assert_same(left[key], right[key], f"{where}[{key!r}]")
    elif isinstance(left, np.ndarray) and left.dtype == object:
        assert list(left) == list(right), where
    else:
        assert np.array_equal(left, right), where


def run_twins(vector: Any, sync: Any, seed: int, actions: Any, steps: int) -> int:
    """Reset both with ``seed`` and take ``steps`` steps of ``actions()`` in both; the episodes that ended."""
    obs_v, info_v = vector.reset(seed=seed)
    obs_s, info_s = sync.reset(seed=seed)
    ended = 0
    for _ in range(steps):
        assert_same(obs_v, obs_s, "obs")
        assert_same(info_v, info_s)
        batch = actions()
        obs_v, rew_v, term_v, trunc_v, info_v = vector.step(batch)
        obs_s, rew_s, term_s, trunc_s, info_s = sync.step(batch)
        assert np.array_equal(rew_v, rew_s) and np.array_equal(term_v, term_s) and np.array_equal(trunc_v, trunc_s)
        ended += int((term_v | trunc_v).sum())
    return ended
