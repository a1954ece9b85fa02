"""Batch statistics over data-parallel processes: each process holds ``rows_per_process`` rows of the global batch
(in rank order); gathering, picking this process's rows back out, and averaging scalar metrics. Every helper is the
identity in a single process."""

from __future__ import annotations

from typing import Any

import torch


class Processes:
    """The processes of a run under ``accelerate``.

    Args:
        accelerator: the run's ``accelerate.Accelerator``.
        rows_per_process: rows of each process's batch (the trainer's ``num_envs``).
    """

    def __init__(self, accelerator: Any, rows_per_process: int) -> None:
        self.accelerator, self.rows_per_process = accelerator, rows_per_process

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate a per-row tensor over processes (rank order)."""
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.gather(tensor.contiguous())

    def local_rows(self, gathered: torch.Tensor) -> torch.Tensor:
        """This process's rows of a gathered tensor."""
        start = self.accelerator.process_index * self.rows_per_process
        return gathered[start : start + self.rows_per_process]

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each scalar metric averaged over processes."""
        if self.accelerator.num_processes == 1 or not values:
            return values
        keys = sorted(values)
        stacked = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.accelerator.device)
        stacked = self.accelerator.reduce(stacked, reduction="mean")
        return dict(zip(keys, stacked.tolist()))
