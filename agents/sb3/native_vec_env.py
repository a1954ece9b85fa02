"""Run stable-baselines3 agents on textenv's native vector environment.

SB3 has its own ``VecEnv`` API, older than Gymnasium's vector API: ``reset() -> obs``, ``step() -> (obs,
rewards, dones, infos)`` with one info dict per env, finished envs reset in the same step with the last
observation in ``info["terminal_observation"]``, and ``info["TimeLimit.truncated"]`` telling a truncation (bootstrap
the value) from a termination. :class:`SB3TextVecEnv` presents a
:class:`textenv.vector_env.TextGenerationVectorEnv` in ``SAME_STEP`` autoreset mode that way, so SB3 steps
``num_envs`` text episodes with one numpy write and scores them with one batched reward call, instead of
looping over ``num_envs`` Python envs as ``DummyVecEnv`` does::

    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor
    from agents.sb3.native_vec_env import make_sb3_vec_env

    venv = VecMonitor(make_sb3_vec_env("MossText-v0", num_envs=16, seed=0))
    PPO("MultiInputPolicy", venv).learn(10_000)

This is the vec env :func:`agents.sb3.make_sb3` trains on by default (``vec_env="native"``, see
:func:`agents.sb3.factory.make_sb3_env`); ``VecMonitor`` adds the ``info["episode"]`` statistics that SB3's
logger and the training-run curve read.

``MaskablePPO`` works too: sb3-contrib asks a ``VecEnv`` for ``env_method("action_masks")`` (one mask per
env), which returns the rows of the vector env's ``(num_envs, vocab_size)`` mask.

The rows share one Python object, so ``get_attr``/``env_method`` read or call the vector env once and give
every requested index the result (``action_masks`` is split per row); ``set_attr`` sets it for all rows.
``seed(s)`` and ``set_options`` take effect at the next ``reset()``, as in SB3.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from textenv.vector_env import TextGenerationVectorEnv

# methods whose result differs per row: the vector env returns one batch, split into rows here
PER_ROW_METHODS = ("action_masks",)
# per-row reset options (SB3 passes one dict per env) -> the vector env's batched reset option
ROW_OPTIONS = {"prompt_index": "prompt_index", "prompt": "prompts"}


class SB3TextVecEnv(VecEnv):
    """An SB3 ``VecEnv`` over a :class:`TextGenerationVectorEnv` in ``SAME_STEP`` autoreset mode.

    Args:
        venv: the vector env. Its ``autoreset_mode`` must be ``SAME_STEP`` (SB3 resets finished envs in the
            step they finish); :func:`make_sb3_vec_env` builds one for you.
    """

    def __init__(self, venv: TextGenerationVectorEnv) -> None:
        if not isinstance(venv, TextGenerationVectorEnv):
            raise TypeError(f"venv must be a textenv TextGenerationVectorEnv, got {type(venv).__name__}")
        if venv.autoreset_mode is not AutoresetMode.SAME_STEP:
            raise ValueError(
                f"venv.autoreset_mode is {venv.autoreset_mode}; SB3 needs AutoresetMode.SAME_STEP "
                "(make it with autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP, or use make_sb3_vec_env)"
            )
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # -- reset and step -----------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        seeds = None if all(seed is None for seed in self._seeds) else list(self._seeds)
        obs, infos = self.venv.reset(seed=seeds, options=self._batched_options())
        rows = list(range(self.num_envs))
        self.reset_infos = list(_row_infos(infos, rows).values())
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, infos = self.venv.step(actions)
        dones = terminated | truncated
        step_infos: list[dict[str, Any]] = [{"TimeLimit.truncated": t} for t in (truncated & ~terminated).tolist()]
        ended = np.flatnonzero(dones).tolist()
        if ended:
            finals = _row_infos(infos.get("final_info", {}), ended)
            # the new episodes' reset infos (SAME_STEP puts them at the top level)
            resets = _row_infos(infos, ended, skip=("final_obs", "final_info"))
            final_obs = infos["final_obs"]
            for row in ended:
                step_infos[row].update(finals[row])
                step_infos[row]["terminal_observation"] = final_obs[row]
                self.reset_infos[row] = resets[row]
        return obs, rewards.astype(np.float32), dones, step_infos

    def close(self) -> None:
        self.venv.close()

    # -- attributes and methods ---------------------------------------------------------------------------
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "observation_space":
            value: Any = self.venv.single_observation_space
        elif attr_name == "action_space":
            value = self.venv.single_action_space
        else:
            value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        rows = list(self._get_indices(indices))
        if sorted(rows) != list(range(self.num_envs)):
            raise ValueError(
                f"set_attr({attr_name!r}) for rows {rows}: the rows of a vector env share their attributes, "
                "so they can only be set for all rows (indices=None)"
            )
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        rows = list(self._get_indices(indices))
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        if method_name in PER_ROW_METHODS:
            return [result[row] for row in rows]
        return [result for _ in rows]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]  # the rows are not gym.Env objects: nothing wraps them

    def action_masks(self) -> np.ndarray:
        """``(num_envs, vocab_size)`` booleans (the vector env's :meth:`action_masks`)."""
        return self.venv.action_masks()

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, (int, np.integer)):
            indices = [int(indices)]
        rows = [int(i) for i in indices]
        bad = [i for i in rows if not 0 <= i < self.num_envs]
        if bad:
            raise IndexError(f"env indices {bad} out of range; expected indices in [0, {self.num_envs})")
        return rows

    def _batched_options(self) -> dict[str, Any] | None:
        """SB3's per-env option dicts as the vector env's per-row reset options."""
        if not any(self._options):
            return None
        keys = set().union(*(options.keys() for options in self._options))
        unknown = keys - set(ROW_OPTIONS)
        if unknown:
            raise ValueError(f"unsupported reset options {sorted(unknown)}; expected {sorted(ROW_OPTIONS)}")
        batched = {}
        for key in keys:
            missing = [row for row, options in enumerate(self._options) if key not in options]
            if missing:
                raise ValueError(
                    f"reset option {key!r} is set for some envs but not for {missing}: give it for every env "
                    "(set_options with a dict applies it to all)"
                )
            batched[ROW_OPTIONS[key]] = [options[key] for options in self._options]
        return batched


def make_sb3_vec_env(
    env_id: str = "MossText-v0", num_envs: int = 8, seed: int | None = None, **env_kwargs: Any
) -> SB3TextVecEnv:
    """``gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point", autoreset_mode=SAME_STEP)``
    wrapped for SB3; ``seed`` seeds row ``i`` with ``seed + i`` at the first ``reset()``."""
    venv = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.SAME_STEP,
        **env_kwargs,
    )
    sb3_env = SB3TextVecEnv(venv)
    if seed is not None:
        sb3_env.seed(seed)
    return sb3_env


def _row_infos(infos: dict[str, Any], rows: list[int], skip: tuple[str, ...] = ()) -> dict[int, dict[str, Any]]:
    """Rows ``rows`` of a Gymnasium vector info dict (``info[key]`` arrays with ``info["_key"]`` masks), each as
    one dict of Python values; a row gets a key only where its mask is set."""
    out: dict[int, dict[str, Any]] = {row: {} for row in rows}
    for key, value in infos.items():
        if key[0] == "_" or key in skip:
            continue
        mask = infos.get("_" + key)
        present = rows if mask is None else [row for row in rows if mask[row]]
        if not present:
            continue
        if isinstance(value, dict):
            for row, row_value in _row_infos(value, present).items():
                out[row][key] = row_value
        else:
            items = value.tolist()  # numpy scalars -> Python values; an object array's items as they are
            for row in present:
                out[row][key] = items[row]
    return out
