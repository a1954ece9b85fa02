"""The pretraining corpus of PPO-ptx: text tokenised once and cut into fixed-length blocks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


class PretrainCorpus:
    """Token blocks of a text corpus for the PPO-ptx language-modelling loss.

    Args:
        source: a list of documents (str), or the path of a UTF-8 ``.txt`` file (blank lines separate documents).
        tokenizer: the policy's tokenizer.
        block_size: tokens per block. Documents are joined with the tokenizer's EOS and the stream is cut into
            blocks; a corpus shorter than one block gives one shorter block.
    """

    def __init__(self, source: str | os.PathLike | Sequence[str], tokenizer: Any, block_size: int) -> None:
        documents = _read_documents(source)
        eos = tokenizer.eos_token_id
        stream: list[int] = []
        for document in documents:
            stream.extend(tokenizer(document)["input_ids"])
            if eos is not None:
                stream.append(eos)
        if len(stream) < 2:
            raise ValueError(f"pretrain_corpus encodes to {len(stream)} tokens; need at least 2")
        usable = max(len(stream) // block_size, 1) * min(block_size, len(stream))
        self.blocks = torch.tensor(stream[:usable], dtype=torch.long).view(-1, min(block_size, len(stream)))

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def sample(self, rng: np.random.Generator, batch_size: int) -> torch.Tensor:
        """``batch_size`` blocks drawn uniformly (without replacement when the corpus is large enough)."""
        rows = rng.choice(len(self), size=batch_size, replace=batch_size > len(self))
        return self.blocks[torch.as_tensor(rows)]


def _read_documents(source: Any) -> list[str]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix != ".txt" or not path.is_file():
            raise ValueError(
                f"pretrain_corpus={str(source)!r}: expected a list of str or the path of an existing .txt file"
            )
        text = path.read_text(encoding="utf-8")
        documents = [part.strip() for part in text.split("\n\n")]
    elif isinstance(source, Sequence) and all(isinstance(doc, str) for doc in source):
        documents = [doc.strip() for doc in source]
    else:
        raise TypeError(f"pretrain_corpus must be a list of str or a .txt path, got {type(source).__name__}")
    documents = [doc for doc in documents if doc]
    if not documents:
        raise ValueError("pretrain_corpus holds no non-empty document")
    return documents
