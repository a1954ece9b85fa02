"""``length``: closeness of the completion length to a target."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from rewards.builtin._util import check_choice, check_int
from rewards.registry import register

UNITS = ("words", "tokens")


@register("length")
class LengthReward:
    """Rewards completions whose length is close to a target: ``exp(-|n - target| / scale)``.

    ``n`` is the number of whitespace-separated words of the completion (``unit="words"``) or its number of
    token ids in ``info["completion_ids"]`` (``unit="tokens"``; the env passes them, and a call without
    them is an error). The reward is 1 exactly at the target and halves every ``scale * ln 2`` units away.

    Range:
        (0, 1] -- 1 when ``n == target``.

    Arguments:
        target: the target length, an integer >= 0 (default 20).
        unit: ``"words"`` or ``"tokens"`` (default ``"words"``).
        scale: decay length, > 0 (default ``max(target, 1) / 2``).
    """

    def __init__(self, target: int = 20, unit: str = "words", scale: float | None = None) -> None:
        self.target = check_int("target", target, 0)
        self.unit = check_choice("unit", unit, UNITS)
        if scale is None:
            scale = max(self.target, 1) / 2
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (0 < scale < math.inf):
            raise ValueError(f"scale={scale!r}; expected a positive finite number")
        self.scale = float(scale)

    def lengths(self, completions: Sequence[str], info: dict[str, Any]) -> list[int]:
        if self.unit == "words":
            return [len(text.split()) for text in completions]
        ids = info.get("completion_ids")
        if ids is None:
            raise ValueError(
                "length reward with unit='tokens' needs info['completion_ids'] (the completion token ids); "
                "pass completion_ids=... or use unit='words'"
            )
        return [len(row) for row in ids]

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
        return [math.exp(-abs(n - self.target) / self.scale) for n in self.lengths(completions, info)]

    def __repr__(self) -> str:
        return f"LengthReward(target={self.target}, unit={self.unit!r}, scale={self.scale:g})"
