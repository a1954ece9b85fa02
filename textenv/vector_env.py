"""The native vector environment: N text-generation episodes in one preallocated buffer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textenv.render import TextRendering
from textenv.task import MAX_BUFFER_TOKENS, TextTask, check_size

SUPPORTED_AUTORESET_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED)


class TextGenerationVectorEnv(TextRendering, VectorEnv):
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

    * ``num_envs``: number of rows; ``num_envs * (max_prompt_tokens + max_new_tokens)`` is at most
      :data:`textenv.task.MAX_BUFFER_TOKENS` (2**28 token slots, 4 GiB), checked before the buffer is allocated.
    * ``autoreset_mode``: an ``AutoresetMode`` or its string value (default ``NEXT_STEP``).
    * ``render_mode``: ``None``, ``"ansi"`` (``render()`` returns one string per row) or ``"rgb_array"`` (one
      ``(256, 512, 3)`` uint8 frame per row, as the single env draws it).
    * everything else: the single env's arguments (:class:`textenv.task.TextTask`).

    ``reset`` options: ``reset_mask`` (bool ``(num_envs,)``: reset only these rows), ``prompt_index``
    (int array ``(num_envs,)``: each row's prompt), ``prompts`` (list of ``num_envs`` strings). A bad option,
    seed or action raises before anything changes (``np_random`` and every row's generator included). The reward
    plugin runs before a step writes anything: one that fails raises ``rewards.RewardPluginError``, and an
    interruption during ``step`` or ``reset`` (``KeyboardInterrupt``, any ``BaseException``) is re-raised, with
    every row as before the call either way. Every action is checked, also those of rows whose action is ignored
    (ended rows under ``NEXT_STEP``/``DISABLED``).

    ## Cost per step

    The step itself is a handful of numpy operations on ``(num_envs,)`` arrays plus the observation copy, whatever
    ``max_new_tokens`` is; per finished episode there is one decode, one row of infos and (per step, not per
    episode) one reward call. ``benchmarks/env_throughput.py`` measures it.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP, "render_fps": 4}

    def __init__(
        self,
        num_envs: int,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        **task_kwargs: Any,
    ) -> None:
        check_size("num_envs", num_envs, MAX_BUFFER_TOKENS)
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(
                f"autoreset_mode={autoreset_mode!r}; expected one of {[m.value for m in SUPPORTED_AUTORESET_MODES]}"
            ) from None
        self._set_render_mode(render_mode)
        self.task = task = TextTask(**task_kwargs)
        if num_envs * task.seq_len > MAX_BUFFER_TOKENS:
            raise ValueError(
                f"num_envs * (max_prompt_tokens + max_new_tokens) = {num_envs} * {task.seq_len} token slots is above "
                f"the limit of {MAX_BUFFER_TOKENS:,} (16 bytes each, copied into every observation)"
            )
        self.num_envs = int(num_envs)
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self.single_observation_space = task.observation_space()
        self.single_action_space = task.action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        n = self.num_envs
        self._input_ids = np.full((n, task.seq_len), task.pad_token_id, dtype=np.int64)
        self._attention_mask = np.zeros((n, task.seq_len), dtype=np.int64)
        self._row_starts = np.arange(n, dtype=np.int64) * task.seq_len  # flat index of each row's slot 0
        self._lengths = np.zeros(n, dtype=np.int64)  # completion tokens written per row
        # the row's episode ended: NEXT_STEP resets it on the next step, DISABLED freezes it until reset()
        self._ended = np.zeros(n, dtype=bool)
        self._final_terminated = np.zeros(n, dtype=bool)  # DISABLED: the flags an ended row repeats
        self._final_truncated = np.zeros(n, dtype=bool)
        self._rngs: list[np.random.Generator] = [seeding.np_random()[0] for _ in range(n)]
        self._prompt_texts: list[str] = [""] * n
        self._prompt_indices: list[int] = [-1] * n
        self._references: list[str | None] = [None] * n
        self._padded_prompts: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # prompt index -> prompt slots
        self._needs_reset = True

    # -- reset --------------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"options must be a dict or None, got {type(options).__name__}: {options!r}")
        options = dict(options or {})
        mask = self._reset_mask(options.pop("reset_mask", None))
        prompt_indices = self._per_row_option(options.pop("prompt_index", None), "prompt_index")
        prompts = self._per_row_option(options.pop("prompts", None), "prompts")
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; expected reset_mask, prompt_index, prompts")
        seeds = self._per_row_seeds(seed)

        # Choose every prompt before touching the buffer, so a bad option or seed changes nothing: seeded rows
        # get fresh generators (kept only on success), unseeded rows' generator states are restored on error.
        rows = np.flatnonzero(mask).tolist()
        rngs = {row: self._rngs[row] if seeds[row] is None else seeding.np_random(seeds[row])[0] for row in rows}
        np_random = None
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            np_random = seeding.np_random(int(seed))
        saved = self._save(rows)
        try:
            choices = [self.task.choose_prompt(rngs[row], prompts[row], prompt_indices[row]) for row in rows]
            if np_random is not None:
                self._np_random, self._np_random_seed = np_random
            for row in rows:
                self._rngs[row] = rngs[row]
            infos: dict[str, Any] = {}
            self._reset_rows(rows, choices, infos)
            self._needs_reset = False
            return self._observation(), infos
        except BaseException:  # a bad prompt, or an interruption: every row as it was
            self._restore(saved)
            raise

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

    def _reset_rows(
        self, rows: Sequence[int], choices: Sequence[tuple[np.ndarray, int, str, str | None]], infos: dict[str, Any]
    ) -> None:
        """Start new episodes in ``rows`` with the chosen prompts; add their reset infos to ``infos``."""
        task, start = self.task, self.task.max_prompt_tokens
        self._input_ids[rows, start:] = task.pad_token_id
        self._attention_mask[rows, start:] = 0
        for row, (prompt_ids, index, text, reference) in zip(rows, choices):
            self._input_ids[row, :start], self._attention_mask[row, :start] = self._padded_prompt(prompt_ids, index)
            self._prompt_texts[row], self._prompt_indices[row], self._references[row] = text, index, reference
        self._lengths[rows] = 0
        self._ended[rows] = self._final_terminated[rows] = self._final_truncated[rows] = False
        n = self.num_envs
        _put(infos, "prompt", rows, [choice[2] for choice in choices], n)
        _put(infos, "prompt_index", rows, [choice[1] for choice in choices], n)

    def _padded_prompt(self, prompt_ids: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The prompt slots (ids and mask) of a prompt, cached per prompt index."""
        padded = self._padded_prompts.get(index) if index >= 0 else None
        if padded is None:
            size = self.task.max_prompt_tokens
            padded = (np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64))
            self.task.write_prompt(padded[0], padded[1], prompt_ids)
            if index >= 0:
                self._padded_prompts[index] = padded
        return padded

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
        task, n, mode = self.task, self.num_envs, self.autoreset_mode
        tokens = task.check_actions(actions, n)
        # rows whose episode ended earlier ignore their action (SAME_STEP has none: they were reset already)
        waiting = np.flatnonzero(self._ended) if mode is not AutoresetMode.SAME_STEP else np.zeros(0, np.int64)
        if len(waiting) == 0:  # every row writes its token: no fancy row selection
            rows: Any = slice(None)
            slots = self._row_starts + (task.max_prompt_tokens + self._lengths)
            lengths = self._lengths + 1
            terminated = task.is_eos[tokens]
            truncated = lengths >= task.max_new_tokens
        else:
            rows = np.flatnonzero(~self._ended)
            slots = self._row_starts[rows] + (task.max_prompt_tokens + self._lengths[rows])
            lengths = self._lengths.copy()
            lengths[rows] += 1
            terminated = np.zeros(n, dtype=bool)
            truncated = np.zeros(n, dtype=bool)
            terminated[rows] = task.is_eos[tokens[rows]]
            truncated[rows] = lengths[rows] >= task.max_new_tokens
        truncated &= ~terminated
        ended = terminated | truncated

        # The reward plugin runs before anything changes: if it raises, nothing did.
        rewards = np.zeros(n, dtype=np.float64)
        ended_rows = np.flatnonzero(ended)
        finals: dict[str, Any] = {}
        if ended_rows.size:
            rewards[ended_rows] = self._score(ended_rows, tokens, finals)

        to_reset = waiting if mode is AutoresetMode.NEXT_STEP else ended_rows if mode is AutoresetMode.SAME_STEP else ()
        saved = self._save(to_reset.tolist() if len(to_reset) else [])
        flat_ids, flat_mask = self._input_ids.reshape(-1), self._attention_mask.reshape(-1)  # views
        try:
            flat_ids[slots] = tokens[rows]
            flat_mask[slots] = 1
            self._lengths = lengths
            return self._finish_step(mode, waiting, ended_rows, ended, terminated, truncated, rewards, finals)
        except BaseException:  # an interruption (Ctrl-C, MemoryError): the env as before the step
            flat_ids[slots] = task.pad_token_id
            flat_mask[slots] = 0
            self._restore(saved)
            raise

    def _finish_step(
        self,
        mode: AutoresetMode,
        waiting: np.ndarray,
        ended_rows: np.ndarray,
        ended: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        rewards: np.ndarray,
        finals: dict[str, Any],
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The autoreset part of :meth:`step`, after this step's tokens are written."""
        task, n = self.task, self.num_envs
        infos: dict[str, Any] = {}
        if mode is AutoresetMode.NEXT_STEP:
            if len(waiting):  # ended last step: reset now, their actions ignored
                rows_to_reset = waiting.tolist()
                self._reset_rows(rows_to_reset, [task.choose_prompt(self._rngs[r]) for r in rows_to_reset], infos)
            self._put_finals(infos, ended_rows, finals)
            self._ended = ended
            return self._observation(), rewards, terminated, truncated, infos

        if mode is AutoresetMode.SAME_STEP:
            if ended_rows.size:
                # each ended row's last observation, taken before the row is reset (fresh arrays, k rows)
                final_ids, final_mask = self._input_ids[ended_rows], self._attention_mask[ended_rows]
                final_obs = np.full(n, None, dtype=object)
                for i, row in enumerate(ended_rows.tolist()):
                    final_obs[row] = {"input_ids": final_ids[i], "attention_mask": final_mask[i]}
                rows_to_reset = ended_rows.tolist()
                self._reset_rows(rows_to_reset, [task.choose_prompt(self._rngs[r]) for r in rows_to_reset], infos)
                final_info: dict[str, Any] = {}
                self._put_finals(final_info, ended_rows, finals)
                infos["final_obs"], infos["_final_obs"] = final_obs, ended.copy()
                infos["final_info"], infos["_final_info"] = final_info, ended.copy()
            return self._observation(), rewards, terminated, truncated, infos

        # DISABLED: ended rows repeat their flags and nothing resets until reset()
        self._put_finals(infos, ended_rows, finals)
        self._final_terminated = self._final_terminated | terminated
        self._final_truncated = self._final_truncated | truncated
        self._ended = self._final_terminated | self._final_truncated
        return self._observation(), rewards, self._final_terminated.copy(), self._final_truncated.copy(), infos

    def _save(self, rows: list[int]) -> tuple[Any, ...]:
        """What :meth:`_restore` needs to undo a step or reset that (re)starts episodes in ``rows``: their
        buffer rows, prompts and generator states, and every row's lengths and flags."""
        per_row = [
            (
                row,
                self._rngs[row],
                self._rngs[row].bit_generator.state,
                self._prompt_texts[row],
                self._prompt_indices[row],
                self._references[row],
            )
            for row in rows
        ]
        return (
            per_row,
            self._input_ids[rows],  # fancy indexing: copies
            self._attention_mask[rows],
            self._lengths.copy(),
            self._ended.copy(),
            self._final_terminated.copy(),
            self._final_truncated.copy(),
            self._np_random,
            self._np_random_seed,
            self._needs_reset,
        )

    def _restore(self, saved: tuple[Any, ...]) -> None:
        per_row, input_ids, attention_mask, *arrays, np_random, np_random_seed, needs_reset = saved
        rows = [entry[0] for entry in per_row]
        for row, rng, state, text, index, reference in per_row:
            rng.bit_generator.state = state
            self._rngs[row] = rng
            self._prompt_texts[row], self._prompt_indices[row], self._references[row] = text, index, reference
        self._input_ids[rows] = input_ids
        self._attention_mask[rows] = attention_mask
        self._lengths, self._ended, self._final_terminated, self._final_truncated = arrays
        self._np_random, self._np_random_seed, self._needs_reset = np_random, np_random_seed, needs_reset

    def _score(self, rows: np.ndarray, tokens: np.ndarray, finals: dict[str, Any]) -> np.ndarray:
        """Score the episodes of ``rows``, each ending with its token in ``tokens`` (not yet written), with ONE
        batched reward call; fill ``finals`` for their infos. Changes no state."""
        task, start = self.task, self.task.max_prompt_tokens
        ends = (start + self._lengths[rows]).tolist()
        last = tokens[rows].tolist()
        completion_ids = [
            self._input_ids[row, start:end].tolist() + [token] for row, end, token in zip(rows.tolist(), ends, last)
        ]
        completions = task.decode_batch(completion_ids)
        prompts = [self._prompt_texts[row] for row in rows]
        references = [self._references[row] for row in rows]
        result = task.score(prompts, completions, completion_ids, references)
        finals.update(
            prompt=prompts,
            completion=completions,
            completion_ids=completion_ids,
            reward_components=result.components,
            reference=references,
        )
        return result.total

    def _put_finals(self, infos: dict[str, Any], rows: np.ndarray, finals: dict[str, Any]) -> None:
        """Add the last-step infos of ``rows`` (the keys of :meth:`TextTask.final_info`), batched."""
        if not finals:
            return
        n, rows = self.num_envs, rows.tolist()
        for key in ("prompt", "completion", "completion_ids", "reference"):
            _put(infos, key, rows, finals[key], n)
        components = infos.setdefault("reward_components", {})
        for name, values in finals["reward_components"].items():
            _put(components, name, rows, [float(v) for v in values], n)
        mask = infos.setdefault("_reward_components", np.zeros(n, dtype=bool))
        mask[rows] = True

    # -- the rest -----------------------------------------------------------------------------------------
    def _observation(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._input_ids.copy(), "attention_mask": self._attention_mask.copy()}

    def action_masks(self) -> np.ndarray:
        """``(num_envs, vocab_size)`` booleans: which tokens each row's ``step`` accepts."""
        return np.broadcast_to(self.task.allowed, (self.num_envs, self.task.vocab_size)).copy()

    def text(self, row: int) -> str:
        """Row ``row``'s episode so far as ``"prompt >>> completion"``."""
        start = self.task.max_prompt_tokens
        completion = self.task.decode(self._input_ids[row, start : start + self._lengths[row]])
        return f"{self._prompt_texts[row]} >>> {completion}"

    def render(self) -> tuple[str, ...] | tuple[np.ndarray, ...] | None:
        """One entry per row, like ``SyncVectorEnv``: ``"ansi"`` the text, ``"rgb_array"`` the text drawn into a
        ``(FRAME_HEIGHT, FRAME_WIDTH, 3)`` uint8 image (:mod:`textenv.render`)."""
        rendered = self._render_texts([self.text(row) for row in range(self.num_envs)])
        return None if rendered is None else tuple(rendered)

    @property
    def tokenizer(self) -> Any:
        return self.task.tokenizer


def _put(infos: dict[str, Any], key: str, rows: Sequence[int], values: Sequence[Any], num_envs: int) -> None:
    """``infos[key][rows] = values`` plus the ``infos["_" + key]`` mask: Gymnasium's vector-info layout, with
    the array type chosen from the first value exactly as ``VectorEnv._add_info`` does, for many rows at once."""
    array = infos.get(key)
    if array is None:
        first = values[0]
        if type(first) in (int, float, bool) or isinstance(first, np.number):
            array = np.zeros(num_envs, dtype=type(first))
        else:
            array = np.full(num_envs, None, dtype=object)
        infos[key], infos[f"_{key}"] = array, np.zeros(num_envs, dtype=bool)
    if array.dtype == object:
        for row, value in zip(rows, values):  # element-wise: lists must not broadcast into the array
            array[row] = value
    else:
        array[rows] = values
    infos[f"_{key}"][rows] = True
