"""The ``textenv`` command line (also ``python -m agents``), the top layer of the project.

Sub-commands: ``envs``, ``rewards``, ``sample``, ``train``, ``compare``, ``eval`` (:mod:`agents.cli.run_commands`);
``pairs``, ``label`` (:mod:`agents.cli.preference_commands`); ``train-rm``, ``overoptimization``
(:mod:`agents.cli.reward_model_commands`); ``export`` (:mod:`agents.cli.export_commands`); all listed in
:data:`SUBCOMMANDS`. Errors a user can act on (unknown
names, bad values, a damaged checkpoint, a run directory made for another run or asking to run code) print one line
and exit with code 2; Ctrl-C keeps partial results, marks them, and exits with 130.

Trusted: the code installed here and the flags on the command line. Untrusted: everything read from disk or a hub
(run directories, checkpoints, model and tokenizer directories, prompt files), which is read as data only
(:mod:`agents.runs.untrusted`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from agents.cli import export_commands, preference_commands, reward_model_commands, run_commands
from agents.cli.common import CLIError

#: every sub-command, in the order ``textenv --help`` lists them: a function adding its parser to the sub-parsers
SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    run_commands.add_envs_parser,
    run_commands.add_rewards_parser,
    run_commands.add_sample_parser,
    run_commands.add_train_parser,
    run_commands.add_compare_parser,
    run_commands.add_eval_parser,
    preference_commands.register,
    reward_model_commands.register,
    export_commands.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textenv", description="Text generation as a Gymnasium environment.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"textenv: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("textenv: interrupted", file=sys.stderr)
        return 130


__all__ = ["CLIError", "SUBCOMMANDS", "build_parser", "main"]
