"""The multi-turn vector environment: N conversations in one preallocated buffer, one batched responder call per
step in which any row's turn ended."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rewards.conversation import AGENT, OTHER, Conversation
from textenv.dialogue_task import DialogueTask
from textenv.render import TextRendering
from textenv.task import MAX_BUFFER_TOKENS, check_size
from textenv.responders import Reply
from textenv.vector_env import TextGenerationVectorEnv, _put

SUPPORTED_AUTORESET_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED)


class DialogueVectorEnv(TextRendering, VectorEnv):
    """
    ## Description

    ``num_envs`` multi-turn conversations stepped together. The other side (the *responder*) speaks first: the
    opening. Then the agent writes its turn one token per step; when the turn ends, the env asks the responder for
    its reply -- ONE batched call for every row whose turn ended in this step -- and appends the reply (framed by
    the chat template's tokens) to the observation; the agent's next turn starts after it. This is the
    ``vector_entry_point`` of ``MossChat-v0``, ``MossGuess-v0`` and ``MossGuessWords-v0``; a row behaves exactly as
    :class:`textenv.dialogue_env.DialogueEnv` seeded alike (row ``i`` of ``reset(seed=s)`` as a single env reset with
    ``s + i``), with the same responder draws when the responder draws per row (the scripted and word-game
    responders; the simulated user samples one batch with one seed, see :class:`textenv.responders.SimulatedUser`).

    ## Action Space

    ``MultiDiscrete([vocab_size] * num_envs)``: one token id per row; checked as the text env checks them.
    :meth:`action_masks` gives the allowed tokens, ``(num_envs, vocab_size)``.

    ## Observation Space

    ``Dict(input_ids=Box(0, vocab_size - 1, (num_envs, L), int64), attention_mask=Box(0, 1, (num_envs, L), int64))``
    with ``L = max_prompt_tokens + max_total_tokens``: the opening left-padded into the first ``max_prompt_tokens``
    slots, then the conversation (agent tokens and inserted tokens, in order), then right padding. SB3 agents
    read it as the text env's observation, only longer. Observations are fresh copies.

    ## Rewards

    * per turn (``turn_reward``, optional): at the step that ends an agent turn, the turn reward of the
      conversation so far (the reply to that turn included);
    * end of episode (``reward``): at the last step, the episode reward of the whole conversation.

    Both are reward plugins called in the conversation form (:mod:`rewards.conversation`): single-turn plugins
    score everything the agent said, conversation plugins read ``info["conversations"]``. The last step's reward
    is the sum of the two. Every other step's reward is 0.

    ## Episode End

    An agent turn ends at an end-of-turn token (``end_of_turn_token_ids``, SmolLM2's ``<|im_end|>``) or after
    ``max_turn_tokens`` tokens (the env then writes the end-of-turn token itself, as an inserted token). Then:

    * Termination: the agent finished ``max_turns`` turns (a conversation of that many turns is the task), or the
      responder's reply marked the task solved (e.g. the secret word was named) or over (a reply with an
      ``outcome``: a game ended, won or lost). With
      ``reply_after_last_turn`` the responder answers the last turn too; that reply is in ``info["conversation"]``
      for the reward, not in the observation.
    * Truncation: the ``max_total_tokens`` conversation slots are full (the agent's turn is cut there), or the
      reply does not fit with room for one more agent token. The conversation so far is still scored.

    Under ``autoreset_mode`` ``NEXT_STEP`` (default) the step after a row ended resets it (its action ignored,
    reward 0, flags False, the reset info as its info); under ``DISABLED`` an ended row ignores actions and repeats
    its flags until ``reset()`` (LM agents run rows in lockstep this way).

    ## Info

    Gymnasium's vector layout (``info[key]`` plus the ``info["_key"]`` mask). Every reset and step:

    * ``inserted_mask``: bool ``(num_envs, L)``, True on every observation token the env wrote (the opening,
      chat-template tokens, replies): the agent's own tokens are ``attention_mask & ~inserted_mask``; agents must
      not train on the rest;
    * ``turn``: int ``(num_envs,)``, the agent turns each row has finished (the turn its next token belongs to).

    Rows whose turn ended in this step also carry ``reply`` (the responder's text) and, with a turn reward,
    ``turn_reward_components`` (each part's unweighted value). Rows whose episode ended carry ``conversation``
    (a :class:`rewards.conversation.Conversation`) and ``reward_components``. Reset infos carry ``prompt`` and
    ``prompt_index``.

    ## Arguments

    * ``num_envs``, ``autoreset_mode`` (``NEXT_STEP`` or ``DISABLED``), ``render_mode`` (``None``, ``"ansi"`` or
      ``"rgb_array"``: one string or frame per row).
    * everything else: :class:`textenv.dialogue_task.DialogueTask`'s arguments (tokenizer, prompts, responder,
      responder_kwargs, reward, reward_kwargs, turn_reward, turn_reward_kwargs, max_turns, max_turn_tokens,
      max_total_tokens, max_prompt_tokens, reply_after_last_turn, chat_template, system_prompt,
      end_of_turn_token_ids, allowed_token_ids, vocab_size, prompt_truncation, trust_remote_code).

    ``reset`` options: ``reset_mask`` (bool ``(num_envs,)``), ``prompt_index`` (``num_envs`` ints). A bad action or
    option raises before anything changes; a responder or reward plugin that fails raises with the step undone
    (the rows' generators restored).
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
            mode = None
        if mode not in SUPPORTED_AUTORESET_MODES:
            raise ValueError(
                f"autoreset_mode={autoreset_mode!r}; expected one of {[m.value for m in SUPPORTED_AUTORESET_MODES]}"
            )
        self._set_render_mode(render_mode)
        self.task = task = DialogueTask(**task_kwargs)
        self.num_envs = n = int(num_envs)
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self.single_observation_space = task.text.observation_space()
        self.single_action_space = task.text.action_space()
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)

        self._input_ids = np.full((n, task.seq_len), task.pad_token_id, dtype=np.int64)
        self._attention_mask = np.zeros((n, task.seq_len), dtype=np.int64)
        self._inserted = np.zeros((n, task.seq_len), dtype=bool)
        self._lengths = np.zeros(n, dtype=np.int64)  # conversation slots used
        self._turns = np.zeros(n, dtype=np.int64)  # agent turns finished
        self._turn_starts = np.zeros(n, dtype=np.int64)  # conversation slot where the current agent turn started
        self._ended = np.zeros(n, dtype=bool)
        self._final_terminated = np.zeros(n, dtype=bool)
        self._final_truncated = np.zeros(n, dtype=bool)
        self._rngs: list[np.random.Generator] = [seeding.np_random()[0] for _ in range(n)]
        self._conversations: list[Conversation] = [Conversation(()) for _ in range(n)]
        self._prompt_indices: list[int] = [-1] * n
        self._needs_reset = True

    # -- reset --------------------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"options must be a dict or None, got {type(options).__name__}: {options!r}")
        options = dict(options or {})
        mask = self._reset_mask(options.pop("reset_mask", None))
        indices = options.pop("prompt_index", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; expected reset_mask, prompt_index")
        n = self.num_envs
        if indices is not None:
            if isinstance(indices, (str, bytes)) or not hasattr(indices, "__len__") or len(indices) != n:
                raise ValueError(f"options['prompt_index'] must hold {n} ints (one per row), got {indices!r}")
        seeds = self._per_row_seeds(seed)
        rows = np.flatnonzero(mask).tolist()
        rngs = {r: self._rngs[r] if seeds[r] is None else seeding.np_random(seeds[r])[0] for r in rows}
        saved = {r: self._rngs[r].bit_generator.state for r in rows if seeds[r] is None}
        try:
            choices = [
                self.task.text.choose_prompt(rngs[r], None, None if indices is None else indices[r]) for r in rows
            ]
        except Exception:
            for r, state in saved.items():
                self._rngs[r].bit_generator.state = state
            raise
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            super().reset(seed=int(seed))
        for r in rows:
            self._rngs[r] = rngs[r]
        infos: dict[str, Any] = {}
        self._reset_rows(rows, choices, infos)
        self._needs_reset = False
        self._put_step_infos(infos)
        return self._observation(), infos

    # the text vector env's checks of a reset mask and of per-row seeds (they read num_envs and _needs_reset only)
    _reset_mask = TextGenerationVectorEnv._reset_mask
    _per_row_seeds = TextGenerationVectorEnv._per_row_seeds

    def _reset_rows(
        self, rows: list[int], choices: list[tuple[np.ndarray, int, str, Any]], infos: dict[str, Any]
    ) -> None:
        task = self.task
        for row, (prompt_ids, index, text, reference) in zip(rows, choices):
            task.text.write_prompt(self._input_ids[row], self._attention_mask[row], prompt_ids)
            self._inserted[row] = self._attention_mask[row] > 0
            self._conversations[row] = Conversation(({"role": OTHER, "content": text},), (), reference)
            self._prompt_indices[row] = index
        self._lengths[rows] = self._turns[rows] = self._turn_starts[rows] = 0
        self._ended[rows] = self._final_terminated[rows] = self._final_truncated[rows] = False
        _put(infos, "prompt", rows, [choice[2] for choice in choices], self.num_envs)
        _put(infos, "prompt_index", rows, [choice[1] for choice in choices], self.num_envs)

    # -- step ---------------------------------------------------------------------------------------------------
    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded("step() called before reset(); call reset() first")
        task, n = self.task, self.num_envs
        tokens = task.text.check_actions(actions, n)
        waiting = np.flatnonzero(self._ended)
        rows = np.flatnonzero(~self._ended)
        p, budget = task.max_prompt_tokens, task.max_total_tokens

        # 1. this step's token per running row, and which rows' turns end (nothing is written yet)
        new_lengths = self._lengths[rows] + 1
        turn_sizes = new_lengths - self._turn_starts[rows]
        by_agent = task.is_end_of_turn[tokens[rows]]
        out_of_room = new_lengths >= budget
        turn_end = by_agent | (turn_sizes >= task.max_turn_tokens) | out_of_room
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)

        # 2. the ended turns: their messages, then ONE responder call for every row that gets a reply
        ended_turns = rows[turn_end].tolist()
        pending: dict[int, Conversation] = {}
        inserted: dict[int, list[int]] = {}
        for i in np.flatnonzero(turn_end).tolist():
            row = int(rows[i])
            start, end = p + self._turn_starts[row], p + self._lengths[row]
            turn_ids = [*self._input_ids[row, start:end].tolist(), int(tokens[row])]
            conversation = self._conversations[row]
            pending[row] = Conversation(
                (*conversation.messages, {"role": AGENT, "content": task.text.decode_ids(turn_ids)}),
                (*conversation.agent_token_ids, tuple(turn_ids)),
                conversation.reference,
            )
        last_turn = {row for row in ended_turns if pending[row].num_agent_turns >= task.max_turns}
        # rows whose turn the token budget cut (a last turn the agent closed itself at the budget is whole)
        cut = {
            int(rows[i])
            for i in np.flatnonzero(out_of_room).tolist()
            if not (int(rows[i]) in last_turn and by_agent[i])
        }
        repliers = [r for r in ended_turns if r not in cut and (r not in last_turn or task.reply_after_last_turn)]
        saved = {r: self._rngs[r].bit_generator.state for r in repliers}
        rewards = np.zeros(n, dtype=np.float64)
        infos: dict[str, Any] = {}
        try:
            replies = task.responder.respond([pending[r] for r in repliers], [self._rngs[r] for r in repliers])
            if len(replies) != len(repliers) or not all(isinstance(reply, Reply) for reply in replies):
                raise TypeError(f"the responder returned {replies!r:.200}; expected {len(repliers)} Reply objects")
            for row, reply in zip(repliers, replies):
                pending[row] = pending[row].with_message(OTHER, reply.text)
                if reply.solved or reply.outcome is not None:
                    pending[row] = Conversation(
                        pending[row].messages,
                        pending[row].agent_token_ids,
                        pending[row].reference,
                        reply.solved,
                        None if reply.outcome is None else dict(reply.outcome),
                    )
                    terminated[row] = True
                elif row not in last_turn:
                    ids = task.format.inserted(task.encode_reply(reply.text), bool(task.is_end_of_turn[tokens[row]]))
                    if self._lengths[row] + 1 + len(ids) >= budget:
                        truncated[row] = True  # the reply, and one more agent token, do not fit
                    else:
                        inserted[row] = ids
            for row in last_turn:
                terminated[row] = True
            for row in cut:
                terminated[row], truncated[row] = False, True
            ended = terminated | truncated
            # 3. rewards: the turn reward of every ended turn, the episode reward of every ended episode
            if task.turn_reward_model is not None and ended_turns:
                result = task.score(task.turn_reward_model, [pending[r] for r in ended_turns])
                rewards[ended_turns] += result.total
                self._put_components(infos, "turn_reward_components", ended_turns, result.components)
            ended_rows = np.flatnonzero(ended).tolist()
            if ended_rows:
                result = task.score(task.reward_model, [pending[r] for r in ended_rows])
                rewards[ended_rows] += result.total
                self._put_components(infos, "reward_components", ended_rows, result.components)
                _put(infos, "conversation", ended_rows, [pending[r] for r in ended_rows], n)
        except BaseException:
            for row, state in saved.items():
                self._rngs[row].bit_generator.state = state
            raise

        # 4. commit: the tokens, the inserted replies, the conversations
        slots = p + self._lengths[rows]
        self._input_ids[rows, slots] = tokens[rows]
        self._attention_mask[rows, slots] = 1
        self._lengths[rows] = new_lengths
        for row, conversation in pending.items():
            self._conversations[row] = conversation
            self._turns[row] += 1
            ids = inserted.get(row)
            if ids:
                start = p + self._lengths[row]
                self._input_ids[row, start : start + len(ids)] = ids
                self._attention_mask[row, start : start + len(ids)] = 1
                self._inserted[row, start : start + len(ids)] = True
                self._lengths[row] += len(ids)
            self._turn_starts[row] = self._lengths[row]
        if repliers:
            _put(infos, "reply", repliers, [pending[r].messages[-1]["content"] for r in repliers], n)

        if self.autoreset_mode is AutoresetMode.NEXT_STEP:
            if len(waiting):
                reset_rows = waiting.tolist()
                choices = [task.text.choose_prompt(self._rngs[r]) for r in reset_rows]
                self._reset_rows(reset_rows, choices, infos)
            self._ended = terminated | truncated
            self._put_step_infos(infos)
            return self._observation(), rewards, terminated, truncated, infos
        self._final_terminated |= terminated
        self._final_truncated |= truncated
        self._ended = self._final_terminated | self._final_truncated
        self._put_step_infos(infos)
        return self._observation(), rewards, self._final_terminated.copy(), self._final_truncated.copy(), infos

    def _put_components(
        self, infos: dict[str, Any], key: str, rows: list[int], components: dict[str, np.ndarray]
    ) -> None:
        n = self.num_envs
        nested = infos.setdefault(key, {})
        for name, values in components.items():
            _put(nested, name, rows, [float(v) for v in values], n)
        mask = infos.setdefault(f"_{key}", np.zeros(n, dtype=bool))
        mask[rows] = True

    def _put_step_infos(self, infos: dict[str, Any]) -> None:
        n = self.num_envs
        infos["inserted_mask"], infos["_inserted_mask"] = self._inserted.copy(), np.ones(n, dtype=bool)
        infos["turn"], infos["_turn"] = self._turns.copy(), np.ones(n, dtype=bool)

    # -- the rest -----------------------------------------------------------------------------------------------
    def _observation(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._input_ids.copy(), "attention_mask": self._attention_mask.copy()}

    def action_masks(self) -> np.ndarray:
        """``(num_envs, vocab_size)`` booleans: which tokens each row's ``step`` accepts."""
        return np.broadcast_to(self.task.text.allowed, (self.num_envs, self.task.vocab_size)).copy()

    def conversation(self, row: int) -> Conversation:
        """Row ``row``'s conversation so far (the agent's unfinished turn not included)."""
        return self._conversations[row]

    def text(self, row: int) -> str:
        """Row ``row``'s conversation as text, the agent's unfinished turn included."""
        task, p = self.task, self.task.max_prompt_tokens
        lines = [f"{m['role']}: {m['content']}" for m in self._conversations[row].messages]
        start, end = p + self._turn_starts[row], p + self._lengths[row]
        if end > start and not self._ended[row]:
            lines.append(f"{AGENT}: {task.text.decode(self._input_ids[row, start:end])} ...")
        return "\n".join(lines)

    def render(self) -> tuple[str, ...] | tuple[np.ndarray, ...] | None:
        """One entry per row, like ``SyncVectorEnv``: ``"ansi"`` the text, ``"rgb_array"`` its frame."""
        rendered = self._render_texts([self.text(row) for row in range(self.num_envs)])
        return None if rendered is None else tuple(rendered)

    @property
    def tokenizer(self) -> Any:
        return self.task.tokenizer
