"""``textenv/TextArena-v0``: a single-player TextArena game as a multi-turn dialogue env (and its vector env)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textenv.dialogue_env import DialogueEnv
from textenv.dialogue_vector_env import DialogueVectorEnv
from textenv.tasks.settings import EnvSettings, SettingsEnv
from textenv.tasks.textarena_games import GamePool, TextArenaResponder

#: the reward the env scores with unless told otherwise (rewards/builtin/game_outcome.py)
DEFAULT_REWARD = "game_reward"
#: agent turns before the env ends an episode itself; games end themselves (or the token budget truncates) first
DEFAULT_MAX_TURNS = 1000


@dataclass(frozen=True)
class TextArenaSettings(EnvSettings):
    """The arguments ``textenv/TextArena-v0`` adds to :class:`textenv.dialogue_env.DialogueEnv`'s (documented in
    :class:`TextArenaEnv`)."""

    game: str = "GuessTheNumber-v0"
    game_kwargs: dict[str, Any] = field(default_factory=dict)
    split: str = "train"
    train_size: int = 10_000
    test_size: int = 100

    def task_kwargs(self, rest: dict[str, Any]) -> dict[str, Any]:
        """:class:`textenv.dialogue_task.DialogueTask`'s arguments: the split's game openings as prompts, the game
        as the responder, the game's reward unless another is given, and ``rest`` as given."""
        for name in ("prompts", "responder", "responder_kwargs"):
            if name in rest:
                raise ValueError(f"textenv/TextArena-v0 sets {name} from the game; pass game/game_kwargs instead")
        size = self.test_size if self.split == "test" else self.train_size
        pool = GamePool(self.game, self.game_kwargs, self.split, size)
        return {
            "reward": DEFAULT_REWARD,
            "max_turns": DEFAULT_MAX_TURNS,
            **rest,
            "prompts": pool,
            "responder": TextArenaResponder(),
        }


class TextArenaEnv(SettingsEnv, DialogueEnv):
    """
    ## Description

    A single-player TextArena game (GuessTheNumber, Mastermind, FrozenLake, Minesweeper, TowerOfHanoi, Sudoku, ...)
    as a multi-turn env. The game speaks first: its opening (rules and, for board games, the board) is the prompt.
    Each agent turn -- the tokens up to an end-of-turn token or ``max_turn_tokens`` -- is one game action (its text,
    stripped, through the action wrappers TextArena registers for the game, e.g. ``"5"`` becomes ``"[5]"``); the
    game's answer (its new messages to the player) is inserted into the observation, masked as env-written tokens
    (``info["inserted_mask"]``). Everything else is :class:`textenv.dialogue_env.DialogueEnv`.

    ```python
    >>> import gymnasium as gym, textenv
    >>> env = gym.make("textenv/TextArena-v0", game="GuessTheNumber-v0")
    >>> obs, info = env.reset(seed=0)
    ```

    ## Action Space

    ``Discrete(vocab_size)``: the next token of the agent's turn.

    ## Observation Space

    ``Dict(input_ids, attention_mask)`` of length ``max_prompt_tokens + max_total_tokens``: the opening, then the
    agent's turns and the game's inserted answers, as :class:`textenv.dialogue_env.DialogueEnv`.

    ## Rewards

    0 until the episode ends; then the ``game_reward`` reward (unless ``reward`` names another): the game's own
    reward for the player (e.g. GuessTheNumber: 1 for the number, else how close the last guess was; invalid moves
    as the game scores them), 0 if the episode ended before the game did. ``info["conversation"].outcome`` holds the
    game's result (``reward``, ``reason``, ``turns``).

    ## Starting State

    ``reset`` draws a game seed of the ``split`` with the env's ``np_random`` and starts the game with it: train
    seeds are ``0 .. train_size - 1``, test seeds start at ``2**30``, so held-out games are never trained on. The
    game's random draws come from its own generator, seeded by its seed (Python's global ``random`` is left as
    it was), so the same env seed and the same actions replay the same game.

    ## Episode End

    * Termination: the game is over (won, lost, out of its own turn limit, or too many invalid moves); also
      ``max_turns`` agent turns (default 1000: in practice the game or the token budget ends an episode first).
    * Truncation: the ``max_total_tokens`` conversation slots are full, or the game's answer does not fit.

    ## Arguments

    * ``game``: a single-player TextArena id (default ``"GuessTheNumber-v0"``; ``textenv envs textarena`` lists
      those that run here). An unknown id, a multi-player game, a game that needs NLTK data that is not installed
      (Wordle, Hangman, SpellingBee, ...; nothing is downloaded) or an API key (LLM-judged games) raise
      ``textenv.tasks.textarena_games.GameUnavailableError`` with one line saying what is missing.
    * ``game_kwargs``: arguments overriding those TextArena registers for the id (e.g. ``{"max_turns": 5}``).
    * ``split``: ``"train"`` (default) or ``"test"``; ``train_size`` (10000) and ``test_size`` (100) game seeds.
    * every :class:`textenv.dialogue_env.DialogueEnv` argument (``tokenizer``, ``max_turn_tokens``,
      ``max_total_tokens``, ``max_prompt_tokens``, ``chat_template``, ``system_prompt``, ``reward``,
      ``turn_reward``, ``max_turns``, ...) except ``prompts``, ``responder`` and ``responder_kwargs``.

    Needs the ``tasks`` extra (``pip install "textenv[tasks]"``): without it, making the env raises
    ``textenv.extras.MissingExtraError`` saying so.
    """

    settings_class = TextArenaSettings


class TextArenaVectorEnv(SettingsEnv, DialogueVectorEnv):
    """``num_envs`` games of :class:`TextArenaEnv` stepped together:
    :class:`textenv.dialogue_vector_env.DialogueVectorEnv` (its documentation covers the batched spaces, autoreset
    and infos) with the game as the responder; every row whose turn ended in a step is answered in that step.
    Arguments: ``num_envs``, ``autoreset_mode``, ``render_mode`` and every :class:`TextArenaEnv` argument. It is the
    vector entry point of ``textenv/TextArena-v0``; row ``i`` plays exactly as a single env seeded alike.
    """

    settings_class = TextArenaSettings
