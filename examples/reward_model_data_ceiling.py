"""How much of the VADER gold can be learned from a set of training pairs at all: a data-only accuracy ceiling.

A reward model trained on VADER-labelled pairs can only learn the valence of the lexicon words its training texts
contain (unless its base model already knows a word's sentiment). This script scores the test pairs with VADER
itself, once with its whole lexicon (accuracy 1.0 by construction, a check) and once with the lexicon cut to the
words that occur in the first N training pairs' texts: the accuracy of a learner that knows VADER's rules and the
exact valence of every word it saw, and nothing of any other word. Ties (both scores equal) count one half.

That ceiling assumes every seen word's valence is known exactly; the pairs only say which of two texts is more
positive. The second learner is what the pairs themselves identify when the features are given: a Bradley-Terry
logistic regression on the difference of the two texts' counts of each seen lexicon word (an oracle for *which*
words matter, learning only their weights from the pairs; L2 strength chosen on the last 20% of the training
pairs, then refitted on all of them). The third learner is the same regression with no oracle: on the counts of
every word of the training texts, lexicon or not (a bag-of-words Bradley-Terry model, what a reward model could
learn from the pairs if it scored each word once and added the scores up).

It prints, per N: distinct training texts, lexicon words seen, the share of the test texts' lexicon-word
occurrences that were never seen, the ceiling and both learners' accuracy, on all test pairs and on those with
gold gap >= 0.3.

    python examples/reward_model_data_ceiling.py --train pairs.jsonl --test test_pairs.jsonl --counts 250 500 1000 2000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from textenv.preferences import load_preferences  # noqa: E402


def all_words(text: str) -> list[str]:
    """Every word VADER's tokeniser finds in ``text``, lower-cased, lexicon or not."""
    from vaderSentiment.vaderSentiment import SentiText

    return [w.lower() for w in SentiText(text).words_and_emoticons]


def lexicon_words(analyzer: Any, text: str) -> list[str]:
    """The lexicon entries VADER looks up in ``text`` (its own tokenisation, lower-cased)."""
    return [word for word in all_words(text) if word in analyzer.lexicon]


def pair_accuracy(score: Any, pairs: list[Any]) -> float:
    """Share of pairs whose chosen text scores higher under ``score`` (ties count one half; NaN for no pairs)."""
    if not pairs:
        return float("nan")
    wins = 0.0
    for pair in pairs:
        chosen, rejected = score(pair.chosen), score(pair.rejected)
        wins += 1.0 if chosen > rejected else 0.5 if chosen == rejected else 0.0
    return wins / len(pairs)


def fit_bradley_terry(features: Any, l2: float, steps: int = 300) -> Any:
    """Weights ``w`` maximising ``sum log sigmoid(x_i . w) - l2 |w|^2`` (``x_i``: chosen minus rejected counts)."""
    import torch

    weights = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    if features.shape[1] == 0:  # nothing to learn: every margin is 0
        return weights.detach()
    optimiser = torch.optim.LBFGS([weights], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Any:
        optimiser.zero_grad()
        loss = -torch.nn.functional.logsigmoid(features @ weights).mean() + l2 * (weights**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weights.detach()


def bradley_terry_accuracy(
    train: list[Any], test: list[Any], test_gap: list[Any], words_of: Callable[[str], list[str]]
) -> dict[str, float]:
    """A Bradley-Terry logistic regression on the difference of the two texts' counts of each word ``words_of``
    returns that occurs in the training texts; its accuracy on ``test`` and on ``test_gap`` (the test pairs with
    gold gap >= 0.3). The L2 strength is chosen on the last 20% of ``train``, then refitted on all of it."""
    import torch

    vocabulary = sorted({word for pair in train for text in (pair.chosen, pair.rejected) for word in words_of(text)})
    index = {word: i for i, word in enumerate(vocabulary)}

    def counts(text: str) -> Any:
        row = torch.zeros(len(vocabulary), dtype=torch.float64)
        for word in words_of(text):
            if word in index:
                row[index[word]] += 1
        return row

    def differences(pairs: list[Any]) -> Any:
        rows = [counts(p.chosen) - counts(p.rejected) for p in pairs]
        return torch.stack(rows) if rows else torch.zeros((0, len(vocabulary)), dtype=torch.float64)

    def accuracy(weights: Any, x: Any) -> float:
        if len(x) == 0:
            return float("nan")
        margin = x @ weights
        return float(((margin > 0).double() + 0.5 * (margin == 0).double()).mean())

    x_train = differences(train)
    cut = int(0.8 * len(train))
    grid = (1e-4, 1e-3, 1e-2, 1e-1)
    l2 = max(grid, key=lambda lam: accuracy(fit_bradley_terry(x_train[:cut], lam), x_train[cut:]))
    weights = fit_bradley_terry(x_train, l2)
    return {"l2": l2 if vocabulary else float("nan"), "features": len(vocabulary),
            "accuracy": round(accuracy(weights, differences(test)), 4),
            "accuracy_gap_0.3": round(accuracy(weights, differences(test_gap)), 4)}


def ceiling(train: list[Any], test: list[Any], n: int) -> dict[str, Any]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    full = SentimentIntensityAnalyzer()
    texts = {text for pair in train[:n] for text in (pair.chosen, pair.rejected)}
    seen = {word for text in texts for word in lexicon_words(full, text)}
    cut = SentimentIntensityAnalyzer()
    cut.lexicon = {word: value for word, value in full.lexicon.items() if word in seen}
    test_words = [word for pair in test for text in (pair.chosen, pair.rejected) for word in lexicon_words(full, text)]
    gap = [p for p in test if abs(p.gold_chosen - p.gold_rejected) >= 0.3]
    unseen = sum(word not in seen for word in test_words)

    def seen_only(text: str) -> float:
        return cut.polarity_scores(text)["compound"]

    oracle = bradley_terry_accuracy(train[:n], test, gap, lambda text: lexicon_words(full, text))
    words = bradley_terry_accuracy(train[:n], test, gap, all_words)
    return {
        "N": n,
        "distinct_train_texts": len(texts),
        "lexicon_words_seen": len(seen),
        "unseen_share_of_test_lexicon_occurrences": round(unseen / len(test_words), 4) if test_words else float("nan"),
        "full_lexicon_accuracy": pair_accuracy(lambda t: full.polarity_scores(t)["compound"], test),
        "ceiling_accuracy": round(pair_accuracy(seen_only, test), 4),
        "ceiling_accuracy_gap_0.3": round(pair_accuracy(seen_only, gap), 4),
        "oracle_feature_bt_accuracy": oracle["accuracy"],
        "oracle_feature_bt_accuracy_gap_0.3": oracle["accuracy_gap_0.3"],
        "oracle_feature_bt_l2": oracle["l2"],
        "bag_of_words_bt_accuracy": words["accuracy"],
        "bag_of_words_bt_accuracy_gap_0.3": words["accuracy_gap_0.3"],
        "bag_of_words_bt_l2": words["l2"],
        "bag_of_words_features": words["features"],
        "test_pairs": len(test),
        "test_pairs_gap_0.3": len(gap),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="gold-labelled training pairs (JSONL)")
    parser.add_argument("--test", required=True, help="gold-labelled test pairs from other prompts (JSONL)")
    parser.add_argument("--counts", type=int, nargs="+", default=[250, 500, 1000, 2000], help="N: first N pairs")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    train, test = load_preferences(args.train), load_preferences(args.test)
    unlabelled = [p for p in test if p.gold_chosen is None or p.gold_rejected is None]
    if unlabelled:
        raise SystemExit(f"{args.test}: {len(unlabelled)} pairs have no gold scores; expected gold-labelled pairs")
    too_many = [n for n in args.counts if n > len(train) or n < 1]
    if too_many:
        raise SystemExit(f"--counts {too_many}: {args.train} has {len(train)} pairs; expected 1..{len(train)}")
    rows = [ceiling(train, test, n) for n in args.counts]
    for row in rows:
        print(f"N={row['N']:5d}  texts {row['distinct_train_texts']:5d}"
              f"  lexicon words seen {row['lexicon_words_seen']:4d}"
              f"  unseen occurrences {row['unseen_share_of_test_lexicon_occurrences']:.2f}"
              f"  ceiling {row['ceiling_accuracy']:.3f} (gap>=0.3: {row['ceiling_accuracy_gap_0.3']:.3f})"
              f"  oracle-feature BT {row['oracle_feature_bt_accuracy']:.3f}"
              f" (gap>=0.3: {row['oracle_feature_bt_accuracy_gap_0.3']:.3f})"
              f"  bag-of-words BT {row['bag_of_words_bt_accuracy']:.3f}"
              f" (gap>=0.3: {row['bag_of_words_bt_accuracy_gap_0.3']:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
