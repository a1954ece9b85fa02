"""The conversation form of the reward-plugin protocol, and the built-in conversation plugins.

A single-turn plugin is ``(prompts, completions, **info) -> Sequence[float]``. A multi-turn environment
(:class:`textenv.dialogue_env.DialogueEnv`) calls every plugin in that same form, one entry per conversation:

* ``prompts[i]``: the conversation's opening message (what the other side said first);
* ``completions[i]``: everything the agent said, its turns joined by newlines;
* ``info["completion_ids"][i]``: the agent's token ids (all turns, end-of-turn tokens included);
* ``info["references"][i]``: the task's hidden reference (e.g. the secret word), or ``None``;
* ``info["conversations"][i]``: the whole exchange as a :class:`Conversation`.

So single-turn plugins keep working unchanged (they score the agent's side and ignore ``conversations``), and a
*conversation plugin* is any plugin that reads ``info["conversations"]``. The built-in ones below refuse a call
without it, naming what they need.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewards.registry import register

AGENT = "assistant"  # the role of the agent's messages
OTHER = "user"  # the role of the other side's messages (the responder: a simulated user, a game master)


@dataclass(frozen=True)
class Conversation:
    """One exchange between the agent and the other side, in chat-message form.

    Attributes:
        messages: ``({"role": "user" | "assistant", "content": str}, ...)`` in order; the first is the opening
            (role ``"user"``: the other side speaks first). The agent's messages have role ``"assistant"``.
        agent_token_ids: the token ids of each agent turn (its end-of-turn token included when it wrote one).
        reference: the task's hidden reference (the secret word of a guessing game), or ``None``.
        solved: whether the other side declared the task's goal reached (a terminal state of the task).
        outcome: the task's result as the other side reported it when the task ended (JSON-like data, e.g. a
            game's ``{"reward": 1.0, "reason": ...}``), or ``None`` while it goes on.
    """

    messages: tuple[dict[str, str], ...]
    agent_token_ids: tuple[tuple[int, ...], ...] = ()
    reference: str | None = None
    solved: bool = False
    outcome: dict[str, Any] | None = None

    @property
    def opening(self) -> str:
        return self.messages[0]["content"] if self.messages else ""

    @property
    def agent_messages(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == AGENT]

    @property
    def other_messages(self) -> list[str]:
        """The other side's messages, the opening included."""
        return [m["content"] for m in self.messages if m["role"] == OTHER]

    @property
    def num_agent_turns(self) -> int:
        return len(self.agent_token_ids)

    @property
    def agent_text(self) -> str:
        return "\n".join(self.agent_messages)

    @property
    def last_reply(self) -> str:
        """The other side's last message that answers the agent (``""`` when it has not answered yet)."""
        seen_agent = False
        last = ""
        for message in self.messages:
            if message["role"] == AGENT:
                seen_agent = True
            elif seen_agent:
                last = message["content"]
        return last

    def with_message(self, role: str, content: str) -> Conversation:
        return Conversation(
            (*self.messages, {"role": role, "content": content}),
            self.agent_token_ids,
            self.reference,
            self.solved,
            self.outcome,
        )


def conversations_of(info: dict[str, Any], plugin: str) -> list[Conversation]:
    """``info["conversations"]``, or a ``ValueError`` naming the plugin that needs it."""
    conversations = info.get("conversations")
    if conversations is None:
        raise ValueError(
            f"the {plugin!r} reward scores conversations and needs info['conversations'] (a list of "
            "rewards.conversation.Conversation); use it with a multi-turn env such as MossChat-v0"
        )
    return list(conversations)


def call_info(conversations: Sequence[Conversation]) -> tuple[list[str], list[str], dict[str, Any]]:
    """``(prompts, completions, info)`` of the conversation form for a batch of conversations."""
    prompts = [c.opening for c in conversations]
    completions = [c.agent_text for c in conversations]
    info = {
        "completion_ids": [[t for turn in c.agent_token_ids for t in turn] for c in conversations],
        "references": [c.reference for c in conversations],
        "conversations": list(conversations),
    }
    return prompts, completions, info


@register("user_sentiment")
class UserSentimentReward:
    """VADER compound sentiment of the other side's last reply to the agent (how the user feels at the end).

    A conversation plugin: needs ``info["conversations"]``. A conversation in which the other side never
    answered the agent scores 0 (VADER's score of empty text).

    Range:
        [-1, 1].
    """

    def __init__(self) -> None:
        from rewards.builtin.sentiment import SentimentReward

        self._sentiment = SentimentReward()

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
        replies = [c.last_reply for c in conversations_of(info, "user_sentiment")]
        return self._sentiment([""] * len(replies), replies)

    def __repr__(self) -> str:
        return "UserSentimentReward()"


@register("agent_tokens")
def agent_tokens(prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
    """The number of tokens the agent wrote in the whole conversation (end-of-turn tokens included); give it a
    negative weight to make a length cost.

    A conversation plugin: needs ``info["conversations"]``.

    Range:
        [0, total token budget].
    """
    return [float(sum(len(turn) for turn in c.agent_token_ids)) for c in conversations_of(info, "agent_tokens")]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@register("guessed_word")
class GuessedWordReward:
    """Reward for naming the secret word (``reference``): ``1 - turn_cost * k`` when the agent's ``k``-th turn
    (0-based) is the first one that guesses it, 0 when no turn does.

    With ``candidates`` (the words the game takes as guesses, e.g. every animal of a guess-the-animal game) a turn's
    guess is the *first* candidate it names (as a whole word, case-insensitive) and only that one counts: listing
    every candidate in one turn is one guess, the first listed, so the task pays for finding the word, not for
    naming them all. Without ``candidates`` a turn guesses the secret when it names it anywhere.

    A conversation plugin: needs ``info["conversations"]`` whose ``reference`` holds the secret word.

    Range:
        [0, 1] for ``turn_cost * max_turns <= 1`` (a late guess never scores below 0).

    Arguments:
        turn_cost: reward lost per agent turn before the naming turn (default 0.1): fewer turns are better.
        candidates: the words that count as guesses: a list of single words, or the path of a JSON file holding a
            list of them or an object whose keys they are (e.g. a word-game responder's attributes file). Read as
            data. Default ``None``: any mention of the secret counts.
    """

    def __init__(self, turn_cost: float = 0.1, candidates: Sequence[str] | str | None = None) -> None:
        if isinstance(turn_cost, bool) or not isinstance(turn_cost, numbers.Real) or not 0 <= turn_cost < math.inf:
            raise ValueError(f"turn_cost={turn_cost!r}; expected a finite number >= 0")
        self.turn_cost = float(turn_cost)
        self.candidates = None if candidates is None else read_candidates(candidates)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
        scores = []
        for conversation in conversations_of(info, "guessed_word"):
            secret = (conversation.reference or "").lower()
            if not secret:
                raise ValueError("the 'guessed_word' reward needs each conversation's reference (the secret word)")
            if self.candidates is None:
                turn = first_naming_turn(conversation.agent_messages, secret)
            else:
                if secret not in self.candidates:
                    raise ValueError(f"the secret word {secret!r} is not one of the guessed_word candidates")
                turn = first_guessing_turn(conversation.agent_messages, secret, self.candidates)
            scores.append(0.0 if turn is None else max(0.0, 1.0 - self.turn_cost * turn))
        return scores

    def __repr__(self) -> str:
        shown = "" if self.candidates is None else f", candidates={len(self.candidates)} words"
        return f"GuessedWordReward(turn_cost={self.turn_cost:g}{shown})"


def read_candidates(candidates: Sequence[str] | str | os.PathLike) -> frozenset[str]:
    """The guess words of :class:`GuessedWordReward`: a list of single words, or a JSON file holding a list of them
    or an object whose keys they are; lower-cased."""
    where = "candidates"
    if isinstance(candidates, (str, os.PathLike)):
        from textenv.files import parse_json

        path = Path(candidates)
        if not path.is_file():
            raise ValueError(f"candidates={str(candidates)!r}: no such file (expected a list of words or a JSON file)")
        where, candidates = str(path), parse_json(path.read_bytes(), str(path))
        if isinstance(candidates, dict):
            candidates = list(candidates)
    if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence) or not candidates:
        raise ValueError(f"{where}: expected a non-empty list of words, got {candidates!r:.80}")
    words = [str(word).lower() for word in candidates if isinstance(word, str)]
    if len(words) != len(candidates) or any(_words(word) != [word] for word in words):
        raise ValueError(f"{where}: expected single words (letters only), got {list(candidates)!r:.120}")
    return frozenset(words)


def named_guess(message: str, candidates: Collection[str]) -> str | None:
    """The first of ``candidates`` that ``message`` names as a whole word (case-insensitive): the message's guess."""
    return next((word for word in _words(message) if word in candidates), None)


def first_guessing_turn(messages: Sequence[str], secret: str, candidates: Collection[str]) -> int | None:
    """Index of the first message whose guess (:func:`named_guess`) is ``secret``, or ``None``."""
    secret = secret.lower()
    return next((i for i, message in enumerate(messages) if named_guess(message, candidates) == secret), None)


def first_naming_turn(messages: Sequence[str], secret: str) -> int | None:
    """Index of the first message that names ``secret`` as a whole word (case-insensitive), or ``None``."""
    secret = secret.lower()
    for index, message in enumerate(messages):
        if secret in _words(message):
            return index
    return None
