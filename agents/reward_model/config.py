"""Hyperparameters of reward-model training: one dataclass, every default with where it comes from.

Sources: TRL's ``RewardConfig`` (huggingface/trl; names follow it where it has the setting) and "Secrets of RLHF in
Large Language Models Part II: Reward Modeling" (Wang et al. 2024, arXiv:2401.06080: label smoothing, adaptive
margin). Defaults are sized so that ``textenv train-rm`` trains a useful SmolLM2-135M reward model from a few
hundred pairs in at most 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from agents.lm.config import _check_int, _check_nonneg, _check_positive, _check_unit
from agents.lm.lora import LoRASettings
from agents.reward_model.scoring import POOLINGS

DEFAULT_RM_MODEL = "smollm2-135m-instruct"


@dataclass
class RewardModelConfig:
    """Settings of :class:`agents.reward_model.RewardModelTrainer`."""

    model: str = field(
        default=DEFAULT_RM_MODEL,
        metadata={
            "help": "The base model: a built-in name, a causal LM directory (a score head with one output is put on "
            "its backbone) or a reward-model directory (trained further)."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of the held-out split, the batch order and the head's init."})

    # -- data ------------------------------------------------------------------------------------------------
    eval_fraction: float = field(
        default=0.2,
        metadata={
            "help": "Fraction of the pairs held out for evaluation. The split is by prompt: no held-out prompt is "
            "trained on. 0 turns evaluation (and early stopping) off."
        },
    )
    max_length: int = field(
        default=256,
        metadata={"help": "Maximum tokens of prompt + completion; longer texts lose tokens from the left (TRL 1024)."},
    )

    # -- optimisation ----------------------------------------------------------------------------------------
    learning_rate: float = field(
        default=1e-4,
        metadata={"help": "AdamW learning rate, linearly decayed to 0 (TRL RewardConfig 1e-4). Measured on 400 VADER "
                  "pairs (SmolLM2, top 4 blocks): best held-out accuracy 0.59 after epoch 1, then overfitting (the "
                  "kept weights are epoch 1's); 2e-5 stayed at the untrained head's 0.58 for 3 epochs."},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (TrainingArguments 0.0)."})
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "Global gradient-norm clipping (TrainingArguments 1.0); None turns it off."}
    )
    num_train_epochs: int = field(default=3, metadata={"help": "Passes over the training pairs (TrainingArguments 3)."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Pairs per optimiser step and process (TrainingArguments 8)."}
    )
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Pairs per held-out forward pass."})
    trainable_blocks: int | None = field(
        default=4,
        metadata={
            "help": "Train only the top N transformer blocks, with the final norm and the score head (the rest is "
            "frozen). None trains every parameter; 0 trains the head and final norm only. Fewer trainable blocks "
            "overfit less on a few hundred pairs and train faster."
        },
    )
    base_blocks: int | None = field(
        default=None,
        metadata={
            "help": "Keep only the first N transformer blocks of the base model: the head reads block N's output "
            "(through the final norm), and the saved directory is an N-block sequence classifier. None keeps every "
            "block. On 2,000 VADER pairs SmolLM2's block 16 of 30, frozen, scored better than its last block "
            "(README, reward-model accuracy)."
        },
    )

    lora: LoRASettings | None = field(
        default=None,
        metadata={"help": "Train a LoRA adapter (``true`` for the defaults, or the fields of "
                  ":class:`~agents.lm.lora.LoRASettings` as a JSON object) in the top trainable_blocks blocks (None: "
                  "all), with the score head in full, instead of those blocks' weights; the final norm stays frozen. "
                  "The directory then holds the adapter and head (PEFT's format) and names its base model; the "
                  "reward_model reward and textenv export read it. Needs pip install 'textenv[lora]'."},
    )

    pooling: str = field(
        default="last",
        metadata={"help": "What the score head reads: 'last' = the last token's hidden state (what transformers' "
                  "sequence classifiers, and so TRL, compute); 'mean' = the mean hidden state over the completion's "
                  "tokens (needs a prompt in every pair). The reward_model plugin reads either; TRL and a bare "
                  "AutoModelForSequenceClassification score only 'last' models correctly."},
    )

    head_init_positive: str | None = field(
        default=None,
        metadata={"help": "Comma-separated words (e.g. 'good,great,love'): with head_init_negative, the score head "
                  "starts as the mean LM-head row of these words minus that of the negative ones, so the untrained "
                  "model already scores how much the text's states predict the positive words over the negative "
                  "ones (a prior the user states, like an LLM judge's prompt). None: a random head."},
    )
    head_init_negative: str | None = field(
        default=None, metadata={"help": "Comma-separated words of the other side (see head_init_positive)."}
    )

    token_scores: bool = field(
        default=False,
        metadata={"help": "Also learn one score per token id (starting at 0), summed over the completion's tokens and "
                  "added to the head's score: a bag-of-tokens Bradley-Terry term beside the head. It is saved as "
                  "token_scores.safetensors; the reward_model plugin adds it, TRL and a bare "
                  "AutoModelForSequenceClassification do not (they score the head alone)."},
    )
    token_scores_learning_rate: float = field(
        default=1e-2,
        metadata={"help": "AdamW learning rate of the token-score table (decayed with the rest). Measured on 2,000 "
                  "VADER pairs (README): 1e-3 barely moves the table, 1e-1 overfits; 1e-2 and 3e-2 scored best on two "
                  "test sets, and 1e-2 was confirmed on a third."},
    )
    token_scores_weight_decay: float = field(
        default=0.0,
        metadata={"help": "AdamW (decoupled) weight decay of the token-score table."},
    )

    # -- loss ------------------------------------------------------------------------------------------------
    use_margin: bool = field(
        default=True,
        metadata={"help": "Subtract each pair's margin (from the data) inside the Bradley-Terry loss: "
                  "-log sigmoid(r_c - r_r - margin) (Llama 2, TRL; pairs without one use 0)."},
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "Label smoothing eps: -(1-eps) log sigmoid(d) - eps log sigmoid(-d) (Part II; TRL's DPO "
                  "label_smoothing form). Robustness to flipped labels."},
    )
    center_rewards_coefficient: float = field(
        default=0.0,
        metadata={"help": "Reward centring: adds coef * mean((r_c + r_r)^2), pulling scores towards mean 0 "
                  "(TRL center_rewards_coefficient, None/off by default; 0.01 recommended)."},
    )

    # -- evaluation, early stopping, efficiency ----------------------------------------------------------------
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "Evaluate every N optimiser steps; None evaluates once per epoch (and before training)."},
    )
    early_stopping_patience: int | None = field(
        default=2,
        metadata={"help": "Stop after this many evaluations without a better held-out accuracy; None never stops "
                  "early. Either way the weights of the best evaluation are the ones saved."},
    )
    share_prompt_forward: bool = field(
        default=True,
        metadata={"help": "Forward each distinct prompt of a batch once and let its completions share its KV cache; "
                  "each distinct (prompt, completion) is forwarded once. Exact (same scores and gradients)."},
    )
    cache_frozen_blocks: bool = field(
        default=True,
        metadata={"help": "With trainable_blocks=N, run the frozen blocks below the top N once per sequence and keep "
                  "their output: every step then forwards and backpropagates through the top N blocks only. "
                  "Exact (checked on real pairs before use; a model where it is not, e.g. one with absolute position "
                  "embeddings, trains without it). Costs hidden_size x 4 bytes per token of the data in memory."},
    )
    group_by_prompt: bool = field(
        default=True,
        metadata={"help": "Put pairs of the same prompt in the same batch (the prompt order is shuffled each epoch), "
                  "so the shared forward has repeats to share."},
    )

    # -- output ----------------------------------------------------------------------------------------------
    output_dir: str | None = field(
        default=None,
        metadata={"help": "The reward-model directory written at the end (atomically); progress.csv and "
                  "tensorboard/ go to its logs/ folder. None writes nothing."},
    )
    progress_bar: bool = field(default=True, metadata={"help": "A tqdm bar over optimiser steps."})

    def validate(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"RewardModelConfig.model={self.model!r}; expected a model name or directory")
        _check_int(self, "seed", minimum=0)
        _check_unit(self, "eval_fraction")
        if self.eval_fraction >= 1:
            raise ValueError(f"RewardModelConfig.eval_fraction={self.eval_fraction!r}; expected a number in [0, 1)")
        _check_int(self, "max_length", minimum=2)
        _check_positive(self, "learning_rate")
        _check_nonneg(self, "weight_decay")
        if self.max_grad_norm is not None:
            _check_positive(self, "max_grad_norm")
        _check_int(self, "num_train_epochs", minimum=1)
        _check_int(self, "per_device_train_batch_size", minimum=1)
        _check_int(self, "per_device_eval_batch_size", minimum=1)
        if self.trainable_blocks is not None:
            _check_int(self, "trainable_blocks", minimum=0)
        if self.base_blocks is not None:
            _check_int(self, "base_blocks", minimum=1)
        if self.pooling not in POOLINGS:
            raise ValueError(f"RewardModelConfig.pooling={self.pooling!r}; expected one of {POOLINGS}")
        if (self.head_init_positive is None) != (self.head_init_negative is None):
            raise ValueError(
                f"RewardModelConfig.head_init_positive={self.head_init_positive!r}, head_init_negative="
                f"{self.head_init_negative!r}; expected both (comma-separated words) or neither"
            )
        for name in ("head_init_positive", "head_init_negative"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not [w for w in value.split(",") if w.strip()]):
                raise ValueError(f"RewardModelConfig.{name}={value!r}; expected comma-separated words")
        _check_positive(self, "token_scores_learning_rate")
        _check_nonneg(self, "token_scores_weight_decay")
        _check_unit(self, "label_smoothing")
        if self.label_smoothing >= 0.5:
            raise ValueError(
                f"RewardModelConfig.label_smoothing={self.label_smoothing!r}; expected a number in [0, 0.5)"
            )
        _check_nonneg(self, "center_rewards_coefficient")
        if self.eval_steps is not None:
            _check_int(self, "eval_steps", minimum=1)
        if self.early_stopping_patience is not None:
            _check_int(self, "early_stopping_patience", minimum=1)
        self.lora = LoRASettings.coerce(self.lora, "RewardModelConfig.lora")
        if self.lora is not None and self.lora.blocks is not None:
            raise ValueError(f"RewardModelConfig.lora.blocks={self.lora.blocks!r}; a reward model's adapter goes "
                             "in its trainable_blocks top blocks: set trainable_blocks instead")
        if self.lora is not None and self.trainable_blocks == 0:
            raise ValueError("RewardModelConfig.trainable_blocks=0 with lora: the adapter goes in the top "
                             "trainable_blocks blocks; expected an int >= 1 or None (every block)")
        flags = ("token_scores", "use_margin", "share_prompt_forward", "cache_frozen_blocks", "group_by_prompt",
                 "progress_bar")
        for name in flags:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"RewardModelConfig.{name}={getattr(self, name)!r}; expected True or False")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RewardModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown RewardModelConfig field(s) {unknown}; valid: {sorted(known)}")
        return cls(**values)
