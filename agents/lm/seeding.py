"""Per-iteration randomness of the LM trainers: every draw of an iteration comes from a seed derived from
``(run seed, iteration, process, purpose)``, so a run resumed from a checkpoint draws exactly what an
uninterrupted run would, and data-parallel processes draw different prompts and samples."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch


class IterationSeeds:
    """Seeds, torch generators and numpy generators for one process of a run.

    Args:
        seed: the run's seed (``config.seed``).
        process_index: this process's rank (0 when single-process).
    """

    def __init__(self, seed: int, process_index: int = 0) -> None:
        self.seed_value, self.process_index = int(seed), int(process_index)

    def seed(self, iteration: int, purpose: str) -> int:
        """A 31-bit seed for ``purpose`` (e.g. ``"sampling"``, ``"prompts"``) in ``iteration``."""
        tag = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little")
        entropy = [self.seed_value, iteration, self.process_index, tag]
        return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0] >> 1)

    def generator(self, iteration: int, purpose: str, device: Any = "cpu") -> torch.Generator:
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed(iteration, purpose))
        return generator

    def rng(self, iteration: int, purpose: str) -> np.random.Generator:
        return np.random.default_rng(self.seed(iteration, purpose))
