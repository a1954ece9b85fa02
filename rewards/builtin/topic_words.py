"""``topic_words``: distinct words of the prompt's reference list in the completion (MossWords-v0's reward)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.builtin._util import check_int
from rewards.registry import register


@register("topic_words")
class TopicWordsReward:
    """Rewards completions that use many distinct words of the prompt's reference: ``min(1, hits / target_count)``.

    ``hits`` is the number of distinct whitespace-separated words of the (lower-cased) completion that occur in
    the prompt's reference, itself a whitespace-separated list of allowed words (MossWords-v0's prompts carry
    their topic's twelve words). Repeating a word does not count twice, so the best completion names
    ``target_count`` different topic words. A prompt without a reference scores 0; a call without
    ``info["references"]`` is an error.

    Range:
        [0, 1] -- 1 when the completion holds at least ``target_count`` distinct reference words.

    Arguments:
        target_count: distinct reference words that earn the full reward, an integer >= 1 (default 4,
            MossWords-v0's completion budget).
    """

    def __init__(self, target_count: int = 4) -> None:
        self.target_count = check_int("target_count", target_count, 1)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str | None] | None = None,
        **info: Any,
    ) -> list[float]:
        if references is None:
            raise ValueError("topic_words needs info['references'] (the allowed words of each prompt)")
        scores = []
        for completion, reference in zip(completions, references, strict=True):
            targets = set(reference.split()) if reference else set()
            hits = len(targets.intersection(completion.lower().split()))
            scores.append(min(1.0, hits / self.target_count))
        return scores

    def __repr__(self) -> str:
        return f"TopicWordsReward(target_count={self.target_count})"
