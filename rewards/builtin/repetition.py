"""``repetition``: a penalty for repeated word n-grams."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.builtin._util import check_bool, check_int
from rewards.registry import register


def distinct_n(words: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams of a word list; 1.0 when there are no n-grams at all."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


@register("repetition")
class RepetitionReward:
    """Penalises repeated word n-grams: ``distinct_n(completion) - 1``.

    ``distinct_n`` is the number of distinct word n-grams divided by the number of n-grams, with words split
    on whitespace (lower-cased unless ``case_sensitive``). A completion without repeated n-grams scores 0;
    ``"the the the the"`` scores ``1/3 - 1`` for ``n=2``. A completion shorter than ``n`` words (including
    the empty one) has no n-grams and scores 0.

    Range:
        [-1, 0] -- 0 means no repeated n-grams.

    Arguments:
        n: n-gram size in words, >= 1 (default 2).
        case_sensitive: treat ``"The"`` and ``"the"`` as different words (default False).
    """

    def __init__(self, n: int = 2, case_sensitive: bool = False) -> None:
        self.n = check_int("n", n, 1)
        self.case_sensitive = check_bool("case_sensitive", case_sensitive)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
        out = []
        for text in completions:
            words = (text if self.case_sensitive else text.lower()).split()
            out.append(distinct_n(words, self.n) - 1.0)
        return out

    def __repr__(self) -> str:
        return f"RepetitionReward(n={self.n}, case_sensitive={self.case_sensitive})"
