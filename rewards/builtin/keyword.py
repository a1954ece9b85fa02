"""``keyword``: target words present in the completion."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rewards.builtin._util import check_bool, check_choice
from rewards.registry import register

DEFAULT_KEYWORDS = ("great", "good", "love", "wonderful", "excellent")
MODES = ("any", "fraction", "count")


@register("keyword")
class KeywordReward:
    """Rewards completions that contain target words, matched as whole words.

    A keyword matches only where it is not preceded or followed by a word character (regex word boundaries,
    so ``"good"`` does not match ``"goodness"``); a multi-word keyword matches the exact phrase.

    Range:
        ``mode="any"``: {0, 1} -- 1 when at least one keyword occurs.
        ``mode="fraction"``: [0, 1] -- the fraction of distinct keywords that occur.
        ``mode="count"``: [0, inf) -- the total number of keyword occurrences.

    Arguments:
        keywords: the target words (default: great, good, love, wonderful, excellent). A single string
            counts as one keyword.
        case_sensitive: match case exactly (default False).
        mode: ``"any"``, ``"fraction"`` or ``"count"`` (default ``"any"``).
    """

    def __init__(
        self,
        keywords: Sequence[str] = DEFAULT_KEYWORDS,
        case_sensitive: bool = False,
        mode: str = "any",
    ) -> None:
        if isinstance(keywords, str):
            keywords = [keywords]
        keywords = list(keywords)
        bad = [k for k in keywords if not isinstance(k, str) or not k.strip()]
        if not keywords or bad:
            raise ValueError(f"keywords must be a non-empty list of non-empty strings, got {keywords!r}")
        self.case_sensitive = check_bool("case_sensitive", case_sensitive)
        self.mode = check_choice("mode", mode, MODES)
        unique: dict[str, str] = {}
        for k in keywords:
            unique.setdefault(k.strip() if case_sensitive else k.strip().lower(), k.strip())
        self.keywords = tuple(unique.values())
        flags = 0 if case_sensitive else re.IGNORECASE
        # one pattern for all keywords (longest first, so a phrase wins over a keyword inside it)
        ordered = sorted(self.keywords, key=len, reverse=True)
        alternatives = "|".join(re.escape(k) for k in ordered)
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", flags)
        self._index = {k if case_sensitive else k.lower(): i for i, k in enumerate(self.keywords)}

    def _score(self, text: str) -> float:
        if self.mode == "any":
            return float(self._pattern.search(text) is not None)
        found = self._pattern.findall(text)
        if self.mode == "count":
            return float(len(found))
        key = (lambda m: m) if self.case_sensitive else str.lower
        return len({self._index[key(m)] for m in found}) / len(self.keywords)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
        return [self._score(text) for text in completions]

    def __repr__(self) -> str:
        return f"KeywordReward(keywords={self.keywords!r}, case_sensitive={self.case_sensitive}, mode={self.mode!r})"
