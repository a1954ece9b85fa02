"""Test helpers: every piece of an env's episode state, to check that a rejected or interrupted call changed none.

:func:`snapshot` reads the env's attributes generically (a new attribute is covered without touching this file),
with random generators as their bit-generator states, so ``np_random`` and the vector env's per-row generators
count as state too.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

# configuration and caches, not episode state
SKIP = {"task", "observation_space", "action_space", "single_observation_space", "single_action_space",
        "metadata", "render_mode", "autoreset_mode", "num_envs", "spec", "_frames", "_padded_prompts",
        "_row_starts", "closed"}


def _value(value: Any) -> Any:
    if isinstance(value, np.random.Generator):
        return ("Generator", copy.deepcopy(value.bit_generator.state))
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return [_value(item) for item in value]
    return copy.deepcopy(value)


def snapshot(env: Any) -> dict[str, Any]:
    """The episode state of a :class:`TextGenerationEnv` or :class:`TextGenerationVectorEnv` (unwrapped)."""
    env = env.unwrapped
    return {key: _value(value) for key, value in vars(env).items() if key not in SKIP}


def assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys(), f"attributes {sorted(before)} != {sorted(after)}"
    for key in before:
        assert_equal(before[key], after[key], key)


def assert_equal(a: Any, b: Any, where: str = "") -> None:
    """Deep equality for step results and states: dicts, lists, tuples, numpy arrays (object ones element-wise)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {a!r} != {b!r}"
        for key in a:
            assert_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype, f"{where}: {a!r} != {b!r}"
        if a.dtype == object:
            for i, (x, y) in enumerate(zip(a, b)):
                assert_equal(x, y, f"{where}[{i}]")
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"
