"""The ``pairs`` and ``label`` sub-commands: preference pairs from an env, and human labels in a terminal.

``register(subparsers)`` adds both to the ``textenv`` command line. Errors a user can act on raise
``CLIError`` (one line, exit code 2); Ctrl-C keeps what was written and exits with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from agents.cli.common import CLIError, check_env_id, check_env_kwargs, parse_kwargs, parse_reward_spec


def cmd_pairs(args: argparse.Namespace) -> int:
    import rewards
    from agents.preferences.pairs import PairConfig, generate_pairs

    check_env_id(args.env)
    env_kwargs = parse_kwargs(args.env_kwargs)
    check_env_kwargs(env_kwargs, args.env)
    gold = parse_reward_spec(args.gold)
    try:
        rewards.make(gold)
    except (ValueError, TypeError) as err:
        raise CLIError(f"--gold {args.gold!r}: {err}") from err
    try:
        config = PairConfig(
            env=args.env, policy=args.policy, pairs=args.pairs, gold=gold, k=args.k, labels=args.labels,
            temperature=args.temperature, label_noise=args.label_noise, min_gap=args.min_gap, seed=args.seed,
            prompts=args.prompts,
            sampling_temperature=args.sampling_temperature, prompts_per_batch=args.prompts_per_batch,
            env_kwargs=env_kwargs,
        )
        summary = generate_pairs(config, args.out, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"textenv: interrupted; the pairs written are kept in {args.out} (rerun to continue)", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err
    print(json.dumps(summary, indent=2))
    return 0


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Warnings raised inside (dropped identical pairs, skipped lines) printed as ``textenv: warning: ...``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            for warning in caught:
                print(f"textenv: warning: {warning.message}", file=sys.stderr)


def cmd_label(args: argparse.Namespace) -> int:
    from agents.preferences.labelling import LabelFileError, export_labels, label_session

    data = {"tokenizer": args.tokenizer, "skip_invalid": args.skip_invalid}
    if args.seed < 0:
        raise CLIError(f"--seed {args.seed}: expected an int >= 0 (it draws the A/B order of each pair)")
    try:
        with warnings_as_lines():
            if args.export:
                counts = export_labels(args.pairs_file, args.out, args.export, **data)
                print(json.dumps({"out": args.export, **counts}, indent=2))
                return 0
            label_session(args.pairs_file, args.out, seed=args.seed, **data)
    except KeyboardInterrupt:
        print(f"\ntextenv: interrupted; the answers given are kept in {args.out} (rerun to resume)", file=sys.stderr)
        return 130
    except (LabelFileError, ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err
    return 0


def register(subparsers: Any) -> None:
    """Add the ``pairs`` and ``label`` parsers to ``subparsers`` (from ``add_subparsers``)."""
    pairs = subparsers.add_parser(
        "pairs", help="sample k completions per prompt, label pairs with a gold reward; resumable JSONL"
    )
    pairs.add_argument("--env", default="MossText-v0", help="a registered env id (see: textenv envs)")
    pairs.add_argument("--policy", default="smollm2-135m-instruct", help="a built-in model name or model directory")
    pairs.add_argument("--pairs", type=int, required=True, help="pairs wanted in --out (a rerun tops the file up)")
    pairs.add_argument("--gold", required=True, help="gold reward spec: a name, module:attr, or a JSON list")
    pairs.add_argument("--out", required=True, help="the JSONL file to append pairs to (TRL RewardTrainer format)")
    pairs.add_argument("--k", type=int, default=2, help="completions per prompt (k(k-1)/2 pairs per prompt)")
    pairs.add_argument("--labels", choices=("deterministic", "bt"), default="deterministic",
                       help="higher gold wins (ties dropped), or a Bradley-Terry draw")
    pairs.add_argument("--temperature", type=float, default=1.0, help="Bradley-Terry temperature of the gold gap")
    pairs.add_argument("--label-noise", type=float, default=0.0, help="probability of flipping each label")
    pairs.add_argument("--min-gap", type=float, default=0.0,
                       help="drop pairs whose gold scores differ by less than this (default 0: only ties)")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--prompts", help="prompt source overriding the env's (e.g. builtin:train, a .txt/.jsonl)")
    pairs.add_argument("--sampling-temperature", type=float, default=1.0, help="the policy's sampling temperature")
    pairs.add_argument("--prompts-per-batch", type=int, default=8, help="prompts sampled together (env rows / k)")
    pairs.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="env arguments (JSON values)")
    pairs.add_argument("--no-progress", action="store_true", help="no progress bar")
    pairs.set_defaults(func=cmd_pairs)

    label = subparsers.add_parser(
        "label", help="label preference pairs by hand in the terminal (a/b/t/s/u/q); resumable"
    )
    label.add_argument("pairs_file", metavar="PAIRS_FILE", help="a preference JSONL file")
    label.add_argument("--out", required=True, help="the labels log (JSONL, appended and fsync'd per key)")
    label.add_argument("--seed", type=int, default=0, help="seed of the A/B order of each pair")
    label.add_argument("--tokenizer", help="model whose chat template renders chat-message pairs")
    label.add_argument("--skip-invalid", action="store_true", help="skip invalid lines of PAIRS_FILE (reported)")
    label.add_argument("--export", metavar="PREFS_FILE",
                       help="no labelling: write the a/b answers in --out as a preference file (ties, skips left out)")
    label.set_defaults(func=cmd_label)
