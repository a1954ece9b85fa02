"""Cross-sample diversity of a set of completions: does a policy write the same text for every prompt?

Per-completion distinct-n (``rewards.builtin.repetition.distinct_n``) sees words repeated inside one completion
("beautiful beautiful beautiful") but not a template repeated across completions ("I'm happy to share my passion
..." after every prompt). These measures look across all completions of an evaluation. Words are split on
whitespace and lower-cased, as the repetition reward does.

* ``distinct_n_all``: distinct word n-grams over all completions / all their n-grams (n-grams never span two
  completions). 1.0 when no n-gram occurs twice anywhere; near 1/number of completions when every completion is
  the same text.
* ``top_ngram_share``: the share of completions that contain the n-gram found in the most completions (each
  completion counted once). Near 0 for varied text; 1.0 when one phrase is in every completion.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from rewards.builtin.repetition import distinct_n


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """The word n-grams of ``text`` in order (lower-cased, split on whitespace)."""
    words = text.lower().split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n_all(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all ``texts`` / all their n-grams; 1.0 when there is no n-gram at all."""
    grams = [gram for text in texts for gram in ngrams(text, n)]
    return len(set(grams)) / len(grams) if grams else 1.0


def top_ngram_share(texts: Sequence[str], n: int = 4) -> tuple[float, str]:
    """The largest share of ``texts`` that contain one same n-gram, and that n-gram (joined by spaces; the first
    of the most common in order of appearance). ``(0.0, "")`` when no text has ``n`` words."""
    if not texts:
        return 0.0, ""
    counts = Counter(gram for text in texts for gram in dict.fromkeys(ngrams(text, n)))
    if not counts:
        return 0.0, ""
    gram, count = counts.most_common(1)[0]
    return count / len(texts), " ".join(gram)


def diversity_metrics(texts: Sequence[str]) -> dict[str, float | str]:
    """The diversity figures reported beside the reward in every evaluation."""
    share, template = top_ngram_share(texts, 4)
    return {
        "distinct_1_all": distinct_n_all(texts, 1),
        "distinct_2_all": distinct_n_all(texts, 2),
        "distinct_2_per_completion": (
            float(np.mean([distinct_n(t.lower().split(), 2) for t in texts])) if texts else 1.0
        ),
        "top_4gram_share": share,
        "top_4gram": template,
    }
