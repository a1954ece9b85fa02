"""The parts of a multi-turn (dialogue) task shared by :class:`textenv.dialogue_env.DialogueEnv` and
:class:`textenv.dialogue_vector_env.DialogueVectorEnv`.

:class:`DialogueTask` wraps a :class:`textenv.task.TextTask` (tokenizer, openings, action checks, decoding, the
observation and action spaces) and adds the responder, the chat format, the turn and token budgets and the
per-turn reward. The episode-end reward is the ``TextTask``'s reward model, called in the conversation form
(:mod:`rewards.conversation`).

Observation layout: ``max_prompt_tokens`` left-padded opening slots (the opening as the chat template renders it,
ending with the agent's header), then ``max_total_tokens`` conversation slots that the agent's tokens and the
env-inserted tokens fill in order, then right padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import rewards
from rewards.conversation import Conversation, call_info
from textenv.chat_format import ChatFormat
from textenv.models import DEFAULT_MODEL
from textenv.responders import make_responder
from textenv.task import MAX_TOKENS, TextTask, check_size


class DialogueTask:
    """Tokenizer, openings, responder, rewards and budgets of one multi-turn task (see the module docstring).

    Args:
        tokenizer: a built-in model name, a local directory or hub id, or a tokenizer object.
        prompts: the openings (the other side's first message), any :func:`textenv.prompts.load_prompts`
            source; a prompt's ``reference`` is the task's hidden state (e.g. the secret word).
        responder: a name in :data:`textenv.responders.RESPONDERS` or a :class:`textenv.responders.Responder`.
        responder_kwargs: arguments of a responder given by name.
        reward: the end-of-episode reward spec (:func:`rewards.make`), called in the conversation form.
        reward_kwargs: its arguments.
        turn_reward: an optional per-turn reward spec, called after each agent turn (and its reply).
        turn_reward_kwargs: its arguments.
        max_turns: agent turns per episode.
        max_turn_tokens: token budget of one agent turn (its end-of-turn token included).
        max_total_tokens: conversation slots after the opening: agent and inserted tokens together.
        max_prompt_tokens: opening slots.
        reply_after_last_turn: the other side answers the agent's last turn too (the answer goes into the
            conversation the reward sees, not into the observation).
        chat_template: render the conversation with the tokenizer's chat template (the agent is the assistant).
        system_prompt: the agent's system message (chat template only).
        end_of_turn_token_ids: tokens that end the agent's turn (default: the tokenizer's EOS).
        allowed_token_ids, vocab_size, prompt_truncation, trust_remote_code: as :class:`textenv.task.TextTask`.
    """

    def __init__(
        self,
        tokenizer: Any = DEFAULT_MODEL,
        prompts: Any = None,
        responder: Any = "scripted",
        responder_kwargs: dict[str, Any] | None = None,
        reward: Any = "user_sentiment",
        reward_kwargs: dict[str, Any] | None = None,
        turn_reward: Any = None,
        turn_reward_kwargs: dict[str, Any] | None = None,
        max_turns: int = 3,
        max_turn_tokens: int = 24,
        max_total_tokens: int = 160,
        max_prompt_tokens: int = 64,
        reply_after_last_turn: bool = True,
        chat_template: bool = True,
        system_prompt: str | None = None,
        end_of_turn_token_ids: Sequence[int] | None = None,
        allowed_token_ids: Any = None,
        vocab_size: int | None = None,
        prompt_truncation: str = "left",
        trust_remote_code: bool = False,
    ) -> None:
        check_size("max_turns", max_turns, MAX_TOKENS)
        check_size("max_turn_tokens", max_turn_tokens, MAX_TOKENS)
        self.max_turns, self.max_turn_tokens = int(max_turns), int(max_turn_tokens)
        self.text = TextTask(
            tokenizer=tokenizer,
            prompts=prompts,
            reward=reward,
            reward_kwargs=reward_kwargs,
            max_new_tokens=max_total_tokens,
            max_prompt_tokens=max_prompt_tokens,
            prompt_truncation=prompt_truncation,
            chat_template=chat_template,
            system_prompt=system_prompt,
            eos_token_ids=end_of_turn_token_ids,
            allowed_token_ids=allowed_token_ids,
            vocab_size=vocab_size,
            trust_remote_code=trust_remote_code,
        )
        text = self.text
        if not text.eos_token_ids:
            raise ValueError("the tokenizer has no EOS token; pass end_of_turn_token_ids")
        self.responder = make_responder(responder, **(responder_kwargs or {}))
        self.reward_model = text.reward_model
        self.turn_reward_model = (
            None if turn_reward is None else rewards.make(turn_reward, **(turn_reward_kwargs or {}))
        )
        self.reply_after_last_turn = bool(reply_after_last_turn)
        self.format = (
            ChatFormat.from_chat_template(text.tokenizer, text.eos_token_ids[0]) if chat_template else ChatFormat()
        )
        self.max_prompt_tokens = text.max_prompt_tokens
        self.max_total_tokens = text.max_new_tokens
        self.seq_len = text.seq_len
        self.pad_token_id = text.pad_token_id
        self.vocab_size = text.vocab_size
        self.is_end_of_turn = text.is_eos
        self.tokenizer = text.tokenizer

    # the names the LM agents read off a task, as on TextTask
    @property
    def prompts(self) -> list[Any]:
        return self.text.prompts

    @property
    def allowed(self) -> np.ndarray:
        return self.text.allowed

    @property
    def max_new_tokens(self) -> int:
        """The agent's steps are bounded by the conversation slots."""
        return self.text.max_new_tokens

    def encode_reply(self, text: str) -> list[int]:
        """Token ids of a reply (no special tokens added), checked against the action space's size."""
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if ids and max(ids) >= self.vocab_size:
            raise ValueError(f"the reply {text[:60]!r} holds token id {max(ids)}, outside vocab_size={self.vocab_size}")
        return ids

    def score(self, model: rewards.RewardModel, conversations: Sequence[Conversation]) -> rewards.RewardResult:
        """One batched call of a reward model in the conversation form."""
        prompts, completions, info = call_info(conversations)
        return model.score(prompts, completions, **info)
