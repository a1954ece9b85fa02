"""``sentiment``: the VADER compound sentiment score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.builtin._util import check_bool, joined
from rewards.registry import register


@register("sentiment")
class SentimentReward:
    """VADER compound sentiment of the completion (``vaderSentiment.SentimentIntensityAnalyzer``).

    Lexicon- and rule-based, so it is fast and needs no model download: positive wording scores near 1,
    negative wording near -1, neutral or empty text 0.

    Range:
        [-1, 1].

    Arguments:
        include_prompt: score ``prompt + completion`` instead of the completion alone (default False).
    """

    def __init__(self, include_prompt: bool = False) -> None:
        self.include_prompt = check_bool("include_prompt", include_prompt)
        self._analyzer: Any = None

    @property
    def analyzer(self) -> Any:
        if self._analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._analyzer = SentimentIntensityAnalyzer()
        return self._analyzer

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
        analyzer = self.analyzer
        texts = joined(prompts, completions, self.include_prompt)
        return [analyzer.polarity_scores(text)["compound"] for text in texts]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_analyzer": None}

    def __repr__(self) -> str:
        return f"SentimentReward(include_prompt={self.include_prompt})"
