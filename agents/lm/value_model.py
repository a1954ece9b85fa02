"""The value model of LM-PPO: a transformer backbone with a scalar head, one value per token position.

It is initialised either from the policy (a separate copy of the policy's backbone, zero-initialised head) or from
a sequence-classification reward model directory (its backbone and its score head), as PPO-max recommends. It
must read the same token ids as the policy, so a classifier must share the policy's tokenizer.

Saved as a directory: the backbone with ``save_pretrained`` (``config.json`` + ``model.safetensors``) and the head
in ``value_head.safetensors``.
"""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from agents.modeling.model_blocks import blocks_cut_to, transformer_blocks

HEAD_FILE = "value_head.safetensors"


class ValueModel(nn.Module):
    """``V(s_t)`` for every position of a token sequence: ``head(backbone(ids).last_hidden_state)``.

    Args:
        backbone: a transformers base model (``AutoModel``: embeddings + transformer blocks, no LM head).
        head: a ``Linear(hidden_size, 1)``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        if not isinstance(head, nn.Linear) or head.out_features != 1:
            raise ValueError(f"the value head must be a Linear(hidden_size, 1), got {head!r}")
        self.backbone = backbone
        self.head = head

    @property
    def config(self) -> Any:
        return self.backbone.config

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        first_block: int = 0,
    ) -> torch.Tensor:
        """Values ``(B, L)``. With ``first_block=K``, ``inputs_embeds`` are the hidden states entering block ``K``
        (the output of frozen lower blocks, computed elsewhere) and only blocks ``K..`` run."""
        cut = contextlib.nullcontext()
        if first_block:
            cut = blocks_cut_to(self.backbone, first_block, len(transformer_blocks(self.backbone)))
        with cut:
            hidden = self.backbone(
                input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                position_ids=position_ids, use_cache=False,
            ).last_hidden_state
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_policy(cls, policy: nn.Module, copy_backbone: Any = None) -> ValueModel:
        """A separate copy of ``policy``'s backbone with a zero-initialised head, so ``V = 0`` at the start; every
        parameter trains. ``copy_backbone``: makes the copy instead of ``copy.deepcopy``, and what it leaves
        trainable trains (:func:`agents.lm.lora.copy_sharing_frozen`: a LoRA policy's adapter copied, its frozen
        base weights shared)."""
        if copy_backbone is not None:
            backbone = copy_backbone(policy.base_model)
        else:
            backbone = copy.deepcopy(policy.base_model)
            backbone.requires_grad_(True)
        weight = next(backbone.parameters())
        head = nn.Linear(backbone.config.hidden_size, 1, device=weight.device, dtype=weight.dtype)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        return cls(backbone, head)

    @classmethod
    def from_classifier(
        cls,
        path: str | os.PathLike,
        tokenizer: Any = None,
        dtype: Any = None,
        device: Any = None,
        *,
        trust_remote_code: bool = False,
    ) -> ValueModel:
        """The backbone and score head of a sequence-classification reward model directory.

        A one-label classifier's head is copied; a two-label one becomes ``logit[1] - logit[0]`` (the log-odds of
        the positive class). ``tokenizer``: the policy's; the classifier's own tokenizer (if saved) must match it.
        ``trust_remote_code`` (default False): let transformers run Python shipped in ``path``.
        """
        from transformers import AutoTokenizer

        from rewards.builtin.reward_model import load_classifier, read_metadata

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"value_model_init={str(path)!r} is not a model directory (no config.json)")
        classifier = load_classifier(  # a LoRA one merged
            path, read_metadata(path), dtype or torch.float32, trust_remote_code=trust_remote_code
        )
        score = getattr(classifier, "score", None) or getattr(classifier, "classifier", None)
        if not isinstance(score, nn.Linear) or score.out_features not in (1, 2):
            raise ValueError(
                f"{path}: expected a sequence classifier whose head is a Linear with 1 or 2 outputs, got {score!r}"
            )
        if tokenizer is not None:
            _check_same_tokenizer(path, tokenizer, classifier.config, AutoTokenizer, trust_remote_code)
        backbone = classifier.base_model
        head = nn.Linear(score.in_features, 1, dtype=score.weight.dtype)
        with torch.no_grad():
            weight = score.weight if score.out_features == 1 else score.weight[1:2] - score.weight[0:1]
            head.weight.copy_(weight)
            if score.bias is None:
                head.bias.zero_()
            else:
                head.bias.copy_(score.bias if score.out_features == 1 else score.bias[1:2] - score.bias[0:1])
        model = cls(backbone, head)
        return model.to(device) if device is not None else model

    # -- persistence -------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, safe_serialization: bool = True) -> None:
        """Write the backbone (``save_pretrained``, safetensors) and ``value_head.safetensors`` to ``path``."""
        if not safe_serialization:
            raise ValueError("ValueModel is only saved as safetensors")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path, safe_serialization=True)
        save_file({name: t.detach().contiguous().cpu() for name, t in self.head.state_dict().items()}, path / HEAD_FILE)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, dtype: Any = None, device: Any = None, *, trust_remote_code: bool = False
    ) -> ValueModel:
        from transformers import AutoModel

        from textenv.models import from_pretrained

        path = Path(path)
        if not (path / HEAD_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a saved ValueModel (no {HEAD_FILE})")
        backbone = from_pretrained(AutoModel, path, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code)
        state = load_file(path / HEAD_FILE)
        head = nn.Linear(state["weight"].shape[1], 1, dtype=state["weight"].dtype)
        head.load_state_dict(state)
        model = cls(backbone, head)
        return model.to(device) if device is not None else model


def _check_same_tokenizer(
    path: Path, tokenizer: Any, config: Any, auto_tokenizer: Any, trust_remote_code: bool = False
) -> None:
    vocab = len(tokenizer)
    if getattr(config, "vocab_size", vocab) < vocab:
        raise ValueError(
            f"the classifier in {path} has a {config.vocab_size}-token vocabulary but the policy's tokenizer has "
            f"{vocab}: the value model must read the policy's token ids (use a classifier built on the same tokenizer)"
        )
    if any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        from textenv.models import from_pretrained

        own = from_pretrained(auto_tokenizer, path, trust_remote_code=trust_remote_code)
        if own.get_vocab() != tokenizer.get_vocab():
            raise ValueError(
                f"the classifier in {path} uses a different tokenizer from the policy's; the value model must read "
                "the policy's token ids"
            )
