"""MOSS-RLHF's critic-from-RM: an LM-PPO value model initialised from a trained reward-model directory."""

from __future__ import annotations

import os
from typing import Any

from agents.lm.value_model import ValueModel


def value_model_from_reward_model(
    path: str | os.PathLike,
    tokenizer: Any = None,
    dtype: Any = None,
    device: Any = None,
    *,
    trust_remote_code: bool = False,
) -> ValueModel:
    """A :class:`ValueModel` with the reward model's backbone and score head: its value at a sequence's last token
    is the reward model's score of that sequence. A model trained with ``pooling="mean"`` or ``token_scores=True``
    lends its backbone and head only: the critic reads the head at each position, and the table is not part of it.

    ``LMPPOConfig(value_model_init=path)`` does the same inside the trainer; this builds it on its own (to inspect
    it, or to pass ``value_model=`` to :class:`agents.lm.LMPPOTrainer`).

    Args:
        path: a reward-model directory (one-output sequence classifier, e.g. from ``textenv train-rm``).
        tokenizer: the policy's tokenizer; the reward model's must be the same.
        trust_remote_code: let transformers run Python shipped in ``path`` (default False: refused).
    """
    from transformers import AutoConfig

    from textenv.models import from_pretrained

    num_labels = from_pretrained(AutoConfig, path, trust_remote_code=trust_remote_code).num_labels
    if num_labels != 1:
        raise ValueError(f"{path}: a reward model has one output, this classifier has num_labels={num_labels}")
    return ValueModel.from_classifier(
        path, tokenizer=tokenizer, dtype=dtype, device=device, trust_remote_code=trust_remote_code
    )
