"""Any textenv reward as TRL ``reward_funcs``: the same plugin scores TRL's ``GRPOTrainer`` completions.

TRL calls each reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns)``, where
``columns`` are the training dataset's other columns, one value per completion, and ``prompts``/``completions`` are
strings (a standard dataset) or chat messages (a conversational one). :func:`trl_reward_funcs` turns a reward spec
into one such function per component (a composite's parts, or the one plugin) and the weights that sum them as
textenv sums them, so TRL logs each component under its textenv name::

    funcs, weights = rewards.trl_functions.trl_reward_funcs("reasoning_gym", extraction="answer_tag",
                                                            format_weight=0.5)
    trainer = trl.GRPOTrainer(model, reward_funcs=funcs, args=trl.GRPOConfig(reward_weights=weights, ...),
                              train_dataset=Dataset.from_list(rows))   # rows: {"prompt": ..., "reference": ...}

A ``reference`` column (the prompt's reference, e.g. the reasoning-gym entry a ``textenv/ReasoningGym-v0`` prompt
carries) reaches the plugin as ``references``, as it does from a textenv env.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import rewards
from rewards.base import CompositeReward, RewardModel

#: the dataset column passed to plugins as ``references``
REFERENCE_COLUMN = "reference"


def trl_reward_funcs(spec: Any, **kwargs: Any) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """``(functions, weights)`` for TRL's ``GRPOTrainer(reward_funcs=functions)`` and
    ``GRPOConfig(reward_weights=weights)``: one function per component of ``rewards.make(spec, **kwargs)``, each
    named after its component, so that ``sum(weight * function)`` is textenv's total reward."""
    model = rewards.make(spec, **kwargs)
    parts = model.parts if isinstance(model, CompositeReward) else [(model.name, model, 1.0)]
    return [trl_reward_func(part, name) for name, part, _ in parts], [float(weight) for _, _, weight in parts]


def trl_reward_func(model: RewardModel, name: str | None = None) -> Callable[..., list[float]]:
    """One reward model as one TRL reward function (its total), named ``name`` (default: the model's name)."""

    def reward_function(
        prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **columns: Any
    ) -> list[float]:
        info: dict[str, Any] = {}
        if completion_ids is not None:
            info["completion_ids"] = [list(ids) for ids in completion_ids]
        if columns.get(REFERENCE_COLUMN) is not None:
            info["references"] = list(columns[REFERENCE_COLUMN])
        scores = model([message_text(p) for p in prompts], [message_text(c) for c in completions], **info)
        return [float(score) for score in scores]

    reward_function.__name__ = reward_function.__qualname__ = name or model.name
    return reward_function


def message_text(value: Any) -> str:
    """The text of a TRL prompt or completion: the string itself, or the content of the last chat message."""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and value and isinstance(value[-1], dict) and "content" in value[-1]:
        return str(value[-1]["content"])
    raise TypeError(f"expected a string or a list of chat messages, got {type(value).__name__}: {value!r:.80}")
