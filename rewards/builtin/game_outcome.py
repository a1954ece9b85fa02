"""``game_reward``: the reward a game gave the player when it ended (TextArena games in a dialogue env)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.conversation import conversations_of
from rewards.registry import register


@register("game_reward")
def game_reward(prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
    """The game's own reward for the player: ``conversation.outcome["reward"]``, which the game's responder reports
    when the game ends (:class:`textenv.tasks.textarena_games.TextArenaResponder`); 0 for a conversation whose game
    had not ended (the env's token budget or turn limit cut it first).

    A conversation plugin: needs ``info["conversations"]``.

    Range:
        the game's (TextArena's single-player games: mostly [-1, 1]).
    """
    return [
        float((conversation.outcome or {}).get("reward", 0.0)) for conversation in conversations_of(info, "game_reward")
    ]
