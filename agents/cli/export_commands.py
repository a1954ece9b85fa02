"""``textenv export``: a LoRA adapter folded into its base model, written as a plain transformers directory.

The source is an adapter directory (``adapter_config.json``), a checkpoint holding the policy's adapter, an LM run's
``--out`` directory (its newest whole checkpoint), or a reward-model directory trained with ``lora``. The result
loads with ``AutoModelForCausalLM.from_pretrained`` (an LM policy) or ``AutoModelForSequenceClassification`` (a
reward model, with its ``textenv_reward_model.json``), with no ``peft`` needed to read it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from agents.cli.common import CLIError, check_out

COMMAND = "export"  # the command whose output folder --out is (agents.checkpoint.claim_output_dir)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="merge a LoRA adapter (a checkpoint's, a run's or a reward model's) into a plain transformers directory",
        description=__doc__.split("\n\n")[0] + " Needs pip install 'textenv[lora]'.",
    )
    parser.add_argument("source", help="an adapter directory, a checkpoint, a run's --out directory, or a LoRA "
                        "reward-model directory")
    parser.add_argument("--out", required=True, help="the directory to write (atomically): a new or empty folder, or "
                        "an earlier export (only what export wrote there is replaced)")
    parser.add_argument("--base", default=None, help="the base model (name or directory) the adapter was trained "
                        "on; default: the one the adapter names")
    parser.set_defaults(func=cmd_export)


def adapter_source(source: str) -> Path:
    """The adapter directory ``source`` means: itself, or its newest whole checkpoint's policy adapter."""
    from agents.checkpoint import DamagedCheckpointError, find_checkpoint
    from agents.lm.base import POLICY_DIR
    from agents.lm.lora import is_adapter_dir

    path = Path(source)
    if not path.is_dir():
        raise CLIError(f"{source!r} is not a directory")
    if is_adapter_dir(path):
        return path
    try:
        found = find_checkpoint(path)
    except DamagedCheckpointError as err:
        raise CLIError(str(err)) from err
    if found is not None and is_adapter_dir(found / POLICY_DIR):
        return found / POLICY_DIR
    what = "a checkpoint without a LoRA adapter" if found is not None else "no adapter and no checkpoint"
    raise CLIError(f"{source!r} holds {what}; expected an adapter directory (adapter_config.json), a checkpoint or "
                   "run trained with lora, or a reward model trained with lora")


def export(source: str, out: str, base: str | None = None) -> Path:
    """Merge the adapter at ``source`` (see :func:`adapter_source`) and write ``out`` atomically; return it."""
    from agents.checkpoint import check_output_dir, write_directory_atomically
    from agents.lm.lora import merged_model
    from rewards.builtin.reward_model import METADATA_FILE, TOKEN_SCORES_FILE, load_classifier, read_metadata

    check_output_dir(out, COMMAND)  # before any model is loaded
    directory = adapter_source(source)
    metadata = read_metadata(directory)
    if metadata.get("lora"):  # a reward model: its classifier, merged; its metadata and token table beside it
        if base is not None:
            metadata["lora"]["base_model"] = base
        from textenv.models import load_tokenizer

        model, tokenizer = load_classifier(directory, metadata), load_tokenizer(str(directory))
        plain = {key: value for key, value in metadata.items() if key != "lora"}
        plain["merged_from"] = {"adapter": str(directory), **metadata["lora"]}
    else:
        model, tokenizer = merged_model(directory, base)
        plain = None

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if plain is not None:
            (tmp / METADATA_FILE).write_text(json.dumps(plain, indent=2))
            if (directory / TOKEN_SCORES_FILE).is_file():
                shutil.copy2(directory / TOKEN_SCORES_FILE, tmp / TOKEN_SCORES_FILE)

    target = Path(out)
    write_directory_atomically(target, COMMAND, write)
    return target


def cmd_export(args: argparse.Namespace) -> int:
    from textenv.models import ModelNotFoundError

    check_out(args.out, COMMAND)
    try:
        target = export(args.source, args.out, args.base)
    except (ValueError, ImportError, FileNotFoundError, ModelNotFoundError, json.JSONDecodeError) as err:
        raise CLIError(str(err).splitlines()[0]) from err
    print(json.dumps({"source": args.source, "output_dir": str(target)}))
    return 0
