"""Per-iteration metrics to a CSV file, TensorBoard and a tqdm progress bar (main process only): a trainer
callback."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from agents.lm.callbacks import Callback
from textenv.user_warnings import warn_caller

PROGRESS_CSV = "progress.csv"
TENSORBOARD_DIR = "tensorboard"
# shown in the progress bar, when present
BAR_KEYS = ("reward_mean", "kl", "clip_fraction", "tokens_per_second")


class MetricsLogger(Callback):
    """Writes one row per iteration. A resumed run appends to the existing CSV (rows past the checkpoint's
    iteration, left by the killed run, are dropped first, so the file reads as one uninterrupted run)."""

    def __init__(self, output_dir: str | None, enabled: bool, progress_bar: bool, total: int | None = None) -> None:
        self.enabled = enabled
        self.output_dir = Path(output_dir) if output_dir else None
        self._writer: Any = None
        self._csv_file: Any = None
        self._fields: list[str] | None = None
        self._bar: Any = None
        self._tb: Any = None
        self._tb_missing = False
        self.history: list[dict[str, float]] = []
        if enabled and progress_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="it", desc="iterations", dynamic_ncols=True)

    def on_train_begin(self, trainer: Any) -> None:
        self.truncate_to(trainer.iteration)

    def on_iteration_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        self.log(metrics)

    def on_train_end(self, trainer: Any) -> None:
        self.close()

    def truncate_to(self, iteration: int) -> None:
        """Drop CSV rows with ``iteration > iteration`` (called on resume)."""
        if not (self.enabled and self.output_dir):
            return
        path = self.output_dir / PROGRESS_CSV
        if not path.is_file():
            return
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [row for row in rows if int(float(row["iteration"])) <= iteration]
        if len(kept) != len(rows):
            fields = list(rows[0].keys())
            tmp = path.with_suffix(".csv.tmp")
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(kept)
            os.replace(tmp, path)

    def log(self, metrics: dict[str, float]) -> None:
        self.history.append(dict(metrics))
        if not self.enabled:
            return
        step = int(metrics["iteration"])
        if self.output_dir is not None:
            self._write_csv(metrics)
            self._write_tensorboard(metrics, step)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(
                {key: f"{metrics[key]:.3g}" for key in BAR_KEYS if key in metrics and math.isfinite(metrics[key])},
                refresh=False,
            )

    def _write_csv(self, metrics: dict[str, float]) -> None:
        assert self.output_dir is not None
        path = self.output_dir / PROGRESS_CSV
        if self._fields is None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            existing = None
            if path.is_file() and path.stat().st_size:
                with path.open(newline="") as f:
                    existing = next(csv.reader(f), None)
            self._fields = existing or list(metrics)
            if existing is None:
                with path.open("w", newline="") as f:
                    csv.DictWriter(f, fieldnames=self._fields).writeheader()
        new_fields = [key for key in metrics if key not in self._fields]
        if new_fields:  # a metric appeared (e.g. the policy loss after critic warm-up): widen the file's header
            self._close_csv()
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            self._fields = self._fields + new_fields
            tmp = path.with_suffix(".csv.tmp")
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._fields, restval="")
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, path)
        if self._writer is None:
            self._csv_file = path.open("a", newline="")
            self._writer = csv.DictWriter(self._csv_file, fieldnames=self._fields, restval="")
        self._writer.writerow(metrics)
        self._csv_file.flush()

    def _close_csv(self) -> None:
        if self._csv_file is not None:
            self._csv_file.close()
        self._csv_file = self._writer = None

    def _write_tensorboard(self, metrics: dict[str, float], step: int) -> None:
        if self._tb is None:
            if self._tb_missing:
                return
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the tensorboard package is optional: the CSV still has everything
                warn_caller("tensorboard is not installed; logging to progress.csv only")
                self._tb_missing = True
                return
            assert self.output_dir is not None
            self._tb = SummaryWriter(log_dir=str(self.output_dir / TENSORBOARD_DIR), purge_step=step)
        for key, value in metrics.items():
            if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                group = "time" if key.endswith("_seconds") else "train"
                self._tb.add_scalar(f"{group}/{key}", value, step)
        self._tb.flush()

    def close(self) -> None:
        self._close_csv()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
