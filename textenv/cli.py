"""The ``textenv`` command line (also ``python -m textenv``).

Sub-commands: ``envs``, ``rewards``, ``sample`` (here), and the training ones registered by
:mod:`textenv.cli_train` (``train``, ``compare``, ``eval``) when that module is present.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import gymnasium as gym


class CLIError(Exception):
    """A user error: printed as ``textenv: error: ...`` with exit code 2, no traceback."""


def parse_kwargs(pairs: Sequence[str] | None, what: str = "--env-kwargs") -> dict[str, Any]:
    """``["max_new_tokens=8", "prompts=builtin:test"]`` -> dict; values are JSON when they parse, else str."""
    kwargs: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"{what} takes KEY=VALUE pairs, got {pair!r}")
        try:
            kwargs[key] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key] = raw
    return kwargs


def env_ids() -> list[str]:
    from textenv.registration import ENV_IDS

    return list(ENV_IDS)


def check_env_id(env_id: str) -> None:
    import textenv  # noqa: F401  (registers the ids)

    if env_id not in gym.registry:
        raise CLIError(f"unknown env {env_id!r}; registered textenv envs: {', '.join(env_ids())}")


def make_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    """``gym.make`` with errors a user can act on (bad kwarg names the argument and the expected type)."""
    check_env_id(env_id)
    try:
        return gym.make(env_id, **env_kwargs)
    except TypeError as err:
        raise CLIError(f"bad env argument for {env_id}: {err}") from err
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(str(err)) from err


# -- envs / rewards -----------------------------------------------------------------------------------------
def cmd_envs(args: argparse.Namespace) -> int:
    from textenv.registration import ENV_IDS

    for env_id, (kwargs, description) in ENV_IDS.items():
        print(f"{env_id}: {description}")
        for key, value in kwargs.items():
            print(f"    {key} = {value!r}")
    return 0


def cmd_rewards(args: argparse.Namespace) -> int:
    import rewards

    available = rewards.available()
    width = max(map(len, available), default=0)
    for name, source in sorted(available.items()):
        print(f"{name:<{width}}  {source}")
    return 0


# -- sample -------------------------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    env_kwargs = parse_kwargs(args.env_kwargs)
    if args.reward:
        env_kwargs["reward"] = args.reward
    env = make_env(args.env, env_kwargs)
    act = _policy(args, env)
    total = 0.0
    for episode in range(args.n):
        info, reward = act(args.seed + episode)
        total += reward
        print(f"--- episode {episode}")
        print(f"prompt:     {info['prompt']}")
        print(f"completion: {info['completion'].strip()}")
        components = ", ".join(f"{k}={v:+.3f}" for k, v in info["reward_components"].items())
        print(f"reward:     {reward:+.3f}  ({components})")
    print(f"mean reward over {args.n} episodes: {total / max(args.n, 1):+.3f}")
    return 0


def _policy(args: argparse.Namespace, env: gym.Env) -> Any:
    """A function ``seed -> (last info, reward)`` playing one episode with the chosen policy."""
    if args.policy == "random":

        def play_random(seed: int) -> tuple[dict[str, Any], float]:
            env.reset(seed=seed)
            env.action_space.seed(seed)
            while True:
                mask = env.unwrapped.action_masks()
                _, reward, terminated, truncated, info = env.step(env.action_space.sample(mask.astype("int8")))
                if terminated or truncated:
                    return info, float(reward)

        return play_random

    from agents.lm_policy import CausalLMPolicy, run_episode
    from textenv.models import load_causal_lm

    try:
        model = load_causal_lm(args.policy)
    except FileNotFoundError as err:
        raise CLIError(f"--policy {args.policy!r}: {err}") from err
    policy = CausalLMPolicy(model, env.unwrapped.task.max_prompt_tokens, temperature=args.temperature, seed=args.seed)

    def play_lm(seed: int) -> tuple[dict[str, Any], float]:
        result = run_episode(env, policy, seed=seed)
        return result, result["reward"]

    return play_lm


# -- parser -------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textenv", description="Text generation as a Gymnasium environment.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("envs", help="list registered environments and their key arguments").set_defaults(func=cmd_envs)
    sub.add_parser("rewards", help="list reward plugins and where each comes from").set_defaults(func=cmd_rewards)

    sample = sub.add_parser("sample", help="print episodes: prompt, completion, reward components")
    sample.add_argument("--env", default="MossText-v0")
    sample.add_argument("--policy", default="random", help="'random', a built-in model name, a model directory, or a checkpoint directory")
    sample.add_argument("-n", type=int, default=3, help="episodes")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--reward", help="reward spec overriding the env's")
    sample.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE")
    sample.set_defaults(func=cmd_sample)

    try:
        from textenv import cli_train
    except ImportError:
        pass
    else:
        cli_train.add_commands(sub)
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


if __name__ == "__main__":
    sys.exit(main())
