"""LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") through the ``peft``
library, for the LM agents and reward-model training.

An adapter adds a trainable low-rank update ``(alpha / r) * B A`` beside each targeted linear layer of a frozen
model. textenv injects it in place (``peft.get_peft_model``): the model keeps its transformers class, so the rollout
engine, the shared prompt forward and the frozen-trunk fast path see the model they always see. What changes:

* the optimiser holds the adapter's weights only (and their AdamW state);
* the frozen reference of the LM agents is the same model with the adapter switched off (:class:`AdapterOff`), not
  a second copy in memory;
* a checkpoint holds the adapter in PEFT's own format (``adapter_model.safetensors`` + ``adapter_config.json``,
  loadable by ``peft.PeftModel.from_pretrained``), megabytes instead of the whole model;
* :func:`export_merged` folds an adapter into its base model: a plain transformers directory.

``peft`` is an extra: ``pip install 'textenv[lora]'``; without it, asking for LoRA fails with one line saying so.

Example::

    from agents.lm import GRPOConfig, GRPOTrainer, LoRASettings

    config = GRPOConfig(learning_rate=2e-3, trainable_blocks=8, lora=LoRASettings(r=8, alpha=16))
    trainer = GRPOTrainer("MossText-v0", "smollm2-135m-instruct", config)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # PEFT's names: PeftModel.from_pretrained reads them
ADAPTER_CONFIG = "adapter_config.json"
TRAINABLE_WEIGHTS = "trainable.safetensors"  # a module saved as its trainable parameters only (TrainableWeights)
PEFT_MISSING = "LoRA needs the peft library: pip install 'textenv[lora]'"


def require_peft() -> Any:
    """The ``peft`` module, or an ``ImportError`` of one line naming the extra to install."""
    try:
        import peft
    except ImportError as err:
        raise ImportError(PEFT_MISSING) from err
    return peft


@dataclass
class LoRASettings:
    """What the adapter is: rank, scale, dropout and where it goes (the fields of ``peft.LoraConfig`` that matter
    here, under TRL's ``peft_config`` idea: pass the same values to both for a like-for-like comparison)."""

    r: int = field(
        default=8,
        metadata={"help": "Rank of each update ``B A`` (PEFT ``r``; 8 is PEFT's default)."},
    )
    alpha: float = field(
        default=16.0,
        metadata={"help": "Scale: the update is ``(alpha / r) B A`` (PEFT ``lora_alpha``; 2 x r, as TRL's examples "
                  "set it)."},
    )
    dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout on the adapter's input while training (PEFT ``lora_dropout``). The LM agents "
                  "keep the policy in eval mode (rollouts and loss must see the same function) and refuse a value "
                  "> 0; reward-model training applies it."},
    )
    target_modules: str | list[str] = field(
        default="all-linear",
        metadata={"help": "Modules that get an adapter: ``\"all-linear\"`` (every linear layer of the transformer "
                  "blocks, not the output head; PEFT's shortcut, what QLoRA recommends), or a list of module "
                  "names such as ``[\"q_proj\", \"v_proj\"]``."},
    )
    blocks: int | None = field(
        default=None,
        metadata={"help": "Put adapters only in the top N transformer blocks (PEFT ``layers_to_transform``); the "
                  "blocks below them stay exactly the base model, so the frozen-trunk fast path runs them once per "
                  "rollout. ``None``: every block."},
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, owner: str = "lora") -> None:
        """Raise a one-line ``ValueError`` naming the first bad field (``owner``: how the caller names us)."""
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"{owner}.r={self.r!r}; expected an int >= 1")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1e9:
            raise ValueError(f"{owner}.alpha={self.alpha!r}; expected a number > 0")
        self.alpha = float(self.alpha)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"{owner}.dropout={self.dropout!r}; expected a number in [0, 1)")
        self.dropout = float(self.dropout)
        modules = self.target_modules
        if isinstance(modules, (list, tuple)):
            if not modules or not all(isinstance(m, str) and m for m in modules):
                raise ValueError(f"{owner}.target_modules={modules!r}; expected \"all-linear\" or a non-empty "
                                 "list of module names")
            self.target_modules = list(modules)
        elif not isinstance(modules, str) or not modules:
            raise ValueError(f"{owner}.target_modules={modules!r}; expected \"all-linear\" or a list of module names")
        if self.blocks is not None and (isinstance(self.blocks, bool) or not isinstance(self.blocks, int)
                                        or self.blocks < 1):
            raise ValueError(f"{owner}.blocks={self.blocks!r}; expected an int >= 1 or None")

    @classmethod
    def coerce(cls, value: Any, owner: str = "lora") -> LoRASettings | None:
        """``None``/``False`` -> no adapter; ``True`` -> the defaults; a dict (``--agent-kwargs lora={"r": 8}``, a
        saved config) or a :class:`LoRASettings` -> those settings. Anything else is a one-line ``ValueError``."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            value.validate(owner)
            return value
        if isinstance(value, dict):
            known = [f.name for f in dataclasses.fields(cls)]
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(f"{owner} has unknown keys {unknown}; expected some of {known}")
            settings = cls.__new__(cls)
            for f in dataclasses.fields(cls):
                setattr(settings, f.name, value.get(f.name, f.default))
            settings.validate(owner)
            return settings
        raise ValueError(f"{owner}={value!r}; expected None, true, or an object with some of "
                         f"{[f.name for f in dataclasses.fields(cls)]}")

    def peft_config(self, model: nn.Module, task_type: str, base_model: str | None = None,
                    blocks: int | None = None) -> Any:
        """The ``peft.LoraConfig`` of these settings for ``model`` (``task_type``: ``"CAUSAL_LM"`` or
        ``"SEQ_CLS"``, whose score head then trains in full); ``blocks`` overrides :attr:`blocks`."""
        from agents.modeling.model_blocks import transformer_blocks

        peft = require_peft()
        blocks = self.blocks if blocks is None else blocks
        layers, targets = None, self.target_modules
        if blocks is not None:
            stack = transformer_blocks(model)
            count = len(stack)
            if blocks < 1:
                raise ValueError(f"lora in the top {blocks} blocks adapts nothing; expected >= 1 block")
            if blocks > count:
                raise ValueError(f"lora.blocks={blocks}, but the model has {count} transformer blocks")
            layers = list(range(count - blocks, count))
            if targets == "all-linear":  # PEFT takes layers_to_transform with a list of names only
                targets = sorted({name.rpartition(".")[2] for block in stack for name, module in block.named_modules()
                                  if isinstance(module, nn.Linear)})
        return peft.LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
            layers_to_transform=layers, task_type=task_type, base_model_name_or_path=base_model,
        )


class LoRAAdapter:
    """A LoRA adapter injected into ``model`` in place (``model`` keeps its class; its base weights are frozen).

    Args:
        model: a transformers model (causal LM, or a sequence classifier with ``task_type="SEQ_CLS"``).
        settings: the adapter's :class:`LoRASettings`.
        task_type: PEFT's task type.
        base_model: the name or directory the base model is loaded from again (recorded in
            ``adapter_config.json``, read by :func:`export_merged`).
        blocks: adapt only the top N blocks (default ``settings.blocks``).
        seed: seed of the adapter's initialisation (``A`` random, ``B`` zero: the adapted model starts as the
            base model), drawn without touching the global random state.
    """

    def __init__(self, model: nn.Module, settings: LoRASettings, task_type: str = "CAUSAL_LM",
                 base_model: str | None = None, blocks: int | None = None, seed: int = 0) -> None:
        peft = require_peft()
        self.settings = settings
        self.model = model
        try:
            config = settings.peft_config(model, task_type, base_model, blocks)
            with torch.random.fork_rng(devices=[]), _quiet_peft():
                torch.manual_seed(seed)
                self.peft_model = peft.get_peft_model(model, config)
        except ValueError as err:  # e.g. target modules the model does not have
            first = str(err).strip().splitlines()[0]
            raise ValueError(f"lora: {type(model).__name__} refuses the adapter: {first}") from err
        # get_peft_model overwrites it with the model's name_or_path (empty for a model built in memory)
        self.peft_model.peft_config["default"].base_model_name_or_path = base_model

    def disabled(self) -> contextlib.AbstractContextManager[None]:
        """Within it, ``model`` computes the base model's function (the adapter is bypassed)."""
        return self.peft_model.disable_adapter()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def base_view(self) -> AdapterOff:
        return AdapterOff(self)

    # -- checkpoints: the SavesPretrained protocol of agents.lm.checkpoint_io ------------------------------------
    def save_pretrained(self, save_directory: Any, safe_serialization: bool = True) -> None:
        """Write the adapter (PEFT's format: ``adapter_model.safetensors``, ``adapter_config.json``)."""
        if not safe_serialization:
            raise ValueError("adapters are only saved as safetensors")
        with _quiet_peft():  # "could not find a config file in <base>": the vocabulary check of a hub id
            self.peft_model.save_pretrained(str(save_directory), safe_serialization=True)
        (Path(save_directory) / "README.md").unlink(missing_ok=True)  # PEFT's model-card template

    def load_saved(self, directory: Path) -> None:
        """Copy the adapter weights saved in ``directory`` into this adapter, in place; every saved tensor must have
        a place of the same shape (a checkpoint of another rank or targets is refused by name)."""
        from safetensors.torch import load_file

        peft = require_peft()
        file = Path(directory) / ADAPTER_WEIGHTS
        if not file.is_file():
            raise FileNotFoundError(f"{directory} holds no LoRA adapter ({ADAPTER_WEIGHTS}): a checkpoint made "
                                    "without lora cannot resume with lora")
        saved = load_file(str(file))
        with _quiet_peft():
            ours = peft.get_peft_model_state_dict(self.peft_model)
            if set(saved) != set(ours) or any(saved[k].shape != ours[k].shape for k in ours):
                raise ValueError(f"{file} does not fit this adapter (other rank, target modules or blocks than "
                                 f"lora={dataclasses.asdict(self.settings)})")
            peft.set_peft_model_state_dict(self.peft_model, saved)


class AdapterOff:
    """The adapted model with its adapter switched off, standing where a frozen reference copy stood.

    Calling it runs the model's forward with the adapter bypassed; every other attribute is the model's own
    (``base_model``, ``get_input_embeddings`` ...). ``module`` names the model, as a DDP wrapper's does, so code
    that reads the forward's signature (:func:`agents.modeling.decoding.lm_forward`) reads the model's.
    """

    def __init__(self, adapter: LoRAAdapter) -> None:
        self.module = adapter.model
        self._adapter = adapter

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._adapter.disabled():
            return self.module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)


class TrainableWeights:
    """Saves and restores the trainable parameters of ``module`` only (a safetensors file), e.g. LM-PPO's value
    model under LoRA: its adapter and head, not the base weights it shares with the policy."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def state(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.module.named_parameters() if p.requires_grad}

    def save_pretrained(self, save_directory: Any, safe_serialization: bool = True) -> None:
        from safetensors.torch import save_file

        if not safe_serialization:
            raise ValueError("weights are only saved as safetensors")
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state().items()}, str(path / TRAINABLE_WEIGHTS))

    def load_saved(self, directory: Path) -> None:
        from safetensors.torch import load_file

        file = Path(directory) / TRAINABLE_WEIGHTS
        if not file.is_file():
            raise FileNotFoundError(f"{directory} holds no {TRAINABLE_WEIGHTS}: a checkpoint made without lora "
                                    "cannot resume with lora")
        saved, ours = load_file(str(file)), self.state()
        if set(saved) != set(ours) or any(saved[k].shape != ours[k].shape for k in ours):
            raise ValueError(f"{file} does not fit {type(self.module).__name__}'s trainable parameters")
        with torch.no_grad():
            for name, parameter in ours.items():
                parameter.copy_(saved[name])


def copy_sharing_frozen(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose frozen parameters are ``module``'s own (shared, not copied) and whose
    trainable ones (an adapter's) are new copies: a second adapter on the same base weights, for the cost of the
    adapter."""
    memo = {id(p): p for p in module.parameters() if not p.requires_grad}
    return copy.deepcopy(module, memo)


def read_adapter_config(directory: str | os.PathLike) -> dict[str, Any]:
    """An adapter directory's ``adapter_config.json`` (read as data; a damaged one raises ``ValueError`` naming it)."""
    from textenv.files import parse_json

    file = Path(directory) / ADAPTER_CONFIG
    config = parse_json(file.read_bytes(), str(file))
    if not isinstance(config, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(config).__name__}")
    return config


def adapter_base_model(directory: str | os.PathLike) -> str | None:
    """The base model an adapter directory names (``base_model_name_or_path`` of its ``adapter_config.json``)."""
    base = read_adapter_config(directory).get("base_model_name_or_path")
    return base if isinstance(base, str) and base else None


def is_adapter_dir(directory: str | os.PathLike) -> bool:
    return (Path(directory) / ADAPTER_CONFIG).is_file()


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"peft(\..*)?")
        yield


def merge_adapter(base: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """``base`` (a freshly loaded base model) with the adapter saved in ``directory`` folded into its weights: a
    plain transformers model of ``base``'s class, with the adapted model's function (to float rounding)."""
    peft = require_peft()
    if not (Path(directory) / ADAPTER_WEIGHTS).is_file():
        raise ValueError(f"{directory} holds no {ADAPTER_WEIGHTS} (adapters are read from safetensors only)")
    with _quiet_peft():  # peft reads adapter_config.json as data (it has no auto_map) and the safetensors
        adapted = peft.PeftModel.from_pretrained(base, str(directory), is_trainable=False)
        return adapted.merge_and_unload()


def merged_model(directory: str | os.PathLike, base: str | None = None, seed: int = 0) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)``: the adapter of ``directory`` merged into its base model (``base``, else the one its
    ``adapter_config.json`` names) -- a causal LM (``task_type`` ``CAUSAL_LM``) from :func:`textenv.load_causal_lm`,
    never running code from disk."""
    from textenv.models import load_causal_lm, load_tokenizer

    task = read_adapter_config(directory).get("task_type")
    if task != "CAUSAL_LM":
        raise ValueError(f"{directory}: an adapter of task_type {task!r}; export merges CAUSAL_LM adapters (a "
                         "reward model's adapter is read by the reward_model reward as it is)")
    base = base or adapter_base_model(directory)
    if base is None:
        raise ValueError(f"{directory}/{ADAPTER_CONFIG} names no base model; pass it (--base)")
    model = merge_adapter(load_causal_lm(base, seed=seed, trust_remote_code=False), directory)
    tokenizer = load_tokenizer(str(directory)) if (Path(directory) / "tokenizer_config.json").is_file() else \
        load_tokenizer(base)
    return model, tokenizer


__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "AdapterOff", "LoRAAdapter", "LoRASettings", "TrainableWeights",
    "adapter_base_model", "copy_sharing_frozen", "is_adapter_dir", "merge_adapter", "merged_model", "require_peft",
]
