"""Training a Bradley-Terry reward model on preference pairs, under ``accelerate``.

Read top to bottom: load and encode the pairs, split off held-out prompts, then epochs of shuffled batches
(pairs of one prompt together, so the shared prompt forward has repeats to share); every ``eval_steps`` the
held-out loss and pairwise accuracy are logged, the best weights are kept, and training stops early when the
held-out accuracy stops improving. The result is a directory that ``AutoModelForSequenceClassification``, the
``reward_model`` reward plugin, LM-PPO's ``value_model_init`` and TRL's ``GRPOTrainer(reward_funcs=DIR)`` load.
With ``pooling="mean"`` or ``token_scores=True`` only the ``reward_model`` plugin reads the score as it was trained
(the others read the head at the last token and know nothing of ``token_scores.safetensors``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.checkpoint import check_output_dir, claim_output_dir, write_directory_atomically
from agents.lm.logger import MetricsLogger
from agents.lm.lora import LoRAAdapter
from agents.reward_model.config import RewardModelConfig
from agents.reward_model.frozen_trunk import CachedPairBatch, CachedPairScorer, FrozenTrunkCache, cache_is_exact
from agents.reward_model.loss import bradley_terry_loss, pairwise_accuracy
from agents.reward_model.scoring import (
    EncodedPair,
    PairBatch,
    PairScorer,
    TokenScores,
    collate_pairs,
    encode_pair,
    freeze_lower_blocks,
    init_head_from_words,
    load_reward_model,
    transformer_blocks,
)
from rewards.builtin.reward_model import (
    METADATA_FILE,
    TOKEN_SCORES_FILE,
    TOKEN_SCORES_KEY,
    load_token_scores,
    read_metadata,
)
from textenv.user_warnings import warn_caller

LOGS_DIR = "logs"
COMMAND = "train-rm"  # the command whose output folder a reward-model directory is (agents.checkpoint)


@dataclass
class RewardModelResult:
    """What :meth:`RewardModelTrainer.train` returns."""

    best_eval_accuracy: float
    best_eval_loss: float
    best_step: int
    steps: int
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    output_dir: str | None = None


def data_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pairs_sha256(pairs: Sequence[Any]) -> str:
    """A hash of in-memory pairs (prompt, chosen, rejected, margin), for data that came from no file."""
    rows = [[p.prompt, p.chosen, p.rejected, p.margin] for p in pairs]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def split_by_prompt(pairs: Sequence[Any], eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, eval)``: whole prompts, in a seeded random order, go to the held-out side while they fit in
    ``eval_fraction`` of the pairs (pairs without a prompt are grouped by their chosen text)."""
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        key = pair.prompt if pair.prompt is not None else "\0" + pair.chosen
        groups.setdefault(key, []).append(i)
    keys = list(groups)
    np.random.default_rng(seed).shuffle(keys)
    target = int(round(eval_fraction * len(pairs)))
    held: list[int] = []
    train: list[int] = []
    for key in keys:
        fits = len(held) + len(groups[key]) <= target
        (held if fits else train).extend(groups[key])
    if not held and target > 0 and len(keys) > 1:  # every prompt has more pairs than the target: hold out one
        held = groups[keys[0]]
        train = [i for i in train if i not in set(held)]
    if not train:
        raise ValueError(f"no training pairs are left after holding out {len(held)} of {len(pairs)}")
    return sorted(train), sorted(held)


class RewardModelTrainer:
    """Trains a one-output sequence classifier with the Bradley-Terry loss on preference pairs.

    Args:
        pairs: a preference JSONL file (TRL's format, read by :func:`textenv.preferences.load_preferences`) or a
            list of :class:`textenv.preferences.PreferencePair`.
        config: the settings (default: :class:`RewardModelConfig`'s defaults).
        model: an already-built sequence classifier to train instead of ``config.model`` (with ``tokenizer``).
        tokenizer: the tokenizer of ``model``.
        skip_invalid: skip (with a warning listing them) invalid lines of a JSONL file instead of failing.
        accelerator: an ``accelerate.Accelerator`` (default: a new one).
        frozen_cache: a :class:`FrozenTrunkCache` to reuse (and extend) instead of a new one, e.g. across several
            trainings from the same base model with the same ``trainable_blocks``. It is checked against this model
            on real pairs like a new one.
        trust_remote_code: let transformers run Python shipped in ``config.model``'s directory (default False:
            such a directory is refused).

    Raises:
        agents.checkpoint.OutputDirError: ``config.output_dir`` is a file, or a folder holding anything but an
            earlier reward model (checked before anything is loaded).
    """

    def __init__(
        self,
        pairs: str | os.PathLike | Sequence[Any],
        config: RewardModelConfig | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        skip_invalid: bool = False,
        accelerator: Any = None,
        frozen_cache: FrozenTrunkCache | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from accelerate import Accelerator

        self.config = config = config or RewardModelConfig()
        config.validate()
        if config.output_dir is not None:
            check_output_dir(config.output_dir, COMMAND, markers=(METADATA_FILE,))
        self.trust_remote_code = trust_remote_code
        self.accelerator = accelerator if accelerator is not None else Accelerator()
        if model is not None and tokenizer is None:
            raise ValueError("pass the tokenizer of the model you pass")
        if tokenizer is None:  # the data is read (and checked) before the model is loaded
            from textenv.models import load_tokenizer

            tokenizer = load_tokenizer(config.model, trust_remote_code=trust_remote_code)

        if isinstance(pairs, (str, os.PathLike)):
            from textenv.preferences import load_preferences

            self.data_path: str | None = str(pairs)
            self.data_sha256 = data_sha256(pairs)
            pairs = load_preferences(pairs, tokenizer=tokenizer, skip_invalid=skip_invalid)
        else:
            self.data_path = None
            self.data_sha256 = pairs_sha256(pairs)
        self.pairs = list(pairs)
        if len(self.pairs) < 2:
            raise ValueError(f"reward-model training needs at least 2 preference pairs, got {len(self.pairs)}")
        if config.pooling == "mean" or config.token_scores:
            unprompted = next((p for p in self.pairs if not p.prompt), None)
            if unprompted is not None:
                what, instead = (("pooling='mean' averages", "pooling='last'") if config.pooling == "mean"
                                 else ("token_scores=True sums", "token_scores=False"))
                raise ValueError(
                    f"{what} over the completion's tokens, so every pair needs a prompt; "
                    f"{unprompted.source or 'a pair'} has none (use {instead})"
                )
        saved_table = bool(read_metadata(config.model).get("token_scores"))  # {} for a built-in name
        if saved_table and not config.token_scores:
            raise ValueError(f"{config.model} is a reward model with a token-score table; train it further with "
                             "token_scores=True (without it the table would be dropped)")

        if model is None:
            model, tokenizer = load_reward_model(
                config.model, seed=config.seed, blocks=config.base_blocks, trust_remote_code=trust_remote_code
            )
        self.model, self.tokenizer = model, tokenizer
        if config.head_init_positive is not None:
            from textenv.models import load_causal_lm

            lm_head = load_causal_lm(config.model, trust_remote_code=trust_remote_code).get_output_embeddings()
            lm_head = lm_head.weight.detach()
            init_head_from_words(model, tokenizer, lm_head, config.head_init_positive, config.head_init_negative)
        self.adapter: LoRAAdapter | None = None
        if config.lora is not None:  # the adapter in the top trainable_blocks blocks; the score head trains in full
            self.adapter = LoRAAdapter(model, config.lora, "SEQ_CLS", base_model=config.model,
                                       blocks=config.trainable_blocks, seed=config.seed)
            self.trainable_parameters = sum(p.numel() for p in self.adapter.trainable_parameters())
        else:
            self.trainable_parameters = freeze_lower_blocks(model, config.trainable_blocks)
        self.encoded = self.encode(self.pairs)
        if config.eval_fraction > 0:
            self.train_index, self.eval_index = split_by_prompt(self.pairs, config.eval_fraction, config.seed)
        else:
            self.train_index, self.eval_index = list(range(len(self.pairs))), []
        self.token_scores = self._token_scores(model, saved_table) if config.token_scores else None
        self.scorer = PairScorer(model, share_prompt_forward=config.share_prompt_forward, pooling=config.pooling,
                                 token_scores=self.token_scores)
        self.frozen_cache: FrozenTrunkCache | None = None
        self.cache_seconds = 0.0
        if config.cache_frozen_blocks and config.trainable_blocks is not None:
            self._use_frozen_cache(len(transformer_blocks(model)) - config.trainable_blocks, frozen_cache)
        groups: list[dict[str, Any]] = [{"params": [p for p in model.parameters() if p.requires_grad]}]
        if self.token_scores is not None:
            self.trainable_parameters += self.token_scores.weight.numel()
            groups.append({"params": [self.token_scores.weight], "lr": config.token_scores_learning_rate,
                           "weight_decay": config.token_scores_weight_decay})
        self.optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(len(self.train_index) / config.per_device_train_batch_size)
        self.total_steps = steps_per_epoch * config.num_train_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: max(0.0, 1.0 - step / max(self.total_steps, 1))
        )
        self.scorer, self.optimizer = self.accelerator.prepare(self.scorer, self.optimizer)
        self.device = self.accelerator.device
        self.step = 0

    def _token_scores(self, model: Any, saved_table: bool) -> TokenScores:
        """The token-score table: the reward-model directory's own when it has one (trained further), or zeros."""
        vocab_size = model.get_input_embeddings().num_embeddings
        if saved_table:
            return TokenScores(vocab_size, load_token_scores(self.config.model, vocab_size))
        return TokenScores(vocab_size)

    def _use_frozen_cache(self, first_trainable: int, cache: FrozenTrunkCache | None) -> None:
        """Score through :class:`FrozenTrunkCache` (all pairs' frozen-block outputs computed now) if it is exact for
        this model; otherwise warn and keep full forwards."""
        if first_trainable <= 0:
            return
        started = time.perf_counter()
        if cache is None or cache.first_trainable != first_trainable:
            cache = FrozenTrunkCache(self.model, first_trainable, self.tokenizer.pad_token_id,
                                     batch_size=self.config.per_device_eval_batch_size)
        cache.model = self.model
        probe = [self.encoded[i] for i in (self.train_index + self.eval_index)[:8]]
        if not cache_is_exact(self.scorer, cache, probe):
            warn_caller(
                f"cache_frozen_blocks: {type(self.model).__name__} does not give the same scores from cached block "
                "outputs (its forward adds to inputs_embeds); training with full forwards"
            )
            return
        cache.fill(self.encoded)
        self.frozen_cache = cache
        self.scorer = CachedPairScorer(
            self.model, first_trainable, share_prompt_forward=self.config.share_prompt_forward,
            pooling=self.config.pooling, token_scores=self.token_scores,
        )
        self.cache_seconds = time.perf_counter() - started

    # -- batches -----------------------------------------------------------------------------------------------
    def train_batches(self, epoch: int) -> Iterator[PairBatch | CachedPairBatch]:
        """This process's batches of one epoch. With ``group_by_prompt`` the pairs of a prompt stay together (the
        order of prompts and of pairs within each prompt is shuffled); otherwise pairs are shuffled one by one."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch])
        if cfg.group_by_prompt:
            groups: dict[tuple[int, ...], list[int]] = {}
            for i in self.train_index:
                groups.setdefault(self.encoded[i].prefix, []).append(i)
            blocks = list(groups.values())
            rng.shuffle(blocks)
            order = [i for block in blocks for i in rng.permutation(block).tolist()]
        else:
            order = rng.permutation(self.train_index).tolist()
        size, rank = cfg.per_device_train_batch_size, self.accelerator.process_index
        global_size = size * self.accelerator.num_processes
        for start in range(0, len(order), global_size):
            chunk = order[start : start + global_size]
            mine = chunk[rank * size : (rank + 1) * size] or chunk[:size]  # a short last batch: every process steps
            yield self.collate(mine)

    def collate(self, indices: Sequence[int]) -> PairBatch | CachedPairBatch:
        pairs = [self.encoded[i] for i in indices]
        if self.frozen_cache is not None:
            return self.frozen_cache.collate(pairs)
        return collate_pairs(pairs, self.tokenizer.pad_token_id).to(self.device)

    # -- evaluation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(chosen, rejected)`` scores of the given pairs, in eval mode."""
        self.scorer.eval()
        chosen, rejected = [], []
        size = self.config.per_device_eval_batch_size
        for start in range(0, len(indices), size):
            c, r = self.scorer(self.collate(indices[start : start + size]))
            chosen.append(c)
            rejected.append(r)
        return torch.cat(chosen), torch.cat(rejected)

    def evaluate(self, indices: Sequence[int] | None = None) -> dict[str, float]:
        """Held-out Bradley-Terry loss (without centring) and pairwise accuracy."""
        indices = self.eval_index if indices is None else list(indices)
        if not indices:
            return {}
        return self._metrics(indices, *self.scores(indices))

    def _metrics(self, indices: Sequence[int], chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
        margin = torch.tensor([self.encoded[i].margin for i in indices], device=chosen.device)
        loss = bradley_terry_loss(chosen, rejected, margin, self.config.label_smoothing)
        return {"eval_loss": float(loss), "eval_accuracy": pairwise_accuracy(chosen, rejected)}

    def encode(self, pairs: Sequence[Any]) -> list[EncodedPair]:
        """Token ids of preference pairs as this trainer reads them (its ``max_length``; margins if ``use_margin``)."""
        cfg = self.config
        return [
            encode_pair(self.tokenizer, p.prompt, p.chosen, p.rejected, cfg.max_length,
                        margin=(p.margin or 0.0) if cfg.use_margin else 0.0)
            for p in pairs
        ]

    def evaluate_pairs(self, pairs: str | os.PathLike | Sequence[Any]) -> dict[str, float]:
        """Held-out loss and accuracy on other pairs (a preference file or a list), e.g. pairs of prompts that no
        part of training saw; with gold scores stored (``gold_chosen``/``gold_rejected``, as ``textenv pairs``
        writes them) also the accuracy on pairs whose gold gap is at least 0.3."""
        if isinstance(pairs, (str, os.PathLike)):
            from textenv.preferences import load_preferences

            pairs = load_preferences(pairs, tokenizer=self.tokenizer)
        pairs = list(pairs)
        first = len(self.encoded)
        self.encoded.extend(self.encode(pairs))
        try:
            indices = list(range(first, len(self.encoded)))
            chosen, rejected = self.scores(indices)  # each pair scored once; the gap subset reuses the scores
            metrics = self._metrics(indices, chosen, rejected)
            gaps = [_gold_gap(p) for p in pairs]
            wide = torch.tensor([gap is not None and gap >= 0.3 for gap in gaps], device=chosen.device)
            if bool(wide.any()):
                metrics["accuracy_gold_gap_0.3"] = pairwise_accuracy(chosen[wide], rejected[wide])
                metrics["pairs_gold_gap_0.3"] = float(wide.sum())
            metrics["pairs"] = float(len(pairs))
            return metrics
        finally:
            del self.encoded[first:]

    # -- training ----------------------------------------------------------------------------------------------
    def train(self) -> RewardModelResult:
        """Train, keep the best held-out weights, write ``config.output_dir`` (if set); return the metrics."""
        cfg = self.config
        logs = Path(cfg.output_dir) / LOGS_DIR if cfg.output_dir else None
        if logs is not None and self.accelerator.is_main_process:
            claim_output_dir(cfg.output_dir, COMMAND, markers=(METADATA_FILE,))  # refuses anything but our own
            if logs.exists():  # an earlier reward model's logs: this run's replace them
                shutil.rmtree(logs)
        logger = MetricsLogger(str(logs) if logs else None, self.accelerator.is_main_process, progress_bar=False)
        bar = None
        if cfg.progress_bar and self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, unit="step", desc="reward model", dynamic_ncols=True)
        started = time.perf_counter()
        best = {"eval_accuracy": -1.0, "eval_loss": math.inf, "step": 0}
        best_state = self._trainable_state() if self.eval_index else {}
        since_best = 0
        window: dict[str, float] = {"loss": 0.0, "accuracy": 0.0, "pairs": 0.0, "batches": 0.0, "seconds": 0.0}

        def log_evaluation(epoch: float) -> bool:
            """Log a row; return True when training should stop early."""
            nonlocal best_state, since_best
            row = {"iteration": float(self.step), "epoch": epoch}
            if window["batches"]:
                row["train_loss"] = window["loss"] / window["batches"]
                row["train_accuracy"] = window["accuracy"] / window["batches"]
                row["pairs_per_second"] = window["pairs"] / max(window["seconds"], 1e-9)
            row.update(self.evaluate())
            row["elapsed_seconds"] = time.perf_counter() - started
            for key in window:
                window[key] = 0.0
            logger.log(row)
            if bar is not None:
                bar.set_postfix({k: f"{row[k]:.3f}" for k in ("train_loss", "eval_accuracy") if k in row})
            if "eval_accuracy" not in row:
                best.update(step=self.step)
                return False
            better = row["eval_accuracy"] > best["eval_accuracy"] or (
                row["eval_accuracy"] == best["eval_accuracy"] and row["eval_loss"] < best["eval_loss"]
            )
            if better:
                best.update(eval_accuracy=row["eval_accuracy"], eval_loss=row["eval_loss"], step=self.step)
                best_state = self._trainable_state()
                since_best = 0
                return False
            since_best += 1
            return cfg.early_stopping_patience is not None and since_best >= cfg.early_stopping_patience

        stop = log_evaluation(0.0)
        try:
            for epoch in range(cfg.num_train_epochs):
                if stop:
                    break
                for batch in self.train_batches(epoch):
                    t0 = time.perf_counter()
                    loss, accuracy = self.training_step(batch)
                    window["loss"] += loss
                    window["accuracy"] += accuracy
                    window["pairs"] += batch.num_pairs * self.accelerator.num_processes
                    window["batches"] += 1
                    window["seconds"] += time.perf_counter() - t0
                    if bar is not None:
                        bar.update(1)
                    if cfg.eval_steps is not None and self.step % cfg.eval_steps == 0:
                        stop = log_evaluation(epoch + 1.0)
                        if stop:
                            break
                if cfg.eval_steps is None and not stop:
                    stop = log_evaluation(epoch + 1.0)
        finally:
            logger.close()
            if bar is not None:
                bar.close()
        train_seconds = time.perf_counter() - started
        if self.eval_index:  # without held-out pairs the last weights are the result
            self._load_trainable_state(best_state)
        result = RewardModelResult(
            best_eval_accuracy=best["eval_accuracy"] if self.eval_index else float("nan"),
            best_eval_loss=best["eval_loss"] if self.eval_index else float("nan"),
            best_step=int(best["step"]),
            steps=self.step,
            train_seconds=train_seconds,
            history=logger.history,
        )
        if cfg.output_dir is not None:
            result.output_dir = str(self.save(cfg.output_dir, result))
        return result

    def training_step(self, batch: PairBatch | CachedPairBatch) -> tuple[float, float]:
        """One optimiser step on a batch: forward, Bradley-Terry loss, backward, clipping, step. Returns the loss and
        the batch's pairwise accuracy."""
        cfg = self.config
        self.scorer.train()
        chosen, rejected = self.scorer(batch)
        loss = bradley_terry_loss(chosen, rejected, batch.margin, cfg.label_smoothing, cfg.center_rewards_coefficient)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if cfg.max_grad_norm is not None:
            trainable = [p for p in self.scorer.parameters() if p.requires_grad]
            self.accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss.item(), pairwise_accuracy(chosen.detach(), rejected.detach())

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained weights (the model's and the token-score table's), cloned."""
        scorer = self.accelerator.unwrap_model(self.scorer)
        return {n: p.detach().clone() for n, p in scorer.named_parameters() if p.requires_grad}

    def _load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        parameters = dict(self.accelerator.unwrap_model(self.scorer).named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                parameters[name].copy_(value)

    @property
    def unwrapped_model(self) -> Any:
        return self.accelerator.unwrap_model(self.scorer).model

    # -- output ------------------------------------------------------------------------------------------------
    def score_stats(self, max_pairs: int = 256) -> dict[str, float]:
        """Mean and std of the model's scores on the texts (chosen and rejected) of up to ``max_pairs`` training
        pairs (an even spread over them): the reward plugin's ``normalize`` reads them."""
        step = max(1, math.ceil(len(self.train_index) / max_pairs))
        chosen, rejected = self.scores(self.train_index[::step])
        values = torch.cat([chosen, rejected])
        return {"mean": float(values.mean()), "std": float(values.std()) if values.numel() > 1 else 1.0}

    def save(self, output_dir: str | os.PathLike, result: RewardModelResult | None = None) -> Path:
        """Write the model (safetensors), config, tokenizer and ``textenv_reward_model.json`` to ``output_dir``,
        atomically: into a temporary directory beside it, then renamed into place (a previous model there is
        replaced only once the new one is whole; files the user added to it are kept). ``output_dir`` must be new,
        empty or an earlier reward model (:class:`agents.checkpoint.OutputDirError`)."""
        target = Path(output_dir)
        stats = self.score_stats()
        if not self.accelerator.is_main_process:
            self.accelerator.wait_for_everyone()
            return target
        metadata = {
            "format": "textenv-reward-model/1",
            "base_model": self.config.model,
            "data_path": self.data_path,
            "data_sha256": self.data_sha256,
            "num_pairs": len(self.pairs),
            "num_train_pairs": len(self.train_index),
            "num_eval_pairs": len(self.eval_index),
            "trainable_parameters": self.trainable_parameters,
            "frozen_block_cache_seconds": self.cache_seconds if self.frozen_cache is not None else None,
            "pooling": self.config.pooling,
            "token_scores": self.token_scores is not None,
            "settings": self.config.to_dict(),
            "score_stats": stats,
        }
        if self.adapter is not None:  # what the reward_model reward rebuilds the base model from
            metadata["lora"] = {"base_model": self.config.model, "base_seed": self.config.seed,
                                "settings": dataclasses.asdict(self.adapter.settings)}
        if result is not None:
            metadata["metrics"] = {
                "best_eval_accuracy": result.best_eval_accuracy,
                "best_eval_loss": result.best_eval_loss,
                "best_step": result.best_step,
                "steps": result.steps,
                "train_seconds": result.train_seconds,
            }
            metadata["history"] = result.history
        own_dir = self.config.output_dir is not None and Path(self.config.output_dir).resolve() == target.resolve()
        logs = target / LOGS_DIR if own_dir else None
        write_directory_atomically(
            target, COMMAND, lambda tmp: self._write(tmp, metadata, logs), markers=(METADATA_FILE,)
        )
        self.accelerator.wait_for_everyone()
        return target

    def _write(self, directory: Path, metadata: dict[str, Any], logs: Path | None = None) -> None:
        model = self.unwrapped_model
        model.config.architectures = [type(model).__name__]
        if self.adapter is None:
            model.save_pretrained(directory, safe_serialization=True)
        else:  # the classifier's config, then the adapter and score head: the base weights are the base model's
            model.config.save_pretrained(directory)
            self.adapter.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        if self.token_scores is not None:
            from safetensors.torch import save_file

            table = self.token_scores.weight.detach().float().cpu().contiguous()
            save_file({TOKEN_SCORES_KEY: table}, str(directory / TOKEN_SCORES_FILE))
        (directory / METADATA_FILE).write_text(json.dumps(json_safe(metadata), indent=2))
        if logs is not None and logs.is_dir():  # this run's logs, written beside the model it replaces
            shutil.copytree(logs, directory / LOGS_DIR)


def _gold_gap(pair: Any) -> float | None:
    if pair.gold_chosen is None or pair.gold_rejected is None:
        return None
    return abs(pair.gold_chosen - pair.gold_rejected)


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats as ``None`` and numpy scalars as Python numbers, for strict JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def train_reward_model(
    pairs: str | os.PathLike | Sequence[Any], config: RewardModelConfig | None = None, **kwargs: Any
) -> RewardModelResult:
    """Build a :class:`RewardModelTrainer` and train it (``kwargs`` go to the trainer)."""
    return RewardModelTrainer(pairs, config, **kwargs).train()
