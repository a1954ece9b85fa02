"""Study switches of reward-model training: no stability promise.

Each field turns off one of the trainer's exact speed paths, so that a benchmark can time the fast path against the
slow one (``benchmarks/rm_throughput.py``); the trainer takes the fast path wherever it gives the same scores and
gradients and logs that decision as its execution plan. Training needs none of them, and any of them may change
meaning or go in a later release without a deprecation. A :class:`~agents.reward_model.RewardModelConfig` holds them
as ``experimental`` (an :class:`ExperimentalSettings` or a dict of its fields). A config saved before they moved
here held them at the top level; ``RewardModelConfig.from_dict`` reads them into ``experimental``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.lm.experimental import coerce_settings


@dataclass
class ExperimentalSettings:
    """Study switches of :class:`agents.reward_model.RewardModelTrainer` (see the module docstring)."""

    share_prompt_forward: bool = field(
        default=True,
        metadata={"help": "``False`` turns off the shared prompt forward: every (prompt, completion) is forwarded "
        "whole, the prompt once per completion. The shared path gives the same scores and gradients, so this only "
        "exists to time one path against the other."},
    )
    cache_frozen_blocks: bool = field(
        default=True,
        metadata={"help": "``False`` turns off the frozen-block cache: every step forwards the whole model instead of "
        "the trainable top blocks on the cached output of the frozen ones. The cached path gives the same scores "
        "and gradients, so this only exists to time one path against the other."},
    )

    def validate(self, owner: str = "experimental") -> None:
        for name in ("share_prompt_forward", "cache_frozen_blocks"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{owner}.{name}={getattr(self, name)!r}; expected True or False")

    @classmethod
    def coerce(cls, value: Any, owner: str = "experimental") -> ExperimentalSettings:
        """``None`` -> the defaults; a dict of its fields or an :class:`ExperimentalSettings` -> those settings."""
        return coerce_settings(cls, value, owner)


__all__ = ["ExperimentalSettings"]
