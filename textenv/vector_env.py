"""The native vector environment: N text-generation episodes in one preallocated buffer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textenv.task import TextTask

SUPPORTED_AUTORESET_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED)


class TextGenerationVectorEnv(VectorEnv):
    """
    ## Description

    ``num_envs`` copies of :class:`textenv.env.TextGenerationEnv` run as one: a single ``(num_envs, L)`` token
    buffer and attention mask, each step's ``num_envs`` tokens written in place with one numpy assignment,
    and every episode that ends in a step scored by ONE batched reward-plugin call. It is the
    ``vector_entry_point`` of every textenv id::

        gym.make_vec("MossText-v0", num_envs=64, vectorization_mode="vector_entry_point")

    Observations, rewards, flags and infos equal those of ``SyncVectorEnv`` over ``num_envs`` single envs
    seeded alike (row ``i`` of ``reset(seed=s)`` draws its prompts like a single env reset with ``s + i``).

    ## Action Space

    ``MultiDiscrete([vocab_size] * num_envs)``: one token id per row. :meth:`action_masks` returns a
    ``(num_envs, vocab_size)`` boolean array.

    ## Observation Space

    The single env's ``Dict(input_ids, attention_mask)`` batched to shape ``(num_envs, L)``: prompts
    left-padded into the first ``max_prompt_tokens`` columns, completions after them (see
    :mod:`textenv.task`). Every returned observation is a fresh copy of the buffer (one ``memcpy`` of
    ``num_envs * L * 16`` bytes), never a view: an agent that keeps observations must not see them change.

    ## Rewards

    As the single env: 0 except on a row's last step, where the reward plugin scores it.

    ## Episode End

    Per row as in the single env: EOS terminates, ``max_new_tokens`` truncates. What happens next depends on
    ``autoreset_mode`` (``metadata["autoreset_mode"]``):

    * ``NEXT_STEP`` (default, Gymnasium's default): the step after a row ended resets it, ignoring that
      row's action, with reward 0 and both flags False; the reset info is that row's step info.
    * ``SAME_STEP``: an ended row is reset in the same step; its last observation and info are in
      ``info["final_obs"]`` and ``info["final_info"]``.
    * ``DISABLED``: nothing resets by itself. A row whose episode ended ignores further actions and returns
      its final observation, reward 0 and the same flags again, until ``reset()`` (all rows) or
      ``reset(options={"reset_mask": mask})``. This is what LM agents use to run ``num_envs`` episodes in
      lockstep: reset, step until every row is done.

    Infos follow Gymnasium's vector convention (``info[key]`` array plus ``info["_key"]`` mask); an ended
    row carries ``prompt``, ``completion``, ``completion_ids``, ``reward_components`` and ``reference``.

    ## Arguments

    * ``num_envs``: number of rows.
    * ``autoreset_mode``: an ``AutoresetMode`` or its string value (default ``NEXT_STEP``).
    * ``render_mode``: ``None`` or ``"ansi"`` (``render()`` returns one string per row).
    * everything else: the single env's arguments (:class:`textenv.task.TextTask`).

    ``reset`` options: ``reset_mask`` (bool ``(num_envs,)``: reset only these rows), ``prompt_index``
    (int array ``(num_envs,)``: each row's prompt), ``prompts`` (list of ``num_envs`` strings).
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        **task_kwargs: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs <= 0:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(
                f"autoreset_mode={autoreset_mode!r}; expected one of {[m.value for m in SUPPORTED_AUTORESET_MODES]}"
            ) from None
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode={render_mode!r}; expected None or 'ansi'")
        self.task = task = TextTask(**task_kwargs)
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self.single_observation_space = task.observation_space()
        self.single_action_space = task.action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        n = self.num_envs
        self._input_ids = np.full((n, task.seq_len), task.pad_token_id, dtype=np.int64)
        self._attention_mask = np.zeros((n, task.seq_len), dtype=np.int64)
        self._lengths = np.zeros(n, dtype=np.int64)  # completion tokens written per row
        self._ended = np.zeros(n, dtype=bool)  # the row's episode ended (NEXT_STEP: reset it next step)
        self._last_terminated = np.zeros(n, dtype=bool)
        self._last_truncated = np.zeros(n, dtype=bool)
        self._rngs: list[np.random.Generator] = [seeding.np_random()[0] for _ in range(n)]
        self._prompt_texts: list[str] = [""] * n
        self._prompt_indices: list[int] = [-1] * n
        self._references: list[str | None] = [None] * n
        self._needs_reset = True
        self._rows = np.arange(n)

    # -- reset --------------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        options = dict(options or {})
        mask = self._reset_mask(options.pop("reset_mask", None))
        prompt_indices = self._per_row_option(options.pop("prompt_index", None), "prompt_index")
        prompts = self._per_row_option(options.pop("prompts", None), "prompts")
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; expected reset_mask, prompt_index, prompts")
        seeds = self._per_row_seeds(seed)

        # Choose every prompt before touching the buffer, so a bad option or seed changes nothing: seeded rows
        # get fresh generators (kept only on success), unseeded rows' generator states are restored on error.
        reset_rows = np.flatnonzero(mask).tolist()
        rngs = {row: self._rngs[row] if seeds[row] is None else seeding.np_random(seeds[row])[0] for row in reset_rows}
        saved_states = {row: self._rngs[row].bit_generator.state for row in reset_rows if seeds[row] is None}
        try:
            chosen = {row: self.task.choose_prompt(rngs[row], prompts[row], prompt_indices[row]) for row in reset_rows}
        except Exception:
            for row, state in saved_states.items():
                self._rngs[row].bit_generator.state = state
            raise
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            super().reset(seed=int(seed))
        infos: dict[str, Any] = {}
        for row in reset_rows:
            self._rngs[row] = rngs[row]
            infos = self._add_info(infos, self._reset_row(row, chosen[row]), row)
        self._needs_reset = False
        return self._observation(), infos

    def _reset_mask(self, mask: Any) -> np.ndarray:
        n = self.num_envs
        if mask is None:
            return np.ones(n, dtype=bool)
        array = np.asarray(mask)
        if array.shape != (n,) or array.dtype != np.bool_ or not array.any():
            raise ValueError(
                f"options['reset_mask'] must be a bool array of shape ({n},) with at least one True; got {mask!r}"
            )
        if self._needs_reset and not array.all():
            raise ResetNeeded("the first reset() must reset every row (no reset_mask, or an all-True one)")
        return array

    def _reset_row(self, row: int, choice: tuple[np.ndarray, int, str, str | None]) -> dict[str, Any]:
        prompt_ids, index, text, reference = choice
        self.task.write_prompt(self._input_ids[row], self._attention_mask[row], prompt_ids)
        self._lengths[row] = 0
        self._ended[row] = self._last_terminated[row] = self._last_truncated[row] = False
        self._prompt_texts[row], self._prompt_indices[row], self._references[row] = text, index, reference
        return {"prompt": text, "prompt_index": index}

    def _per_row_option(self, value: Any, name: str) -> list[Any]:
        if value is None:
            return [None] * self.num_envs
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            raise ValueError(
                f"options[{name!r}] must be a sequence of {self.num_envs} entries (one per row), got {value!r}"
            )
        values = list(value)
        if len(values) != self.num_envs:
            raise ValueError(f"options[{name!r}] needs {self.num_envs} entries (one per row), got {len(values)}")
        return values

    def _per_row_seeds(self, seed: Any) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return [int(seed) + row for row in range(self.num_envs)]
        if isinstance(seed, (str, bytes, bool)) or not hasattr(seed, "__len__"):
            raise ValueError(f"seed must be an int, None or {self.num_envs} seeds, got {seed!r}")
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed must be an int or {self.num_envs} seeds, got {len(seeds)}: {seed!r}")
        return seeds

    # -- step ---------------------------------------------------------------------------------------------
    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded("step() called before reset(); call reset() first")
        task, n = self.task, self.num_envs
        tokens = task.check_actions(actions, n)
        if self.autoreset_mode is AutoresetMode.SAME_STEP:
            active = np.ones(n, dtype=bool)  # ended rows were already reset in the step they ended
        else:
            active = np.ones(n, dtype=bool)
        rows = self._rows[active]
        slots = task.max_prompt_tokens + self._lengths[rows]
        self._input_ids[rows, slots] = tokens[rows]
        self._attention_mask[rows, slots] = 1
        self._lengths[rows] += 1

        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        terminated[rows] = task.is_eos[tokens[rows]]
        truncated[rows] = ~terminated[rows] & (self._lengths[rows] >= task.max_new_tokens)
        rewards = np.zeros(n, dtype=np.float64)
        infos: dict[str, Any] = {}
        ended_now = np.flatnonzero(terminated | truncated)
        if ended_now.size:
            try:
                rewards[ended_now], final_infos = self._score(ended_now)
            except Exception:  # take this step's tokens back: the env is as before the step
                self._input_ids[rows, slots] = task.pad_token_id
                self._attention_mask[rows, slots] = 0
                self._lengths[rows] -= 1
                raise
        else:
            final_infos = {}

        if self.autoreset_mode is AutoresetMode.NEXT_STEP:
            for row in np.flatnonzero(self._ended):  # ended last step: reset now, action ignored
                infos = self._add_info(infos, self._reset_row(row, task.choose_prompt(self._rngs[row])), row)
            for row, info in final_infos.items():
                infos = self._add_info(infos, info, row)
            self._ended = terminated | truncated
            return self._observation(), rewards, terminated, truncated, infos

        if self.autoreset_mode is AutoresetMode.SAME_STEP:
            for row, info in final_infos.items():
                # the row's final observation, copied before the row is reset (one row, not the whole buffer)
                row_obs = {
                    "input_ids": self._input_ids[row].copy(),
                    "attention_mask": self._attention_mask[row].copy(),
                }
                reset_info = self._reset_row(row, task.choose_prompt(self._rngs[row]))
                infos = self._add_info(infos, {**reset_info, "final_obs": row_obs, "final_info": info}, row)
            return self._observation(), rewards, terminated, truncated, infos

        # DISABLED: rows that ended earlier repeat their flags; nothing resets
        for row, info in final_infos.items():
            infos = self._add_info(infos, info, row)
        self._last_terminated |= terminated
        self._last_truncated |= truncated
        self._ended = self._last_terminated | self._last_truncated
        return self._observation(), rewards, self._last_terminated.copy(), self._last_truncated.copy(), infos

    def _score(self, rows: np.ndarray) -> tuple[np.ndarray, dict[int, dict[str, Any]]]:
        """Score the episodes of ``rows`` with one batched reward call; return rewards and their infos."""
        task, start = self.task, self.task.max_prompt_tokens
        completion_ids = [self._input_ids[row, start : start + self._lengths[row]].tolist() for row in rows]
        completions = [task.decode(ids) for ids in completion_ids]
        prompts = [self._prompt_texts[row] for row in rows]
        references = [self._references[row] for row in rows]
        result = task.score(prompts, completions, completion_ids, references)
        infos = {
            int(row): task.final_info(prompts[i], completions[i], completion_ids[i], references[i], result, i)
            for i, row in enumerate(rows)
        }
        return result.total, infos

    # -- the rest -----------------------------------------------------------------------------------------
    def _observation(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._input_ids.copy(), "attention_mask": self._attention_mask.copy()}

    def action_masks(self) -> np.ndarray:
        """``(num_envs, vocab_size)`` booleans: which tokens each row's ``step`` accepts."""
        return np.broadcast_to(self.task.allowed, (self.num_envs, self.task.vocab_size)).copy()

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode != "ansi":
            return None
        start = self.task.max_prompt_tokens
        return tuple(
            f"{self._prompt_texts[row]} >>> {self.task.decode(self._input_ids[row, start : start + self._lengths[row]])}"
            for row in range(self.num_envs)
        )

    @property
    def tokenizer(self) -> Any:
        return self.task.tokenizer
