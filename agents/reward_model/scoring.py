"""Reward-model construction and the pair forward: each distinct prefix once, its KV cache shared by its completions.

A pair is two token sequences ``prefix + chosen`` and ``prefix + rejected`` (the prefix is the prompt, or for data
without a prompt the tokens the two texts share at the start). A batch of pairs becomes:

* the distinct prefixes, left-padded, forwarded once with ``use_cache``;
* the distinct continuations (a completion that appears in several pairs of the batch is forwarded once),
  right-padded, forwarded on top of their prefix's cache (``batch_select_indices`` expands the cache; autograd
  flows back through it to the one prefix forward);
* each sequence's score is the score head applied to the hidden state of its last token (``pooling="last"``,
  what transformers' sequence classifiers do), or to the mean hidden state of its continuation's tokens
  (``pooling="mean"``: the completion's tokens when the pair has a prompt).

That is the same function as one full forward of every sequence (the prefix's positions never attend to what
follows), with fewer positions. Both forwards go through :func:`agents.modeling.decoding.lm_forward`, the one place that
computes position ids and passes a KV cache to a model (here the backbone, which returns hidden states).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from agents.modeling.decoding import lm_forward
from agents.modeling.model_blocks import final_norm, transformer_blocks
from rewards.builtin.reward_model import (
    POOLINGS,
    classifier_from_backbone,
    encode_prompt_completion,
    is_classifier_dir,
    load_classifier,
    pool_hidden,
    read_metadata,
    token_score_sum,
)


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair: the shared prefix and the two continuations (each at least one token)."""

    prefix: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]
    margin: float = 0.0


def encode_pair(
    tokenizer: Any, prompt: str | None, chosen: str, rejected: str, max_length: int, margin: float = 0.0
) -> EncodedPair:
    """Tokenize a pair as the reward plugin tokenizes each text (:func:`encode_prompt_completion`) and split the two
    sequences at their shared prefix: the prompt's tokens both kept (or, without a prompt, their common first
    tokens), leaving at least one token of each continuation."""
    c_prompt, c_ids = encode_prompt_completion(tokenizer, prompt or "", chosen, max_length)
    r_prompt, r_ids = encode_prompt_completion(tokenizer, prompt or "", rejected, max_length)
    c_full, r_full = c_prompt + c_ids, r_prompt + r_ids
    common = 0
    for a, b in zip(c_full, r_full):
        if a != b:
            break
        common += 1
    split = min(common, len(c_full) - 1, len(r_full) - 1)
    if prompt:
        split = min(split, len(c_prompt), len(r_prompt))
    return EncodedPair(tuple(c_full[:split]), tuple(c_full[split:]), tuple(r_full[split:]), float(margin))


@dataclass
class PairBatch:
    """A collated batch of pairs (see the module docstring). ``S`` distinct sequences, ``B`` pairs."""

    prefix_ids: torch.Tensor  # (prefixes, P) left-padded
    prefix_mask: torch.Tensor
    continuation_ids: torch.Tensor  # (S, C) right-padded
    continuation_mask: torch.Tensor
    prefix_of: torch.Tensor  # (S,) index of each sequence's prefix
    chosen_index: torch.Tensor  # (B,) index of each pair's chosen sequence
    rejected_index: torch.Tensor  # (B,)
    margin: torch.Tensor  # (B,) float32
    pad_token_id: int

    @property
    def num_pairs(self) -> int:
        return int(self.chosen_index.shape[0])

    def to(self, device: Any) -> PairBatch:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items()}
        return PairBatch(**moved)

    def full_sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every distinct sequence ``prefix + continuation``, right-padded: ``(ids, mask)`` of shape ``(S, L)``."""
        ids, mask, _ = self.full_sequences_and_continuation_mask()
        return ids, mask

    def full_sequences_and_continuation_mask(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`full_sequences` and the mask ``(S, L)`` of each sequence's continuation tokens."""
        rows, prefix_lengths = [], []
        for s in range(self.continuation_ids.shape[0]):
            p = self.prefix_of[s]
            prefix = self.prefix_ids[p][self.prefix_mask[p].bool()]
            rows.append(torch.cat([prefix, self.continuation_ids[s][self.continuation_mask[s].bool()]]))
            prefix_lengths.append(len(prefix))
        ids, mask = _pad(rows, self.pad_token_id, left=False)
        columns = torch.arange(mask.shape[1])
        continuation = mask.bool() & (columns[None, :] >= torch.tensor(prefix_lengths)[:, None])
        return ids, mask, continuation.long()


def _pad(rows: list[torch.Tensor], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        if n:
            cols = slice(width - n, width) if left else slice(0, n)
            ids[i, cols] = torch.as_tensor(row, dtype=torch.long)
            mask[i, cols] = 1
    return ids, mask


def collate_pairs(pairs: list[EncodedPair], pad_token_id: int) -> PairBatch:
    """Deduplicate prefixes and (prefix, continuation) sequences of a batch of pairs and pad them."""
    prefixes: dict[tuple[int, ...], int] = {}
    sequences: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}

    def index_of(prefix: tuple[int, ...], continuation: tuple[int, ...]) -> int:
        prefixes.setdefault(prefix, len(prefixes))
        return sequences.setdefault((prefix, continuation), len(sequences))

    chosen = [index_of(p.prefix, p.chosen) for p in pairs]
    rejected = [index_of(p.prefix, p.rejected) for p in pairs]
    prefix_ids, prefix_mask = _pad([torch.tensor(p, dtype=torch.long) for p in prefixes], pad_token_id, left=True)
    cont_ids, cont_mask = _pad([torch.tensor(c, dtype=torch.long) for _, c in sequences], pad_token_id, left=False)
    return PairBatch(
        prefix_ids=prefix_ids,
        prefix_mask=prefix_mask,
        continuation_ids=cont_ids,
        continuation_mask=cont_mask,
        prefix_of=torch.tensor([prefixes[p] for p, _ in sequences], dtype=torch.long),
        chosen_index=torch.tensor(chosen, dtype=torch.long),
        rejected_index=torch.tensor(rejected, dtype=torch.long),
        margin=torch.tensor([p.margin for p in pairs], dtype=torch.float32),
        pad_token_id=pad_token_id,
    )


class TokenScores(nn.Module):
    """One learned score per token id, summed over a text's completion tokens and added to the head's score
    (``RewardModelConfig.token_scores``): a bag-of-tokens Bradley-Terry term beside the score head. Starts at 0,
    so an untrained table leaves every score as the head gives it."""

    def __init__(self, vocab_size: int, table: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(vocab_size) if table is None else table.detach().clone().float())

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(S,)``: the sum of the scores of the ``ids`` ``(S, L)`` that ``mask`` marks."""
        return token_score_sum(self.weight, ids.to(self.weight.device), mask.to(self.weight.device))


class PairScorer(nn.Module):
    """Scores the sequences of a :class:`PairBatch` with a sequence-classification reward model.

    ``forward(batch)`` returns ``(chosen_scores, rejected_scores)``, each ``(B,)``. An ``nn.Module`` so that
    ``accelerator.prepare`` can wrap it in DDP (every forward goes through the wrapper, so gradients are synced).

    Args:
        model: a transformers ``*ForSequenceClassification`` with one output (``base_model`` + ``score`` head).
        share_prompt_forward: forward each distinct prefix once and share its KV cache; ``False`` forwards every
            distinct full sequence (as TRL's ``RewardTrainer`` does, less its duplicate sequences).
        pooling: ``"last"`` (the last token's hidden state) or ``"mean"`` (the mean over the continuation's tokens).
        token_scores: a :class:`TokenScores` table whose sum over each continuation's tokens is added to its score
            (trained with the head when its weight requires grad).
    """

    def __init__(
        self,
        model: nn.Module,
        share_prompt_forward: bool = True,
        pooling: str = "last",
        token_scores: TokenScores | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of {POOLINGS}")
        self.model = model
        self.share_prompt_forward = share_prompt_forward
        self.pooling = pooling
        self.token_scores = token_scores

    def with_token_scores(self, scores: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``scores`` plus the token-score term of the sequences ``ids`` over ``mask`` (unchanged without a table)."""
        return scores if self.token_scores is None else scores + self.token_scores(ids, mask)

    def forward(self, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.sequence_scores(batch)
        return scores[batch.chosen_index], scores[batch.rejected_index]

    def sequence_scores(self, batch: PairBatch) -> torch.Tensor:
        """The score ``(S,)`` of every distinct sequence of the batch."""
        backbone = self.model.base_model
        if self.share_prompt_forward and batch.prefix_ids.shape[1] > 0 and bool(batch.prefix_mask.any(1).all()):
            hidden = self._shared_hidden(backbone, batch)
            ids, mask, pool_mask = batch.continuation_ids, batch.continuation_mask, batch.continuation_mask
        else:
            ids, mask, pool_mask = (t.to(batch.prefix_ids.device) for t in batch.full_sequences_and_continuation_mask())
            hidden = lm_forward(backbone, ids, mask, use_cache=False, logits_to_keep=0).last_hidden_state
        scores = self.model.score(pool_hidden(hidden, mask, pool_mask, self.pooling)).squeeze(-1).float()
        return self.with_token_scores(scores, ids, pool_mask)

    @staticmethod
    def _shared_hidden(backbone: nn.Module, batch: PairBatch) -> torch.Tensor:
        prefix_mask = batch.prefix_mask
        cache = lm_forward(backbone, batch.prefix_ids, prefix_mask, logits_to_keep=0).past_key_values
        cache.batch_select_indices(batch.prefix_of)
        return lm_forward(
            backbone, batch.continuation_ids, batch.continuation_mask, past=prefix_mask[batch.prefix_of], cache=cache,
            logits_to_keep=0,
        ).last_hidden_state




# -- building the model ---------------------------------------------------------------------------------------
def load_reward_model(
    name_or_path: str, dtype: Any = None, seed: int = 0, blocks: int | None = None, *, trust_remote_code: bool = False
) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)``: a one-output ``AutoModelForSequenceClassification`` for ``name_or_path``.

    ``trust_remote_code`` (default False) is passed to every load: a directory asking to run Python shipped with
    it raises :class:`textenv.models.RemoteCodeError` unless it is True.

    A reward-model directory (a sequence classifier with one label) is loaded as it is. Anything else is a causal
    LM (built-in name, directory or hub id, loaded by :func:`textenv.load_causal_lm`): its config becomes a
    sequence classifier's with ``num_labels=1`` and ``pad_token_id`` set, its backbone weights are copied (only
    its first ``blocks`` transformer blocks, if given: :func:`keep_first_blocks`), and the score head is
    initialised from ``seed``.
    """
    from transformers import AutoConfig

    from textenv.models import load_causal_lm, load_tokenizer

    dtype = dtype or torch.float32
    tokenizer = load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
    if is_classifier_dir(name_or_path):
        model = load_classifier(  # a LoRA one merged
            name_or_path, read_metadata(name_or_path), dtype, trust_remote_code=trust_remote_code
        )
        if model.config.num_labels != 1:
            raise ValueError(
                f"{name_or_path} is a classifier with {model.config.num_labels} labels; a reward model has 1"
            )
        if blocks is not None and blocks != len(transformer_blocks(model)):
            raise ValueError(f"base_blocks={blocks}, but {name_or_path} is a reward model with "
                             f"{len(transformer_blocks(model))} blocks; expected None or that number")
        return model, tokenizer
    causal = load_causal_lm(name_or_path, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code)
    if blocks is not None:
        keep_first_blocks(causal, blocks)
    settings = causal.config.to_dict()
    if not trust_remote_code:
        settings.pop("auto_map", None)  # the classifier is built from the known model type, never from shipped code
    config = AutoConfig.for_model(**settings)
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    config.architectures = None
    try:
        model = classifier_from_backbone(config, causal.base_model.state_dict(), dtype, seed)
    except ValueError as err:
        raise ValueError(f"{name_or_path}: {err}") from err
    return model, tokenizer


def keep_first_blocks(model: nn.Module, blocks: int) -> None:
    """Cut a transformers model to its first ``blocks`` transformer blocks, in place, config included (the final
    norm and any head stay: they then read block ``blocks``'s output)."""
    layers = transformer_blocks(model)
    if not isinstance(blocks, int) or not 1 <= blocks <= len(layers):
        raise ValueError(f"base_blocks={blocks!r}, but the model has {len(layers)} blocks; expected 1..{len(layers)}")
    del layers[blocks:]
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(getattr(model.config, name, None), int):
            setattr(model.config, name, blocks)
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:blocks]


def init_head_from_words(model: nn.Module, tokenizer: Any, lm_head: torch.Tensor, positive: str, negative: str) -> None:
    """Set the one-output score head of ``model`` to the mean ``lm_head`` row (``(vocab, hidden)``) of the first
    token of each comma-separated ``positive`` word (with a leading space, as it follows text) minus the mean of the
    ``negative`` ones, and its bias (if any) to 0."""

    def mean_row(words: str) -> torch.Tensor:
        ids = [
            tokenizer(" " + w.strip(), add_special_tokens=False)["input_ids"][0] for w in words.split(",") if w.strip()
        ]
        return lm_head[ids].mean(0)

    with torch.no_grad():
        model.score.weight.copy_((mean_row(positive) - mean_row(negative)).to(model.score.weight.dtype)[None])
        if getattr(model.score, "bias", None) is not None:
            model.score.bias.zero_()


def freeze_lower_blocks(model: nn.Module, trainable_blocks: int | None, head: nn.Module | None = None) -> int:
    """Train only the top ``trainable_blocks`` transformer blocks of ``model`` (a transformers model: its
    ``base_model`` holds the blocks), the final norm and ``head`` (default: the ``score`` head of a sequence
    classifier, if any). ``None`` trains everything. Returns the number of trainable parameters of ``model``."""
    if trainable_blocks is None:
        model.requires_grad_(True)
    else:
        blocks = transformer_blocks(model)
        if trainable_blocks > len(blocks):
            raise ValueError(f"trainable_blocks={trainable_blocks}, but the model has {len(blocks)} blocks")
        model.requires_grad_(False)
        for block in blocks[len(blocks) - trainable_blocks :]:
            block.requires_grad_(True)
        norm = final_norm(model.base_model)
        if norm is not None:
            norm.requires_grad_(True)
        head = head if head is not None else getattr(model, "score", None)
        if head is not None:
            head.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


