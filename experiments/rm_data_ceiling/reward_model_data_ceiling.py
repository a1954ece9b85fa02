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

With ``--model``, two more learners are told nothing either, and read what a frozen causal LM knows: the same
regression on the model's hidden states at ``--layers`` averaged over the completion's tokens (a linear probe, what
a mean-pooling reward model with every block frozen can learn, fitted to its optimum), and on those features and
the word counts together (the probe plus a free weight per word). With ``--token-mlp`` one more: a small MLP that
scores each completion token from its state at the first of ``--layers``, averaged over the completion (a
nonlinear head per token, trained with the Bradley-Terry loss).

It prints, per N: distinct training texts, lexicon words seen, the share of the test texts' lexicon-word
occurrences that were never seen, the ceiling and every learner's accuracy, on all test pairs and on those with
gold gap >= 0.3.

    python -m experiments.rm_data_ceiling.reward_model_data_ceiling --train pairs.jsonl --test test_pairs.jsonl \\
        --counts 250 500 1000 2000
    python -m experiments.rm_data_ceiling.reward_model_data_ceiling --train pairs.jsonl --test test_pairs.jsonl \\
        --counts 2000 --model smollm2-135m-instruct --layers 16 --token-mlp
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable


from textenv.preferences import load_preferences


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


def margin_accuracy(margin: Any) -> float:
    """Share of pairs whose score margin (chosen minus rejected, a tensor) is positive; a margin of 0 counts one
    half (NaN for no pairs)."""
    if len(margin) == 0:
        return float("nan")
    return float(((margin > 0).double() + 0.5 * (margin == 0).double()).mean())


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


def word_counts(train: list[Any], words_of: Callable[[str], list[str]]) -> Callable[[Any, str], Any]:
    """``features(pair, text)``: the counts in ``text`` of each word ``words_of`` returns that occurs in the
    training texts (a word no training text holds is not counted)."""
    import torch

    vocabulary = sorted({word for pair in train for text in (pair.chosen, pair.rejected) for word in words_of(text)})
    index = {word: i for i, word in enumerate(vocabulary)}

    def counts(pair: Any, text: str) -> Any:
        row = torch.zeros(len(vocabulary), dtype=torch.float64)
        for word in words_of(text):
            if word in index:
                row[index[word]] += 1
        return row

    return counts


def completion_states(model_name: str, layers: list[int], pairs: list[Any], batch_size: int = 32) -> dict[Any, Any]:
    """The frozen model's hidden states at each of ``layers`` (0: the embeddings, ``i``: block ``i``'s output) at the
    completion's tokens, read as a mean-pooling reward model reads a text (prompt + completion,
    :func:`encode_prompt_completion`): per distinct ``(prompt, text)``, a list of ``(tokens, hidden)`` float32
    tensors, one per layer."""
    import torch

    import textenv
    from rewards.builtin.reward_model import encode_prompt_completion, pad_prompt_completions

    tokenizer, model = textenv.load_tokenizer(model_name), textenv.load_causal_lm(model_name).eval()
    blocks = model.config.num_hidden_layers
    bad = [layer for layer in layers if not 0 <= layer <= blocks]
    if bad:
        raise SystemExit(f"--layers {bad}: {model_name} has {blocks} blocks; expected layers in 0..{blocks}")
    keys = sorted({(pair.prompt or "", text) for pair in pairs for text in (pair.chosen, pair.rejected)})
    encoded = [encode_prompt_completion(tokenizer, prompt, text, 256) for prompt, text in keys]
    states: dict[Any, Any] = {}
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            ids, mask, _ = pad_prompt_completions(chunk, tokenizer.pad_token_id)
            hidden = model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            for row, (prompt, completion) in enumerate(chunk):
                span = slice(len(prompt), len(prompt) + len(completion))
                states[keys[start + row]] = [hidden[layer][row, span].float().clone() for layer in layers]
    return states


def model_features(states: dict[Any, Any]) -> dict[Any, Any]:
    """:func:`completion_states` averaged over the completion's tokens (as ``pooling="mean"`` reads them), the layers
    concatenated: one float64 vector per distinct ``(prompt, text)``."""
    import torch

    return {key: torch.cat([layer.sum(0) / max(len(layer), 1) for layer in layers]).double()  # 0 tokens: zeros
            for key, layers in states.items()}


def token_mlp_accuracy(
    train: list[Any], test: list[Any], test_gap: list[Any], states: dict[Any, Any], hidden: int = 64,
    weight_decay: float = 0.1, epochs: int = 40, seed: int = 0,
) -> dict[str, float]:
    """A per-token MLP on the frozen model's states (the first layer of :func:`completion_states`), averaged over the
    completion: ``score(text) = mean_t w2 . gelu(W1 x_t + b1)`` with ``x_t`` standardised by the training texts'
    token mean and std. What a mean-pooling reward model whose head is a small MLP per token can learn from frozen
    states. Trained with the Bradley-Terry loss (AdamW, lr 1e-3, batches of 64 pairs); the epoch kept is the one
    with the best accuracy on the last 20% of ``train`` (as the L2 strength of the regressions is chosen)."""
    import torch

    keys = sorted({(p.prompt or "", t) for p in train + test for t in (p.chosen, p.rejected)})
    index = {key: i for i, key in enumerate(keys)}
    rows = [states[key][0] for key in keys]
    width = max(len(r) for r in rows)
    x = torch.zeros(len(rows), width, rows[0].shape[1])
    mask = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        x[i, : len(r)], mask[i, : len(r)] = r, 1.0
    seen = torch.tensor(sorted({index[(p.prompt or "", t)] for p in train for t in (p.chosen, p.rejected)}))
    tokens = x[seen][mask[seen].bool()]
    x = (x - tokens.mean(0)) / tokens.std(0).clamp(min=1e-6) * mask[..., None]

    def sides(pairs: list[Any]) -> tuple[Any, Any]:
        return tuple(torch.tensor([index[(p.prompt or "", getattr(p, side))] for p in pairs], dtype=torch.long)
                     for side in ("chosen", "rejected"))

    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(torch.nn.Linear(x.shape[2], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))

    def score(texts: Any) -> Any:
        return (mlp(x[texts]).squeeze(-1) * mask[texts]).sum(1) / mask[texts].sum(1).clamp(min=1.0)

    def accuracy(pairs: tuple[Any, Any]) -> float:
        with torch.no_grad():
            return margin_accuracy(score(pairs[0]) - score(pairs[1]))

    cut = int(0.8 * len(train))
    fit, held = sides(train[:cut]), sides(train[cut:])
    optimiser = torch.optim.AdamW(mlp.parameters(), lr=1e-3, weight_decay=weight_decay)
    best = (-1.0, [p.detach().clone() for p in mlp.parameters()])
    for _ in range(epochs):
        for batch in torch.randperm(len(fit[0])).split(64):
            loss = -torch.nn.functional.logsigmoid(score(fit[0][batch]) - score(fit[1][batch])).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        held_accuracy = accuracy(held)
        if held_accuracy > best[0]:
            best = (held_accuracy, [p.detach().clone() for p in mlp.parameters()])
    with torch.no_grad():
        for parameter, kept in zip(mlp.parameters(), best[1]):
            parameter.copy_(kept)
    return {"accuracy": round(accuracy(sides(test)), 4), "accuracy_gap_0.3": round(accuracy(sides(test_gap)), 4)}


def standardised(features: dict[Any, Any], train: list[Any]) -> Callable[[Any, str], Any]:
    """``features(pair, text)``: the text's vector from ``features``, standardised with the training texts' mean
    and standard deviation and divided by the square root of its length (so that the whole vector weighs about as
    much as one word count, whatever its size)."""
    import torch

    rows = torch.stack([features[(pair.prompt or "", text)] for pair in train for text in (pair.chosen, pair.rejected)])
    mean, scale = rows.mean(0), rows.std(0).clamp(min=1e-8) * rows.shape[1] ** 0.5
    return lambda pair, text: (features[(pair.prompt or "", text)] - mean) / scale


def bradley_terry_accuracy(
    train: list[Any], test: list[Any], test_gap: list[Any], features: Callable[[Any, str], Any],
    grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1),
) -> dict[str, float]:
    """A Bradley-Terry logistic regression on the difference of the two texts' ``features(pair, text)``; its
    accuracy on ``test`` and on ``test_gap`` (the test pairs with gold gap >= 0.3). The L2 strength is chosen from
    ``grid`` on the last 20% of ``train``, then refitted on all of it."""
    import torch

    def differences(pairs: list[Any]) -> Any:
        if not pairs:
            return torch.zeros((0, len(features(train[0], train[0].chosen))), dtype=torch.float64)
        return torch.stack([features(p, p.chosen) - features(p, p.rejected) for p in pairs])

    def accuracy(weights: Any, x: Any) -> float:
        return margin_accuracy(x @ weights)

    x_train = differences(train)
    cut = int(0.8 * len(train))
    l2 = max(grid, key=lambda lam: accuracy(fit_bradley_terry(x_train[:cut], lam), x_train[cut:]))
    weights = fit_bradley_terry(x_train, l2)
    return {"l2": l2 if x_train.shape[1] else float("nan"), "features": x_train.shape[1],
            "accuracy": round(accuracy(weights, differences(test)), 4),
            "accuracy_gap_0.3": round(accuracy(weights, differences(test_gap)), 4)}


FEATURE_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)  # the standardised model features need weaker L2 than word counts


def ceiling(
    train: list[Any], test: list[Any], n: int, features: dict[Any, Any] | None = None,
    states: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """Every learner's accuracy for the first ``n`` training pairs. ``features``: :func:`model_features` of every
    training and test text, for the two regressions on a model's features; ``states``: their
    :func:`completion_states`, for the per-token MLP (each learner is left out without its input)."""
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

    lexicon_counts = word_counts(train[:n], lambda text: lexicon_words(full, text))
    oracle = bradley_terry_accuracy(train[:n], test, gap, lexicon_counts)
    counts = word_counts(train[:n], all_words)
    words = bradley_terry_accuracy(train[:n], test, gap, counts)
    learned: dict[str, Any] = {}
    if features is not None:
        import torch

        model = standardised(features, train[:n])
        learners = {"model_features": model,
                    "model_features_and_words": lambda p, t: torch.cat([model(p, t), counts(p, t)])}
        for name, learner in learners.items():
            result = bradley_terry_accuracy(train[:n], test, gap, learner, FEATURE_GRID)
            learned |= {f"{name}_bt_accuracy": result["accuracy"], f"{name}_bt_accuracy_gap_0.3":
                        result["accuracy_gap_0.3"], f"{name}_bt_l2": result["l2"]}
    if states is not None:
        result = token_mlp_accuracy(train[:n], test, gap, states)
        learned |= {"token_mlp_accuracy": result["accuracy"], "token_mlp_accuracy_gap_0.3": result["accuracy_gap_0.3"]}
    row = {
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
    return row | learned


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="gold-labelled training pairs (JSONL)")
    parser.add_argument("--test", required=True, help="gold-labelled test pairs from other prompts (JSONL)")
    parser.add_argument("--counts", type=int, nargs="+", default=[250, 500, 1000, 2000], help="N: first N pairs")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--model", default=None,
                        help="also fit the learners on this frozen causal LM's mean-pooled features (built-in name or "
                             "directory; SmolLM2 on 4,000 texts: about 10 min on one core)")
    parser.add_argument("--layers", type=int, nargs="+", default=[16], help="--model's blocks to read (0: embeddings)")
    parser.add_argument("--token-mlp", action="store_true",
                        help="also train a per-token MLP on the first of --layers (mean over the completion; seconds "
                             "per N on 2,000 pairs)")
    args = parser.parse_args(argv)
    train, test = load_preferences(args.train), load_preferences(args.test)
    unlabelled = [p for p in test if p.gold_chosen is None or p.gold_rejected is None]
    if unlabelled:
        raise SystemExit(f"{args.test}: {len(unlabelled)} pairs have no gold scores; expected gold-labelled pairs")
    too_many = [n for n in args.counts if n > len(train) or n < 1]
    if too_many:
        raise SystemExit(f"--counts {too_many}: {args.train} has {len(train)} pairs; expected 1..{len(train)}")
    used = train[: max(args.counts)] + test
    if args.token_mlp and not args.model:
        raise SystemExit("--token-mlp reads a model's states: give --model too")
    states = completion_states(args.model, args.layers, used) if args.model else None
    features = model_features(states) if states is not None else None
    rows = [ceiling(train, test, n, features, states if args.token_mlp else None) for n in args.counts]
    for row in rows:
        print(f"N={row['N']:5d}  texts {row['distinct_train_texts']:5d}"
              f"  lexicon words seen {row['lexicon_words_seen']:4d}"
              f"  unseen occurrences {row['unseen_share_of_test_lexicon_occurrences']:.2f}"
              f"  ceiling {row['ceiling_accuracy']:.3f} (gap>=0.3: {row['ceiling_accuracy_gap_0.3']:.3f})"
              f"  oracle-feature BT {row['oracle_feature_bt_accuracy']:.3f}"
              f" (gap>=0.3: {row['oracle_feature_bt_accuracy_gap_0.3']:.3f})"
              f"  bag-of-words BT {row['bag_of_words_bt_accuracy']:.3f}"
              f" (gap>=0.3: {row['bag_of_words_bt_accuracy_gap_0.3']:.3f})"
              + "".join(f"  {name.replace('_', ' ')} BT {row[f'{name}_bt_accuracy']:.3f}"
                        f" (gap>=0.3: {row[f'{name}_bt_accuracy_gap_0.3']:.3f})"
                        for name in ("model_features", "model_features_and_words") if f"{name}_bt_accuracy" in row)
              + (f"  token MLP {row['token_mlp_accuracy']:.3f} (gap>=0.3: {row['token_mlp_accuracy_gap_0.3']:.3f})"
                 if "token_mlp_accuracy" in row else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
