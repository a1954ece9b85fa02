"""Registered environment ids. Importing :mod:`textenv` registers them with Gymnasium."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

ENV_ENTRY_POINT = "textenv.env:TextGenerationEnv"
VECTOR_ENTRY_POINT = "textenv.vector_env:TextGenerationVectorEnv"
DIALOGUE_ENTRY_POINT = "textenv.dialogue_env:DialogueEnv"
DIALOGUE_VECTOR_ENTRY_POINT = "textenv.dialogue_vector_env:DialogueVectorEnv"
_DATA = Path(__file__).with_name("data")

# id -> (keyword arguments, one-line description). Every argument can be overridden in gym.make(id, **kwargs).
SINGLE_TURN_ENV_IDS: dict[str, tuple[dict[str, Any], str]] = {
    "MossText-v0": (
        {
            "tokenizer": "smollm2-135m-instruct",
            "prompts": "builtin",
            "reward": "sentiment",
            # 24 tokens is about one sentence: enough text for VADER to judge, and 8 completions stay a
            # few seconds of SmolLM2 sampling on 2 CPU cores.
            "max_new_tokens": 24,
            "max_prompt_tokens": 32,  # the longest built-in prompt is well under 32 SmolLM2 tokens
        },
        "continue a movie-review opening positively (SmolLM2 tokenizer, VADER sentiment reward)",
    ),
    "MossWords-v0": (
        {
            "tokenizer": "moss-words",  # word-level, 398 tokens (textenv/data/moss_words, textenv/word_task.py)
            "prompts": str(Path(__file__).with_name("data") / "moss_words" / "prompts.jsonl"),
            "reward": "topic_words",  # rewards/builtin/topic_words.py
            # 4 words: random play scores ~0.03, and PPO/DQN learn to write 4 distinct topic words in minutes
            "max_new_tokens": 4,
            "max_prompt_tokens": 8,  # the longest prompt, "tell me words about feelings :", is 6 words
        },
        "write four distinct words of the topic the prompt names (word-level vocabulary, for classic RL agents)",
    ),
}


# Multi-turn ids (textenv/dialogue_env.py), in the same (kwargs, description) form.
DIALOGUE_ENV_IDS: dict[str, tuple[dict[str, Any], str]] = {
    "MossChat-v0": (
        {
            "tokenizer": "smollm2-135m-instruct",
            "prompts": str(_DATA / "moss_chat" / "openings.txt"),
            "responder": "simulated_user",  # SmolLM2-135M-Instruct under textenv.responders.DEFAULT_PERSONA
            "responder_kwargs": {"max_new_tokens": 24},
            # the user's mood at the end, minus 0.005 per agent token (a full 3 x 24-token budget costs 0.36)
            "reward": ["user_sentiment", ("agent_tokens", -0.005)],
            "max_turns": 3,
            "max_turn_tokens": 24,
            "max_total_tokens": 160,  # 3 agent turns + 2 replies of <= 24 tokens + chat-template tokens
            "max_prompt_tokens": 64,  # SmolLM2's default system prompt + the longest opening: 45 tokens
        },
        "cheer up a user (SmolLM2 simulated user) who opens with a complaint; VADER sentiment of the user's last reply",
    ),
    "MossGuess-v0": (
        {
            "tokenizer": "smollm2-135m-instruct",
            "prompts": str(_DATA / "guess_words" / "openings.jsonl"),
            "responder": "word_game",  # knows the secret word and its attributes (data/guess_words/attributes.json)
            "reward": "guessed_word",
            # a turn's guess is the first animal it names: listing all 16 in one turn is one guess, not a win
            "reward_kwargs": {"turn_cost": 0.1, "candidates": str(_DATA / "guess_words" / "attributes.json")},
            "reply_after_last_turn": False,
            "max_turns": 5,
            "max_turn_tokens": 16,
            "max_total_tokens": 128,
            "max_prompt_tokens": 64,
        },
        "guess the secret animal by yes/no questions (SmolLM2 tokenizer); 1 for naming it, 0.1 less per extra turn; "
        "a turn's guess is the first animal it names",
    ),
    "MossGuessWords-v0": (
        {
            "tokenizer": str(_DATA / "guess_words_small"),  # word-level, 22 tokens
            "prompts": str(_DATA / "guess_words_small" / "openings.jsonl"),
            "responder": "word_game",
            "responder_kwargs": {"attributes": str(_DATA / "guess_words_small" / "attributes.json")},
            "reward": "guessed_word",
            "reward_kwargs": {"turn_cost": 0.1, "candidates": str(_DATA / "guess_words_small" / "attributes.json")},
            "reply_after_last_turn": False,
            "chat_template": False,
            "max_turns": 3,
            "max_turn_tokens": 1,  # one word per turn: a question (an attribute) or a guess (an animal)
            "max_total_tokens": 6,  # 3 words + 2 one-word replies, and one slot to spare
            "max_prompt_tokens": 4,
        },
        "guess the secret animal in 3 one-word turns (word-level vocabulary, for classic RL agents)",
    ),
}


@dataclass(frozen=True)
class TaskFamily:
    """Envs made from a third-party task library (an extra): its id, entry points, defaults and description."""

    env_id: str
    entry_point: str
    vector_entry_point: str
    kwargs: dict[str, Any]
    description: str
    library: str  # the import name of the library the env needs
    extra: str  # the textenv extra that installs it


# Envs over third-party task libraries (textenv/tasks/). Registered whether or not the library is installed; making
# one without it says which extra to install.
TASK_FAMILIES: dict[str, TaskFamily] = {
    "reasoning-gym": TaskFamily(
        env_id="textenv/ReasoningGym-v0",
        entry_point="textenv.tasks.reasoning_gym_env:ReasoningGymEnv",
        vector_entry_point="textenv.tasks.reasoning_gym_env:ReasoningGymVectorEnv",
        kwargs={
            "tokenizer": "smollm2-135m-instruct",
            "task": "chain_sum",
            "chat_template": True,
            "max_new_tokens": 32,
            # SmolLM2's chat template with its default system prompt, plus a short question and the instruction
            "max_prompt_tokens": 128,
        },
        description="any reasoning-gym dataset (task=..., task_config=...), single-turn, scored by the task's own "
        "score_answer",
        library="reasoning_gym",
        extra="tasks",
    ),
    "textarena": TaskFamily(
        env_id="textenv/TextArena-v0",
        entry_point="textenv.tasks.textarena_env:TextArenaEnv",
        vector_entry_point="textenv.tasks.textarena_env:TextArenaVectorEnv",
        kwargs={
            "tokenizer": "smollm2-135m-instruct",
            "game": "GuessTheNumber-v0",
            "max_turn_tokens": 16,
            "max_total_tokens": 256,
            "max_prompt_tokens": 256,  # a game's rules (and board) as the chat template renders them
        },
        description="a single-player TextArena game (game=...), multi-turn: each agent turn is a move, the game's "
        "reward ends the episode",
        library="textarena",
        extra="tasks",
    ),
}
TASK_ENV_IDS: dict[str, tuple[dict[str, Any], str]] = {
    family.env_id: (family.kwargs, family.description) for family in TASK_FAMILIES.values()
}

#: every registered id: single-turn, multi-turn and task-library envs
ENV_IDS: dict[str, tuple[dict[str, Any], str]] = {**SINGLE_TURN_ENV_IDS, **DIALOGUE_ENV_IDS, **TASK_ENV_IDS}


def with_reward(env_kwargs: dict[str, Any], reward: Any) -> dict[str, Any]:
    """``env_kwargs`` with ``reward`` replacing the env's reward. The env's own ``reward_kwargs`` (the arguments
    its registered reward takes, e.g. ``turn_cost`` of MossGuess-v0's ``guessed_word``) go with the reward they
    belong to: they are dropped unless ``env_kwargs`` gives ``reward_kwargs`` itself."""
    return {"reward_kwargs": None, **env_kwargs, "reward": reward}


def register_envs() -> None:
    """Register every id in :data:`SINGLE_TURN_ENV_IDS`, :data:`DIALOGUE_ENV_IDS` and :data:`TASK_FAMILIES`
    (idempotent)."""
    for env_id, (kwargs, _description) in SINGLE_TURN_ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id, entry_point=ENV_ENTRY_POINT, vector_entry_point=VECTOR_ENTRY_POINT, kwargs=dict(kwargs)
            )
    for env_id, (kwargs, _description) in DIALOGUE_ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point=DIALOGUE_ENTRY_POINT,
                vector_entry_point=DIALOGUE_VECTOR_ENTRY_POINT,
                kwargs=dict(kwargs),
            )
    for family in TASK_FAMILIES.values():
        if family.env_id not in gym.registry:
            gym.register(
                id=family.env_id,
                entry_point=family.entry_point,
                vector_entry_point=family.vector_entry_point,
                kwargs=dict(family.kwargs),
            )
