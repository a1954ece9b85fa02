"""Reward-model plugins for textenv.

A reward plugin is a callable ``(prompts, completions, **info) -> Sequence[float]`` returning one float per
completion, called once per batch of finished episodes. ``info`` may carry ``prompt_ids``,
``completion_ids`` (lists of token-id lists) and ``references`` (``list[str | None]``); plugins must accept
and ignore keys they do not use.

>>> import rewards
>>> model = rewards.make("sentiment")
>>> model(["The film was"], [" wonderful, I loved it."])  # doctest: +SKIP
array([0.8...])

Specs for :func:`make`: a name (see :func:`available`), ``"module:attr"``, a callable, a
:class:`RewardModel`, or a weighted list ``["sentiment", ("length", 0.5), {"name": "keyword", "weight": 2,
"kwargs": {"keywords": ["cat"]}}]``. Third-party packages add names through the entry-point group
``textenv.rewards``.

Importing this package is cheap: torch and transformers are imported only when a model-based plugin
(``classifier``, ``fluency``) is built.
"""

from __future__ import annotations

from rewards import builtin as _builtin  # noqa: F401  (importing it registers the built-in plugins)
from rewards import conversation as _conversation  # noqa: F401  (registers the conversation plugins)
from rewards.base import CompositeReward, RewardModel, RewardPluginError, RewardResult, UnknownRewardError
from rewards.registry import ENTRY_POINT_GROUP, available, make, register

__all__ = [
    "ENTRY_POINT_GROUP",
    "CompositeReward",
    "RewardModel",
    "RewardPluginError",
    "RewardResult",
    "UnknownRewardError",
    "available",
    "make",
    "register",
]
