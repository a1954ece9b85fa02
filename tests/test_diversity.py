"""Cross-sample diversity measures on hand-made completions, against values worked out by hand."""

from __future__ import annotations

import pytest

from agents.runs.diversity import distinct_n_all, diversity_metrics, top_ngram_share


def test_distinct_n_over_all_completions():
    # unigrams: a b c | a b d  -> 6 in all, distinct {a, b, c, d} = 4
    assert distinct_n_all(["a b c", "A b d"], 1) == pytest.approx(4 / 6)
    # bigrams: (a b) (b c) | (a b) (b d) -> 4 in all, 3 distinct; none spans the two completions
    assert distinct_n_all(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    # the same completion three times: 2 distinct bigrams of 6
    assert distinct_n_all(["x y z"] * 3, 2) == pytest.approx(2 / 6)
    assert distinct_n_all(["one", ""], 2) == 1.0  # no bigram at all


def test_share_of_completions_holding_the_most_common_four_gram():
    texts = [
        "i am happy to share my passion",   # holds "happy to share my"
        "so happy to share my passion today",  # holds it too
        "happy to share my happy to share my",  # holds it twice: counted once
        "the plot was thin",
    ]
    share, gram = top_ngram_share(texts, 4)
    # 4-grams in 3 of 4 completions: "happy to share my" (and "to share my passion" is in only 2)
    assert (share, gram) == (0.75, "happy to share my")
    assert top_ngram_share(["a b c d", "e f g h"], 4) == (0.5, "a b c d")
    assert top_ngram_share(["too short", ""], 4) == (0.0, "")
    assert top_ngram_share([], 4) == (0.0, "")


def test_diversity_metrics_see_a_template_that_per_completion_distinct_2_misses():
    template = ["i am proud of my team {}".format(word) for word in ("today", "again", "always", "now")]
    metrics = diversity_metrics(template)
    assert metrics["distinct_2_per_completion"] == 1.0  # no completion repeats itself
    assert metrics["top_4gram_share"] == 1.0 and metrics["top_4gram"] == "i am proud of"
    # bigrams: 6 per completion, 24 in all; the 5 template bigrams are shared, "team <word>" differs: 5 + 4 distinct
    assert metrics["distinct_2_all"] == pytest.approx(9 / 24)
    # unigrams: 7 per completion, 28 in all; 6 shared words + 4 different last words
    assert metrics["distinct_1_all"] == pytest.approx(10 / 28)
