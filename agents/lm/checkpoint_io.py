"""What an LM trainer's checkpoint holds, and writing and reading it: models, optimisers, RNG states, config and
trainer state. The directory is written whole or not at all by :func:`agents.checkpoint.write_atomically`.

Layout of a checkpoint directory::

    <model name>/           one directory per model, written by the model's own ``save_pretrained`` (safetensors)
    trainer_state.pt        optimiser states and torch RNG states (tensors only: read with weights_only=True)
    config.json             the trainer's config
    trainer_state.json      trainer counters, numpy and Python RNG states; written last (the completeness marker)

Models save and load themselves: anything with ``save_pretrained(path, safe_serialization=True)`` and a
``from_pretrained(path, dtype=...)`` classmethod (transformers models, :class:`agents.lm.value_model.ValueModel`), or
a ``load_saved(path)`` method that copies what ``save_pretrained`` wrote back in place (a LoRA adapter and the
trainable-weights saver of :mod:`agents.lm.lora`: a few megabytes of safetensors instead of the whole model).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from agents.checkpoint import COMPLETE_MARKER

STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "config.json"


class SavesPretrained(Protocol):
    """A model that writes itself to a directory and reads the same directory back."""

    def save_pretrained(self, save_directory: Any, safe_serialization: bool = True) -> None: ...

    @classmethod
    def from_pretrained(cls, path: Any, dtype: Any = None, trust_remote_code: bool = False) -> Any: ...


def write_trainer_checkpoint(
    directory: Path,
    *,
    models: dict[str, SavesPretrained],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
    config_json: str,
    tokenizer: Any = None,
) -> None:
    """Write every part of a checkpoint into ``directory``, the completeness marker last. ``tokenizer`` is saved
    beside the first model (the policy), so that its directory loads on its own."""
    for name, model in models.items():
        model.save_pretrained(directory / name, safe_serialization=True)
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(directory / next(iter(models)))
    torch.save(
        {
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        directory / STATE_FILE,
    )
    (directory / CONFIG_FILE).write_text(config_json)
    state = {**state, "numpy_rng": _jsonable(np.random.get_state()), "python_rng": _jsonable(random.getstate())}
    (directory / COMPLETE_MARKER).write_text(json.dumps(state, indent=2))


def read_saved_config(directory: Path) -> dict[str, Any]:
    return json.loads((directory / CONFIG_FILE).read_text())


def read_trainer_checkpoint(
    directory: Path, *, models: dict[str, SavesPretrained], optimizers: dict[str, torch.optim.Optimizer]
) -> dict[str, Any]:
    """Copy the saved weights into ``models`` and the saved states into ``optimizers`` (in place), restore the
    global RNGs (torch, CUDA, numpy, Python), and return the saved trainer state."""
    for name, model in models.items():
        load_weights(model, directory / name)
    saved = torch.load(directory / STATE_FILE, weights_only=True, map_location="cpu")
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(saved["optimizers"][name])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    state = json.loads((directory / COMPLETE_MARKER).read_text())
    np.random.set_state(_numpy_state(state.pop("numpy_rng")))
    random.setstate(_python_state(state.pop("python_rng")))
    return state


def load_weights(model: SavesPretrained, directory: Path) -> None:
    """Copy the weights ``model.save_pretrained(directory)`` wrote into ``model``, in place."""
    if hasattr(model, "load_saved"):
        model.load_saved(directory)
        return
    saved = type(model).from_pretrained(directory, dtype=next(model.parameters()).dtype, trust_remote_code=False)
    model.load_state_dict(saved.state_dict())


def _jsonable(state: Any) -> Any:
    if isinstance(state, np.ndarray):
        return state.tolist()
    if isinstance(state, (tuple, list)):
        return [_jsonable(item) for item in state]
    if isinstance(state, np.integer):
        return int(state)
    if isinstance(state, np.floating):
        return float(state)
    return state


def _numpy_state(state: list[Any]) -> tuple[Any, ...]:
    name, keys, pos, has_gauss, cached = state
    return (name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached))


def _python_state(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
