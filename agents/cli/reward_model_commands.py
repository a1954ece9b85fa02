"""The reward-model sub-commands of ``textenv``: ``train-rm`` and ``overoptimization``.

``register(subparsers)`` adds them to the ``textenv`` parser. Every :class:`RewardModelConfig` field is an option
(``--learning-rate``, ``--trainable-blocks`` ...), with the field's help text and default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from typing import Any

from agents.cli.common import CLIError, check_out


def register(subparsers: Any) -> None:
    """Add ``train-rm`` and ``overoptimization`` to a ``textenv`` sub-parser set."""
    from agents.reward_model.config import RewardModelConfig

    train = subparsers.add_parser(
        "train-rm",
        help="train a Bradley-Terry reward model on preference pairs (JSONL, TRL's format)",
        description="Train a reward model (a score head on a causal LM) on preference pairs. The output directory "
        "loads with AutoModelForSequenceClassification.from_pretrained, as the 'reward_model' reward "
        '(--reward \'{"name": "reward_model", "kwargs": {"path": DIR}}\'), as LM-PPO\'s value_model_init, and in '
        "TRL's GRPOTrainer(reward_funcs=DIR).",
    )
    train.add_argument("--data", required=True, help="preference JSONL: chosen, rejected, optional prompt and margin")
    train.add_argument(
        "--out", required=True,
        help="the reward-model directory to write (atomically): a new or empty folder, or an earlier train-rm output "
        "(only what train-rm wrote there is replaced)",
    )
    train.add_argument("--skip-invalid", action="store_true", help="skip (and report) invalid lines instead of failing")
    train.add_argument(
        "--trust-remote-code", action="store_true",
        help="allow --model to be a directory whose config asks to run Python shipped with it (off: refused)",
    )
    _add_config_options(train, RewardModelConfig, skip={"output_dir"})
    train.set_defaults(func=cmd_train_rm)

    from agents.reward_model.overoptimization import add_arguments

    over = subparsers.add_parser(
        "overoptimization",
        help="gold-vs-proxy reward-model overoptimization (Gao et al. 2022): best-of-n and RL against learned proxies",
    )
    add_arguments(over)
    over.set_defaults(func=cmd_overoptimization)


def _add_config_options(parser: argparse.ArgumentParser, config_class: type, skip: set[str]) -> None:
    hints = typing.get_type_hints(config_class)
    group = parser.add_argument_group(f"{config_class.__name__} (defaults shown)")
    for f in dataclasses.fields(config_class):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        kind = _base_type(hints[f.name])
        if kind is bool:
            group.add_argument(flag, type=_parse_bool, default=f.default, metavar="{true,false}", help=help_text)
        elif dataclasses.is_dataclass(kind):  # e.g. --lora '{"r": 8}' (or true): JSON, checked by the config
            group.add_argument(flag, type=_parse_json, default=f.default, metavar="JSON", help=help_text)
        else:
            group.add_argument(flag, type=_optional(kind), default=f.default, help=help_text)


def _base_type(hint: Any) -> type:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        if text.lower() == "none":
            return None
        try:
            return kind(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} or none, got {text!r}") from err

    parse.__name__ = kind.__name__
    return parse


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected JSON (true, or an object such as '{{\"r\": 8}}'), got {text!r}") \
            from err


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def cmd_train_rm(args: argparse.Namespace) -> int:
    from agents.checkpoint import OutputDirError
    from agents.reward_model import RewardModelConfig, RewardModelTrainer
    from agents.reward_model.trainer import COMMAND
    from rewards.builtin.reward_model import METADATA_FILE
    from textenv.models import ModelNotFoundError
    from textenv.preferences import PreferenceDataError

    check_out(args.out, COMMAND, (METADATA_FILE,))
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RewardModelConfig) if hasattr(args, f.name)}
    try:
        config = RewardModelConfig(**values, output_dir=args.out)
        config.validate()
    except ValueError as err:
        raise CLIError(str(err)) from err
    try:
        trainer = RewardModelTrainer(
            args.data, config, skip_invalid=args.skip_invalid, trust_remote_code=args.trust_remote_code
        )
    except (FileNotFoundError, ModelNotFoundError, PreferenceDataError) as err:
        raise CLIError(f"--data {args.data!r}: {err}" if isinstance(err, PreferenceDataError) else str(err)) from err
    except (ValueError, ImportError) as err:
        raise CLIError(str(err)) from err
    try:
        result = trainer.train()
    except OutputDirError as err:  # the folder changed while the model trained
        raise CLIError(f"--out {err}") from err
    except KeyboardInterrupt:
        print(
            f"textenv: interrupted; nothing written to {args.out} (a previous model there is untouched)",
            file=sys.stderr,
        )
        return 130
    summary = {
        "output_dir": result.output_dir,
        "best_eval_accuracy": result.best_eval_accuracy,
        "best_eval_loss": result.best_eval_loss,
        "best_step": result.best_step,
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 1),
        "train_pairs": len(trainer.train_index),
        "eval_pairs": len(trainer.eval_index),
    }
    print(json.dumps(summary, indent=2))
    return 0


def cmd_overoptimization(args: argparse.Namespace) -> int:
    from agents.reward_model.overoptimization import COMMAND, OUTPUT_FILES, config_from_args, run

    try:
        config = config_from_args(args)
        config.validate()  # every value, before any pair is sampled or model trained
    except (ValueError, TypeError) as err:
        raise CLIError(str(err)) from err
    check_out(config.out, COMMAND, OUTPUT_FILES)
    try:
        summary = run(config)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err
    print(json.dumps(summary, indent=2))
    return 0
