"""The other side of a multi-turn episode: what answers the agent after each of its turns.

A :class:`Responder` gets a batch of conversations (every row of a vector env whose agent turn just ended) and
returns one :class:`Reply` each, drawing any randomness from the rows' own generators, so that a seeded env
replays the same conversations. Three come with textenv:

* :class:`ScriptedResponder`: fixed replies in order (tests, examples);
* :class:`WordGameResponder`: the game master of a guessing game; knows the secret word (the opening's
  ``reference``) and its attributes, answers yes/no and says when the word is named (the task's terminal state);
* :class:`SimulatedUser`: a real causal LM (SmolLM2-135M-Instruct by default) playing a user under a persona system
  prompt; one batched, KV-cached ``generate`` per call for all rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rewards.conversation import AGENT, OTHER, Conversation, first_naming_turn, named_guess
from textenv.files import parse_json
from textenv.models import DEFAULT_MODEL

DATA_DIR = Path(__file__).with_name("data")
# SmolLM2-135M-Instruct echoes meta-instructions of a persona ("stay in character and answer the assistant's last
# message") back as its reply when the agent writes noise; this persona holds none.
DEFAULT_PERSONA = (
    "You are a person talking to an assistant. You are upset: {opening} Reply to the assistant in one short sentence."
)


@dataclass(frozen=True)
class Reply:
    """The other side's answer to one agent turn.

    Attributes:
        text: the reply's text (the env tokenises it and inserts it into the observation).
        solved: the task's goal is reached (a terminal state: the episode ends, terminated, after this reply).
        outcome: the task's result, when this reply ends the task whether or not its goal was reached (a game
            over: ``{"reward": ..., ...}``, JSON-like). A reply with an outcome ends the episode, terminated, like
            ``solved``; the outcome goes into :attr:`rewards.conversation.Conversation.outcome` for the reward.
    """

    text: str
    solved: bool = False
    outcome: dict[str, Any] | None = None


class Responder:
    """Base class: answer a batch of conversations, each ending with the agent's latest message."""

    def respond(self, conversations: Sequence[Conversation], rngs: Sequence[np.random.Generator]) -> list[Reply]:
        """One :class:`Reply` per conversation; ``rngs[i]`` is row ``i``'s generator (draw randomness from it only)."""
        raise NotImplementedError


class ScriptedResponder(Responder):
    """Replies from a script: the answer to the agent's ``k``-th turn is ``replies[k % len(replies)]``; with
    ``shuffle`` it is drawn uniformly from ``replies`` with the row's generator instead.

    Arguments:
        replies: the reply texts (non-empty strings).
        shuffle: draw each reply at random (seeded by the env) instead of in order.
        solve_word: if given, a reply to an agent turn naming this word (as a whole word) marks the task solved.
    """

    def __init__(self, replies: Sequence[str] = ("ok",), shuffle: bool = False, solve_word: str | None = None) -> None:
        if isinstance(replies, str) or not replies or not all(isinstance(r, str) and r.strip() for r in replies):
            raise ValueError(f"replies must be a non-empty list of non-empty strings, got {replies!r}")
        self.replies = tuple(replies)
        self.shuffle = bool(shuffle)
        self.solve_word = solve_word

    def respond(self, conversations: Sequence[Conversation], rngs: Sequence[np.random.Generator]) -> list[Reply]:
        out = []
        for conversation, rng in zip(conversations, rngs):
            turn = conversation.num_agent_turns - 1
            pick = int(rng.integers(len(self.replies))) if self.shuffle else turn % len(self.replies)
            last = conversation.agent_messages[-1:]
            solved = self.solve_word is not None and first_naming_turn(last, self.solve_word) == 0
            text = self.replies[pick]
            out.append(Reply(text, solved))
        return out


class WordGameResponder(Responder):
    """The game master of guess-the-word: it knows the secret word (the conversation's ``reference``).

    A turn's guess is the first word of the game (a key of ``attributes``) it names; only that one counts, so
    naming several words in one turn is one guess, the first named. To each agent turn it answers ``correct`` (and
    the task is solved) when the turn's guess is the secret word, else ``yes`` when the turn names one of the
    secret's attributes, else ``no``. (The ``guessed_word`` reward with the same words as ``candidates`` pays by the
    same rule.)

    Arguments:
        attributes: ``{word: [attribute, ...]}`` or a path to such a JSON file (default: the package's
            ``data/guess_words/attributes.json``). Read as data.
        yes, no, correct: the reply texts (``correct`` may hold ``{secret}``).
    """

    def __init__(
        self,
        attributes: Mapping[str, Sequence[str]] | str | Path | None = None,
        yes: str = "yes",
        no: str = "no",
        correct: str = "correct",
    ) -> None:
        if attributes is None:
            attributes = DATA_DIR / "guess_words" / "attributes.json"
        if isinstance(attributes, (str, Path)):
            attributes = parse_json(Path(attributes).read_bytes(), str(attributes))
        if not isinstance(attributes, Mapping) or not attributes:
            raise ValueError(
                f"attributes must be a non-empty {{word: [attribute, ...]}} mapping, got {attributes!r:.100}"
            )
        self.attributes = {
            str(word).lower(): tuple(str(a).lower() for a in attrs) for word, attrs in attributes.items()
        }
        self.yes, self.no, self.correct = yes, no, correct

    def respond(self, conversations: Sequence[Conversation], rngs: Sequence[np.random.Generator]) -> list[Reply]:
        out = []
        for conversation in conversations:
            secret = (conversation.reference or "").lower()
            if secret not in self.attributes:
                raise ValueError(
                    f"the secret word {conversation.reference!r} has no entry in the responder's attributes "
                    f"(known: {sorted(self.attributes)[:8]}...)"
                )
            last = conversation.agent_messages[-1]
            if named_guess(last, self.attributes) == secret:
                out.append(Reply(self.correct.format(secret=secret), solved=True))
            elif any(first_naming_turn([last], attribute) == 0 for attribute in self.attributes[secret]):
                out.append(Reply(self.yes))
            else:
                out.append(Reply(self.no))
        return out


class SimulatedUser(Responder):
    """A causal LM playing the user: it sees the conversation from the user's side (its own messages as the
    assistant's, the agent's as the user's) under a persona system prompt, and samples its reply.

    All rows that need a reply are answered by ONE batched ``generate`` call (left-padded, KV-cached). Its sampling
    is seeded from the rows' generators: the same env seed gives the same replies (on the same machine and batch).

    Arguments:
        model: a model name or directory (:func:`textenv.load_causal_lm`; default SmolLM2-135M-Instruct), or a
            ``(model, tokenizer)`` pair.
        persona: the system prompt; ``{opening}`` is replaced by the conversation's opening message.
        max_new_tokens: the longest reply, in the user model's tokens.
        temperature, top_k, top_p: sampling settings. The default top-k of 50 costs one ``topk`` per token; a top-p
            below 1 sorts the whole vocabulary at every token (about 4x the generate time of a 135M model on CPU).
        device: where the model runs (default CPU).
    """

    def __init__(
        self,
        model: Any = DEFAULT_MODEL,
        persona: str = DEFAULT_PERSONA,
        max_new_tokens: int = 24,
        temperature: float = 0.7,
        top_k: int = 50,
        top_p: float = 1.0,
        device: str | None = None,
    ) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        bad_top_k = isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0
        if not temperature > 0 or not 0 < top_p <= 1 or bad_top_k:
            raise ValueError(
                f"temperature must be > 0, top_k an int >= 0 and top_p in (0, 1], got {temperature!r}, {top_k!r}, "
                f"{top_p!r}"
            )
        self.model_name = model if isinstance(model, (str, Path)) else None
        self._model, self._tokenizer = (None, None) if self.model_name is not None else model
        self.persona = persona
        self.max_new_tokens = max_new_tokens
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, float(top_p)
        self.device = device
        self.generate_calls = 0  # batched generate calls so far (benchmarks and tests read it)

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from textenv.models import load_causal_lm, load_tokenizer

            self._tokenizer = load_tokenizer(str(self.model_name))
            self._model = load_causal_lm(str(self.model_name), device=self.device).eval()
        return self._model, self._tokenizer

    def user_view(self, conversation: Conversation) -> list[dict[str, str]]:
        """The conversation as the user model sees it: persona, then roles swapped."""
        swap = {AGENT: "user", OTHER: "assistant"}
        system = {"role": "system", "content": self.persona.replace("{opening}", conversation.opening)}
        return [system, *({"role": swap[m["role"]], "content": m["content"]} for m in conversation.messages)]

    def respond(self, conversations: Sequence[Conversation], rngs: Sequence[np.random.Generator]) -> list[Reply]:
        import torch

        if not conversations:
            return []
        model, tokenizer = self._load()
        texts = [
            tokenizer.apply_chat_template(self.user_view(c), tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]
        previous_side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tokenizer.padding_side = previous_side
        device = next(model.parameters()).device
        # one seed for the batch, drawn from every replying row's generator
        seed = int(np.random.SeedSequence([int(rng.integers(2**32)) for rng in rngs]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            generated = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                do_sample=True,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                use_cache=True,
            )
        self.generate_calls += 1
        new_tokens = generated[:, batch["input_ids"].shape[1] :].tolist()
        replies = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [Reply(_first_line(text) or "...") for text in replies]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.model_name is not None:  # reloaded by name in the new process
            state["_model"] = state["_tokenizer"] = None
        return state


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


RESPONDERS: dict[str, type[Responder]] = {
    "scripted": ScriptedResponder,
    "word_game": WordGameResponder,
    "simulated_user": SimulatedUser,
}


def make_responder(spec: Any, **kwargs: Any) -> Responder:
    """A responder from a name (:data:`RESPONDERS`) and its keyword arguments, or a :class:`Responder` as is."""
    if isinstance(spec, Responder):
        if kwargs:
            raise TypeError(f"responder_kwargs {sorted(kwargs)} given with a ready responder object")
        return spec
    if isinstance(spec, str) and spec in RESPONDERS:
        return RESPONDERS[spec](**kwargs)
    raise ValueError(f"responder={spec!r}; expected one of {sorted(RESPONDERS)} or a textenv.responders.Responder")
