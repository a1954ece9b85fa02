"""Small helpers shared by the built-in plugins."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any


def joined(prompts: Sequence[str], completions: Sequence[str], include_prompt: bool) -> list[str]:
    """The texts to score: ``prompt + completion`` (concatenated as is) or the completion alone."""
    if include_prompt:
        return [p + c for p, c in zip(prompts, completions)]
    return list(completions)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r}; expected an integer >= {minimum}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r}; expected True or False")
    return value
