"""The single text-generation environment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding

from textenv.render import TextRendering
from textenv.task import TextTask

RESET_OPTIONS = ("prompt", "prompt_index", "reference")
# what a reset changes besides the buffer (restored when it is interrupted)
EPISODE_FIELDS = (
    "_prompt_index", "_prompt_text", "_reference", "_length", "_needs_reset", "_np_random", "_np_random_seed"
)


class TextGenerationEnv(TextRendering, gym.Env[dict[str, np.ndarray], int]):
    """
    ## Description

    Text generation as a Gymnasium environment. An episode is one completion of one prompt: the agent
    writes the completion one token at a time, and a reward-model plugin scores the finished
    ``(prompt, completion)`` pair. Any tokenizer works; the policy can be anything from a random agent to
    a fine-tuned causal LM (see ``agents``).

    ``MossText-v0`` is this environment with the SmolLM2-135M-Instruct tokenizer, 240 built-in
    movie-review openings, and the VADER ``sentiment`` reward: continue the review positively.

    ## Action Space

    ``Discrete(vocab_size)``: the id of the next token (``vocab_size`` defaults to ``len(tokenizer)``, 49152
    for SmolLM2). Python ints, numpy integers and 0-d or one-element integer arrays are accepted; floats, bools,
    arrays of any other size (the message names the shape), out-of-range ids and ids masked out by
    ``allowed_token_ids`` raise an error and leave the episode as it was. :meth:`action_masks` returns the
    allowed tokens as a boolean array (all ``True`` by default),
    so sb3-contrib's ``MaskablePPO`` uses it unchanged.

    ## Observation Space

    ``Dict(input_ids=Box(0, vocab_size - 1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` with
    ``L = max_prompt_tokens + max_new_tokens``. The prompt is **left-padded** into the first
    ``max_prompt_tokens`` slots (it always ends at slot ``max_prompt_tokens - 1``); completion token ``t``
    sits at slot ``max_prompt_tokens + t``; the remaining slots are right padding. Padding holds the
    tokenizer's pad id (its EOS id if it has no pad token; 2 for SmolLM2) with ``attention_mask`` 0. Each
    observation is a fresh copy: keeping one never sees later steps.

    ## Rewards

    0 on every step but the last. On the last step the reward plugin scores the prompt text and the
    completion text (decoded without the EOS token and without special tokens), once, before the step changes
    any state. For ``MossText-v0`` that is the VADER compound score in [-1, 1].

    ## Starting State

    ``reset`` draws a prompt uniformly with the environment's ``np_random`` (the same seed gives the same
    prompt sequence). ``reset(options={"prompt": "text"})`` (with an optional ``"reference"``) or
    ``options={"prompt_index": i}`` picks one. The reset ``info`` holds ``prompt`` and ``prompt_index`` (-1 for a
    prompt given as text). Options are checked before anything changes: unknown keys, both ``prompt`` and
    ``prompt_index``, or a bad value raise ``ValueError`` and leave the env, ``np_random`` included, as it was
    (a rejected ``reset(seed=...)`` does not reseed).

    ## Episode End

    * Termination: the agent emits an EOS token (``eos_token_ids``; SmolLM2's ``<|im_end|>``).
    * Truncation: ``max_new_tokens`` tokens were written without EOS. No ``TimeLimit`` wrapper is needed,
      and agents must bootstrap here (the completion could have gone on), not on termination.

    The last step's ``info`` holds ``prompt``, ``completion``, ``completion_ids`` (with the EOS, if any),
    ``reward_components`` (each reward part's unweighted value) and ``reference`` (or ``None``).
    ``step`` before ``reset`` or after the episode ended raises ``gymnasium.error.ResetNeeded``. A reward
    plugin that fails (or runs past ``reward_timeout``) raises ``rewards.RewardPluginError``; an interruption
    during ``step`` or ``reset`` (``KeyboardInterrupt``, any ``BaseException``) is re-raised. Either way the env
    is exactly as before the call and stays usable.

    ## Arguments

    * ``tokenizer``: built-in model name (``"smollm2-135m-instruct"``), local directory, hub id, or a
      tokenizer object.
    * ``prompts``: ``None``/``"builtin"``/``"builtin:train"``/``"builtin:test"``, a list of str, a ``.txt``
      or ``.jsonl`` path, or an iterable of dicts with ``prompt`` (and ``reference``).
    * ``reward``, ``reward_kwargs``: a reward spec for ``rewards.make`` (name, ``"module:attr"``,
      callable, or a weighted list) and its arguments. Default ``"sentiment"``.
    * ``max_new_tokens`` (24), ``max_prompt_tokens`` (32); each at most :data:`textenv.task.MAX_TOKENS`
      (1,000,000), checked before the buffer is allocated.
    * ``prompt_truncation``: ``"left"`` (default: keep the prompt's last ``max_prompt_tokens`` tokens, with
      a warning) or ``"error"``. Empty prompts are always refused.
    * ``chat_template`` (False), ``system_prompt``: wrap prompts as a chat user turn.
    * ``eos_token_ids``, ``allowed_token_ids``, ``vocab_size`` (at most 2**24), ``trust_remote_code`` (False).
    * ``reward_timeout``: seconds one reward-plugin call may take (``None``, the default: no limit). A late call
      raises ``RewardPluginError`` and is abandoned in a background thread, not stopped (Python cannot kill a
      thread); see :meth:`rewards.RewardModel.with_timeout`.
    * ``render_mode``: ``"ansi"`` (``render()`` returns ``"prompt >>> completion"``), ``"human"`` (prints it on
      every step) or ``"rgb_array"`` (that text drawn into a ``(256, 512, 3)`` uint8 frame, the newest lines in
      view; what SB3 and ``RecordVideo`` ask for).

    ```python
    >>> import gymnasium as gym, textenv
    >>> env = gym.make("MossText-v0")
    >>> obs, info = env.reset(seed=0)
    ```
    """

    metadata = {"render_modes": ["ansi", "human", "rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **task_kwargs: Any) -> None:
        self._set_render_mode(render_mode)
        self.task = TextTask(**task_kwargs)
        self.observation_space = self.task.observation_space()
        self.action_space = self.task.action_space()
        task = self.task
        self._input_ids = np.full(task.seq_len, task.pad_token_id, dtype=np.int64)
        self._attention_mask = np.zeros(task.seq_len, dtype=np.int64)
        self._prompt_index = -1
        self._prompt_text = ""
        self._reference: str | None = None
        self._length = 0  # completion tokens written so far
        self._needs_reset = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        # Everything that can fail runs before any state changes: options are checked, a seed builds a new
        # generator (kept only on success), and the prompt is drawn and encoded.
        prompt, prompt_index, reference = _reset_options(options)
        if seed is not None or self._np_random is None:
            rng, rng_seed = seeding.np_random(seed)
        else:
            rng, rng_seed = self._np_random, self._np_random_seed
        saved_state = rng.bit_generator.state
        try:
            prompt_ids, index, text, reference = self.task.choose_prompt(rng, prompt, prompt_index, reference)
        except BaseException:
            rng.bit_generator.state = saved_state
            raise
        saved = self._save()
        try:
            self._np_random, self._np_random_seed = rng, rng_seed
            self._prompt_index, self._prompt_text, self._reference = index, text, reference
            self.task.write_prompt(self._input_ids, self._attention_mask, prompt_ids)
            self._length = 0
            self._needs_reset = False
            return self._observation(), {"prompt": text, "prompt_index": index}
        except BaseException:
            rng.bit_generator.state = saved_state
            self._restore(saved)
            raise

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded("step() called before reset() or after the episode ended; call reset() first")
        task = self.task
        token = task.check_action(action)
        length = self._length + 1
        terminated = token in task.eos_token_set
        truncated = not terminated and length >= task.max_new_tokens
        reward, info = 0.0, {}
        if terminated or truncated:  # the plugin runs before anything changes: if it raises, nothing did
            reward, info = self._final_reward(token)
        slot = task.max_prompt_tokens + self._length
        try:
            self._input_ids[slot] = token
            self._attention_mask[slot] = 1
            self._length = length
            self._needs_reset = terminated or truncated
            if self.render_mode == "human":
                self.render()
            return self._observation(), reward, terminated, truncated, info
        except BaseException:  # an interruption (Ctrl-C, MemoryError) leaves the env as before the step
            self._input_ids[slot] = task.pad_token_id
            self._attention_mask[slot] = 0
            self._length = length - 1
            self._needs_reset = False
            raise

    def _final_reward(self, token: int) -> tuple[float, dict[str, Any]]:
        """Score the completion so far plus ``token`` (not yet written); changes no state."""
        task = self.task
        start = task.max_prompt_tokens
        completion_ids = self._input_ids[start : start + self._length].tolist() + [token]
        completion = task.decode_ids(completion_ids)
        result = task.score([self._prompt_text], [completion], [completion_ids], [self._reference])
        info = task.final_info(self._prompt_text, completion, completion_ids, self._reference, result, 0)
        return float(result.total[0]), info

    def _save(self) -> tuple[Any, ...]:
        """The episode state, for :meth:`_restore` after an interrupted reset."""
        fields = tuple(getattr(self, name) for name in EPISODE_FIELDS)
        return self._input_ids.copy(), self._attention_mask.copy(), fields

    def _restore(self, saved: tuple[Any, ...]) -> None:
        input_ids, attention_mask, fields = saved
        self._input_ids[:] = input_ids
        self._attention_mask[:] = attention_mask
        for name, value in zip(EPISODE_FIELDS, fields):
            setattr(self, name, value)

    def _observation(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._input_ids.copy(), "attention_mask": self._attention_mask.copy()}

    def action_masks(self) -> np.ndarray:
        """Boolean array of length ``vocab_size``: which tokens ``step`` accepts (for MaskablePPO)."""
        return self.task.allowed.copy()

    def text(self) -> str:
        """The episode so far as ``"prompt >>> completion"`` (what ``render`` shows)."""
        start = self.task.max_prompt_tokens
        return f"{self._prompt_text} >>> {self.task.decode(self._input_ids[start : start + self._length])}"

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: the episode's text; ``"human"``: prints it; ``"rgb_array"``: the text drawn into a
        ``(FRAME_HEIGHT, FRAME_WIDTH, 3)`` uint8 image (see :mod:`textenv.render`)."""
        return self._render_one(self.text())

    @property
    def tokenizer(self) -> Any:
        return self.task.tokenizer


def _reset_options(options: Any) -> tuple[str | None, Any, str | None]:
    """``(prompt, prompt_index, reference)`` from ``reset``'s options, or a ``ValueError`` naming the bad one."""
    if options is None:
        return None, None, None
    if not isinstance(options, Mapping):
        raise ValueError(
            f"options must be a dict with keys from {RESET_OPTIONS}, got {type(options).__name__}: {options!r}"
        )
    unknown = sorted(str(key) for key in options if key not in RESET_OPTIONS)
    if unknown:
        raise ValueError(f"unknown reset options {unknown}; expected keys from {RESET_OPTIONS}")
    prompt, prompt_index, reference = (options.get(key) for key in RESET_OPTIONS)
    if prompt is not None and prompt_index is not None:
        raise ValueError(f"options hold both prompt={prompt!r} and prompt_index={prompt_index!r}; give one")
    if reference is not None and not isinstance(reference, str):
        raise ValueError(f"options['reference'] must be a str or None, got {type(reference).__name__}: {reference!r}")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise ValueError(f"options['prompt'] must be a non-empty str, got {prompt!r}")
    return prompt, prompt_index, reference
