"""TextArena single-player games, offline: loading a game (or one line saying why not), playing it with its own
random state, and the two parts a dialogue env needs -- a :class:`GamePool` of openings and a
:class:`TextArenaResponder` that plays the agent's turns in the game.

Offline means: nothing here reaches the network. TextArena's word games call ``nltk.download`` when their module
is imported or built; while a game loads, ``nltk.download`` is replaced by a check of the local NLTK data, so a
game whose data is not installed fails at once with :class:`GameUnavailableError` naming the data (and the command
that installs it) instead of a network call. Games judged by an LLM need an API key; without one the game's own
message is raised the same way. TextArena's games draw from Python's global ``random``; every call into a game runs
with that game's own saved generator state (:class:`GameSession`), so two games, or a game and the caller, never
share a stream, and a game replays exactly from its seed and its actions.

A game instance is named by JSON data, its *reference*: ``{"game": id, "game_kwargs": {...}, "seed": s}``. The
responder rebuilds any game position by replaying the conversation's agent turns from the reference (it keeps the
live games of ongoing conversations, so in practice it replays only after a restart): the episode carries
everything the game needs as data.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import random
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from rewards.conversation import Conversation
from textenv.extras import import_extra
from textenv.prompts import Prompt, PromptPool
from textenv.responders import Reply, Responder

FEATURE = "textenv/TextArena-v0"
EXTRA = "tasks"
SPLITS = ("train", "test")
#: the test split's game seeds start here; the train split's start at 0
TEST_SEED_START = 2**30
#: games an unfinished conversation may hold in a responder's cache
MAX_LIVE_GAMES = 1024
#: where NLTK keeps each kind of data (for the local check that replaces ``nltk.download``)
_NLTK_FOLDERS = ("corpora", "taggers", "tokenizers", "chunkers", "misc", "models", "sentiment", "stemmers", "")


class GameUnavailableError(ValueError):
    """A TextArena game cannot be played here (unknown, multi-player, needs data or a key): one line saying why."""


class NotSinglePlayerError(GameUnavailableError):
    """The TextArena game is for two or more players."""


def textarena() -> ModuleType:
    """The ``textarena`` module, or :class:`textenv.extras.MissingExtraError` naming the extra."""
    return import_extra("textarena", EXTRA, FEATURE)


@contextlib.contextmanager
def _offline_nltk(game: str) -> Iterator[None]:
    """``nltk.download`` replaced by a local check while a game loads: present data passes, missing data raises
    :class:`GameUnavailableError` naming it, and nothing is downloaded."""
    import nltk

    def local_only(info_or_id: Any = None, *args: Any, **kwargs: Any) -> bool:
        wanted = [info_or_id] if isinstance(info_or_id, str) else list(info_or_id or [])
        missing = [name for name in wanted if not _nltk_has(nltk, name)]
        if missing:
            raise GameUnavailableError(
                f"TextArena game {game!r} needs the NLTK data {', '.join(map(repr, missing))}, which is not installed "
                f"here, and textenv downloads nothing at run time: python -m nltk.downloader {' '.join(missing)}"
            )
        return True

    download = nltk.download
    nltk.download = local_only
    try:
        yield
    except LookupError as err:  # NLTK data read without asking for a download first
        first = next((line.strip() for line in str(err).splitlines() if "Resource" in line), str(err).strip())
        raise GameUnavailableError(
            f"TextArena game {game!r} needs NLTK data that is not installed here: {first}"
        ) from None
    finally:
        nltk.download = download


def _nltk_has(nltk: Any, name: str) -> bool:
    for folder in _NLTK_FOLDERS:
        for suffix in ("", ".zip"):
            try:
                nltk.data.find(f"{folder}/{name}{suffix}" if folder else f"{name}{suffix}")
                return True
            except LookupError:
                continue
    return False


def _load_game(game: str, game_kwargs: Mapping[str, Any]) -> Any:
    """A new, not yet reset TextArena env of ``game`` with the action wrappers TextArena registers for it (its
    observation wrappers are left out: the dialogue env shows each turn's new messages itself)."""
    ta = textarena()
    from textarena.envs.registration import ENV_REGISTRY

    if not isinstance(game, str) or game not in ENV_REGISTRY:
        raise GameUnavailableError(
            f"unknown TextArena game {game!r}; `textenv envs textarena` lists the single-player games that run here"
        )
    if not isinstance(game_kwargs, Mapping):
        raise GameUnavailableError(f"game_kwargs must be a dict of {game} arguments, got {game_kwargs!r}")
    spec = ENV_REGISTRY[game]
    try:
        with _offline_nltk(game):
            if isinstance(spec.entry_point, str):
                module, _, name = spec.entry_point.partition(":")
                entry_point = getattr(importlib.import_module(module), name)
            else:
                entry_point = spec.entry_point
            env = entry_point(**{**spec.kwargs, **game_kwargs})
    except GameUnavailableError:
        raise
    except TypeError as err:
        raise GameUnavailableError(f"TextArena game {game!r} refused game_kwargs {dict(game_kwargs)}: {err}") from None
    except ValueError as err:
        if "api key" in str(err).lower() or "api_key" in str(err).lower():
            raise GameUnavailableError(f"TextArena game {game!r} needs an API key: {err}") from None
        raise GameUnavailableError(f"TextArena game {game!r} could not be built: {err}") from None
    except (ImportError, SyntaxError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else ""
        raise GameUnavailableError(
            f"TextArena game {game!r} does not load here: {type(err).__name__}: {reason}"
        ) from None
    for wrapper in spec.default_wrappers or ():
        if isinstance(wrapper, type) and issubclass(wrapper, ta.ActionWrapper):
            env = wrapper(env)
    return env


class GameSession:
    """One TextArena game played from a seed, with its own ``random`` state.

    Args:
        reference: ``{"game": id, "game_kwargs": {...}, "seed": int}``.
    """

    def __init__(self, reference: Mapping[str, Any]) -> None:
        self.game = str(reference["game"])
        self.env = _load_game(self.game, reference.get("game_kwargs") or {})
        self._random_state = random.Random(int(reference["seed"])).getstate()
        self.turns = 0
        self.done = False
        try:
            with self._own_random():
                self.env.reset(num_players=1, seed=int(reference["seed"]))
        except GameUnavailableError:
            raise
        except AssertionError as err:  # TextArena's multi-player states assert their player count
            raise NotSinglePlayerError(
                f"TextArena game {self.game!r} is not a single-player game ({err}); textenv plays single-player games"
            ) from None
        except Exception as err:
            raise GameUnavailableError(
                f"TextArena game {self.game!r} could not start: {type(err).__name__}: {err}"
            ) from None
        ta = textarena()
        if not isinstance(self.env.state, ta.SinglePlayerState):
            raise NotSinglePlayerError(
                f"TextArena game {self.game!r} is a {type(self.env.state).__name__} game, not single-player; "
                "textenv plays single-player games"
            )
        self.opening = self._new_messages() or f"[{self.game}]"

    @contextlib.contextmanager
    def _own_random(self) -> Iterator[None]:
        outer = random.getstate()
        random.setstate(self._random_state)
        try:
            with _offline_nltk(self.game):
                yield
        finally:
            self._random_state = random.getstate()
            random.setstate(outer)

    def _new_messages(self) -> str:
        """The game's messages to the player since the last call, without the echo of the player's own action."""
        ta = textarena()
        with self._own_random():
            _, messages = self.env.get_observation()
        if isinstance(messages, str):
            return messages.strip()
        texts = (str(text).strip() for _, text, kind in messages if kind != ta.ObservationType.PLAYER_ACTION)
        return "\n".join(text for text in texts if text)

    def step(self, action: str) -> Reply:
        """Play ``action`` (the agent's turn text, stripped); the reply holds the game's new messages, and, when the
        game is over, an outcome with the game's reward."""
        if self.done:
            raise RuntimeError(f"the {self.game} game is over; no more actions")
        with self._own_random():
            done, _ = self.env.step(action.strip())
        self.turns += 1
        text = self._new_messages()
        if not done:
            return Reply(text or "(no message)")
        self.done = True
        state = self.env.state
        reward = float((state.rewards or {}).get(0, 0.0))
        reason = str(state.game_info.get(0, {}).get("reason") or "")
        text = "\n".join(part for part in (text, f"Game over: {reason}" if reason else "Game over.") if part)
        return Reply(text, outcome={"game": self.game, "reward": reward, "reason": reason, "turns": self.turns})


def game_ids() -> list[str]:
    """TextArena's game ids, without the ``-raw`` and ``-train`` variants (the same games, other wrappers)."""
    textarena()
    from textarena.envs.registration import ENV_REGISTRY

    return [game for game in ENV_REGISTRY if not game.endswith("-raw") and "-train" not in game]


def probe_game(game: str) -> GameUnavailableError | None:
    """``None`` when ``game`` is a single-player game that runs here, else the error saying why not (the game is
    built and started with seed 0, offline)."""
    try:
        GameSession({"game": game, "seed": 0})
    except GameUnavailableError as err:
        return err
    return None


def read_reference(reference: Any) -> dict[str, Any]:
    """The game reference ``{"game", "game_kwargs", "seed"}`` of a conversation (JSON text or a dict)."""
    data = json.loads(reference) if isinstance(reference, str) else reference
    if not isinstance(data, Mapping) or "game" not in data or "seed" not in data:
        raise ValueError(
            f"the reference {reference!r:.80} is not a TextArena game reference: expected JSON with 'game' and 'seed'"
        )
    return dict(data)


def make_reference(game: str, game_kwargs: Mapping[str, Any], seed: int) -> str:
    return json.dumps({"game": game, "game_kwargs": dict(game_kwargs), "seed": int(seed)}, sort_keys=True)


class GamePool(PromptPool):
    """The openings of one split of a game's seeds: prompt ``i`` is the game's first message for seed ``i``
    (train) or ``TEST_SEED_START + i`` (test), with the game reference as its ``reference``. Seeds of the two
    splits never meet. The first opening is made when the pool is built, so a game that cannot run here fails
    at once.

    Args:
        game: a TextArena id (``"GuessTheNumber-v0"``).
        game_kwargs: arguments overriding the ones TextArena registers for the id.
        split: ``"train"`` or ``"test"``.
        size: how many seeds the split holds.
    """

    def __init__(self, game: str, game_kwargs: Mapping[str, Any] | None, split: str, size: int) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; expected one of {SPLITS}")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= TEST_SEED_START:
            raise ValueError(f"the {split} split's size must be an int in [1, {TEST_SEED_START}], got {size!r}")
        self.game, self.game_kwargs, self.split, self.size = game, dict(game_kwargs or {}), split, size
        self[0]

    def seed(self, index: int) -> int:
        return index + (TEST_SEED_START if self.split == "test" else 0)

    def generate(self, index: int) -> Prompt:
        reference = make_reference(self.game, self.game_kwargs, self.seed(index))
        return Prompt(GameSession(read_reference(reference)).opening, reference)

    def __reduce__(self) -> tuple[Any, ...]:
        return (GamePool, (self.game, self.game_kwargs, self.split, self.size))


class TextArenaResponder(Responder):
    """The game as the other side of a dialogue env: each agent turn is the game action, the reply is what the game
    says back, and the game's end is a reply with an ``outcome`` (``{"reward": ..., "reason": ..., "turns": ...}``).

    Each conversation's ``reference`` names its game instance (see :class:`GamePool`); the responder keeps the live
    game of every unfinished conversation (at most :data:`MAX_LIVE_GAMES`), keyed by the reference and the agent
    turns so far, and rebuilds one it does not hold by replaying those turns. Games draw from their own random
    state, so the rows' generators are not used and a conversation replays exactly.
    """

    def __init__(self) -> None:
        self._live: OrderedDict[tuple[str, tuple[str, ...]], GameSession] = OrderedDict()

    def respond(self, conversations: Sequence[Conversation], rngs: Sequence[np.random.Generator]) -> list[Reply]:
        replies = []
        for conversation in conversations:
            actions = tuple(conversation.agent_messages)
            reference = str(conversation.reference)
            session = self._live.pop((reference, actions[:-1]), None) or self._replay(reference, actions[:-1])
            reply = session.step(actions[-1])
            if not session.done:
                self._live[(reference, actions)] = session
                while len(self._live) > MAX_LIVE_GAMES:
                    self._live.popitem(last=False)
            replies.append(reply)
        return replies

    @staticmethod
    def _replay(reference: str, actions: Sequence[str]) -> GameSession:
        session = GameSession(read_reference(reference))
        for action in actions:
            session.step(action)
        return session

    def __getstate__(self) -> dict[str, Any]:
        return {"_live": OrderedDict()}  # live games stay in this process; a copy replays what it needs

    def __repr__(self) -> str:
        return f"TextArenaResponder(live games: {len(self._live)})"
