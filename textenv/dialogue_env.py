"""The single multi-turn environment: one conversation, run by a one-row :class:`DialogueVectorEnv`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode

from textenv.dialogue_vector_env import DialogueVectorEnv
from textenv.render import TextRendering


class DialogueEnv(TextRendering, gym.Env[dict[str, np.ndarray], int]):
    """
    ## Description

    A multi-turn conversation as a Gymnasium environment. The other side (a *responder*: a simulated user that is
    a real causal LM, a game master, or a script) opens; then the agent and the responder take turns. The agent
    writes its turn one token per step; when the turn ends the env appends the responder's reply, framed by the
    chat template's tokens, to the observation, and the agent's next turn starts after it. Reward plugins score
    each turn and/or the whole conversation.

    ``MossChat-v0``: cheer up a user (SmolLM2-135M-Instruct under a persona prompt) who opens with a complaint;
    3 agent turns; reward = VADER sentiment of the user's last reply minus a length cost.
    ``MossGuess-v0`` / ``MossGuessWords-v0``: find the game master's secret word by yes/no questions; reward 1 for
    naming it, less for every turn it took. A turn's guess is the first animal of the game it names, and only that
    one counts: naming several animals in one turn is one guess (the first named), so listing every candidate does
    not win.

    This env is one row of :class:`textenv.dialogue_vector_env.DialogueVectorEnv`, which documents the contract in
    full; the single env unbatches it.

    ## Action Space

    ``Discrete(vocab_size)``: the next token of the agent's turn. Bad actions (floats, bools, out of range, masked
    out by ``allowed_token_ids``) raise and leave the episode as it was. :meth:`action_masks` for MaskablePPO.

    ## Observation Space

    ``Dict(input_ids=Box(0, vocab_size - 1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` with
    ``L = max_prompt_tokens + max_total_tokens``: the opening left-padded into the first ``max_prompt_tokens``
    slots (with a chat template: the system prompt, the opening as a user message and the assistant header), then
    the conversation so far -- the agent's tokens and the tokens the env inserted -- in order, then right padding.

    ## Rewards

    0 on every step but those that end an agent turn (the per-turn reward ``turn_reward``, if any, of the
    conversation so far, the reply included) and the last step (plus the episode reward ``reward`` of the whole
    conversation). Plugins are called in the conversation form (:mod:`rewards.conversation`).

    ## Starting State

    ``reset`` draws an opening uniformly with ``np_random`` (``options={"prompt_index": i}`` picks one). Its
    ``reference`` (e.g. the secret word) is hidden from the observation.

    ## Episode End

    * Termination: ``max_turns`` agent turns are done, or the responder marked the task solved or over (a game
      ended: its reply carries an ``outcome``).
    * Truncation: the ``max_total_tokens`` conversation slots are full, or the next reply does not fit.

    An agent turn ends at an end-of-turn token or after ``max_turn_tokens`` tokens. ``step`` after the end raises
    ``ResetNeeded``.

    ## Info

    Every reset and step: ``inserted_mask`` (bool ``(L,)``, True on each observation token the env wrote: the
    agent's own tokens are ``attention_mask & ~inserted_mask``) and ``turn`` (agent turns finished). A step that
    ends an agent turn adds ``reply`` and, with a turn reward, ``turn_reward_components``; the last step adds
    ``conversation`` (:class:`rewards.conversation.Conversation`) and ``reward_components``. Reset infos add
    ``prompt`` and ``prompt_index``.

    ## Arguments

    ``render_mode`` (``None``, ``"ansi"``, ``"human"`` or ``"rgb_array"``: the conversation drawn into a
    ``(FRAME_HEIGHT, FRAME_WIDTH, 3)`` uint8 image by :mod:`textenv.render`) and the arguments of
    :class:`textenv.dialogue_task.DialogueTask`: ``tokenizer``, ``prompts``, ``responder``, ``responder_kwargs``,
    ``reward``, ``reward_kwargs``, ``turn_reward``, ``turn_reward_kwargs``, ``max_turns`` (3), ``max_turn_tokens``
    (24), ``max_total_tokens`` (160), ``max_prompt_tokens`` (64), ``reply_after_last_turn`` (True),
    ``chat_template`` (True), ``system_prompt``, ``end_of_turn_token_ids``, ``allowed_token_ids``, ``vocab_size``,
    ``prompt_truncation``, ``trust_remote_code``.

    ```python
    >>> import gymnasium as gym, textenv
    >>> env = gym.make("MossChat-v0")
    >>> obs, info = env.reset(seed=0)
    ```
    """

    metadata = {"render_modes": ["ansi", "human", "rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **task_kwargs: Any) -> None:
        self._set_render_mode(render_mode)
        self.core = DialogueVectorEnv(1, autoreset_mode=AutoresetMode.DISABLED, **task_kwargs)
        self.task = self.core.task
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self._needs_reset = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"options must be a dict or None, got {type(options).__name__}: {options!r}")
        options = dict(options or {})
        index = options.pop("prompt_index", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; expected prompt_index")
        # a rejected reset changes nothing: the generator (and its seed) as they were, the row's included
        saved = (self._np_random, self._np_random_seed, self.core._rngs[0])
        state = None if self._np_random is None else self._np_random.bit_generator.state
        super().reset(seed=seed)
        self.core._rngs[0] = self.np_random  # the row draws from this env's generator
        try:
            obs, infos = self.core.reset(options=None if index is None else {"prompt_index": [index]})
        except BaseException:
            self._np_random, self._np_random_seed, self.core._rngs[0] = saved
            if state is not None:
                self._np_random.bit_generator.state = state
            raise
        self._needs_reset = False
        return _row(obs), _row_info(infos)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded("step() called before reset() or after the episode ended; call reset() first")
        self.task.text.check_action(action)  # the single env's error messages for a bad action
        obs, rewards, terminated, truncated, infos = self.core.step(np.asarray([action], dtype=np.int64).reshape(1))
        if terminated[0] or truncated[0]:
            self._needs_reset = True
        if self.render_mode == "human":
            self.render()
        return _row(obs), float(rewards[0]), bool(terminated[0]), bool(truncated[0]), _row_info(infos)

    def action_masks(self) -> np.ndarray:
        """Boolean array of length ``vocab_size``: which tokens ``step`` accepts (for MaskablePPO)."""
        return self.task.text.allowed.copy()

    def render(self) -> str | np.ndarray | None:
        return self._render_one(self.core.text(0))

    @property
    def tokenizer(self) -> Any:
        return self.task.tokenizer


def _row(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: value[0] for key, value in obs.items()}


def _row_info(infos: dict[str, Any]) -> dict[str, Any]:
    """Row 0 of a vector info dict (Gymnasium's ``info[key]`` + ``info["_key"]`` layout), as a plain dict."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_") or not infos.get(f"_{key}", np.zeros(1, dtype=bool))[0]:
            continue
        out[key] = _row_info(value) if isinstance(value, dict) else value[0]
    for key in ("prompt_index", "turn"):
        if key in out:
            out[key] = int(out[key])
    return out
