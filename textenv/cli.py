"""The ``textenv`` command line (also ``python -m textenv``).

Sub-commands: ``envs``, ``rewards``, ``sample``, ``train``, ``compare``, ``eval``, and ``pairs``, ``label``
(:mod:`agents.preference_commands`). Errors a user can act on (unknown names, bad arguments) print one line
and exit with code 2; Ctrl-C keeps partial results, marks them, and exits with 130.
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


# -- train / compare / eval ---------------------------------------------------------------------------------
def check_env_kwargs(env_kwargs: dict[str, Any]) -> None:
    """Unknown env arguments and values of the wrong type are named, with what was expected."""
    import inspect

    from textenv.task import TextTask

    params = inspect.signature(TextTask.__init__).parameters
    valid = [name for name in params if name != "self"] + ["render_mode"]
    for key, value in env_kwargs.items():
        if key not in valid:
            raise CLIError(f"unknown env argument {key!r}; valid: {', '.join(valid)}")
        default = params[key].default if key in params else None
        expected = type(default) if isinstance(default, (bool, int, float)) else None
        if expected is not None and not (
            isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            or expected is float and isinstance(value, int) and not isinstance(value, bool)
        ):
            raise CLIError(f"env argument {key}={value!r}: expected {expected.__name__}")


def _run_spec(args: argparse.Namespace, agent: str, seed: int) -> Any:
    from agents.runner import RunSpec, UnknownAgentError

    check_env_id(args.env)
    env_kwargs = parse_kwargs(args.env_kwargs)
    check_env_kwargs(env_kwargs)
    if args.reward:
        import rewards

        try:
            rewards.make(args.reward)
        except (ValueError, TypeError) as err:
            raise CLIError(f"--reward {args.reward!r}: {err}") from err
    try:
        return RunSpec(
            agent=agent,
            env=args.env,
            steps=args.steps,
            seed=seed,
            env_kwargs=env_kwargs,
            reward=args.reward,
            model=args.model,
            agent_kwargs=parse_kwargs(args.agent_kwargs, "--agent-kwargs"),
        )
    except UnknownAgentError as err:
        raise CLIError(str(err)) from err
    except ValueError as err:
        raise CLIError(str(err)) from err


def cmd_train(args: argparse.Namespace) -> int:
    from agents.runner import train

    spec = _run_spec(args, args.agent, args.seed)
    try:
        summary = train(spec, args.out, progress_bar=not args.no_progress)
    except KeyboardInterrupt:
        print(f"textenv: interrupted; checkpoint and partial curve kept in {args.out} (rerun to resume)", file=sys.stderr)
        return 130
    except TypeError as err:  # a bad agent argument
        raise CLIError(str(err)) from err
    print(json.dumps(summary, indent=2))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from agents.compare import compare

    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    if not agents:
        raise CLIError("--agents needs at least one agent name")
    for agent in agents:
        _run_spec(args, agent, 0)  # validate every name and argument before starting anything
    if args.seeds <= 0 or args.jobs <= 0:
        raise CLIError(f"--seeds and --jobs must be positive, got {args.seeds} and {args.jobs}")
    passthrough = []
    for flag, value in (("--reward", args.reward), ("--model", args.model)):
        if value:
            passthrough += [flag, value]
    for flag, values in (("--env-kwargs", args.env_kwargs), ("--agent-kwargs", args.agent_kwargs)):
        if values:
            passthrough += [flag, *values]
    try:
        rows, failed = compare(args.env, agents, args.seeds, args.steps, args.out, jobs=args.jobs, train_args=passthrough)
    except KeyboardInterrupt:
        print(f"textenv: interrupted; partial table in {args.out}/summary.md (rerun to finish)", file=sys.stderr)
        return 130
    print(open(f"{args.out}/summary.md").read())
    for pair in failed:
        print(f"textenv: run {pair.agent} seed {pair.seed} failed; see {pair.out_dir}/train.log", file=sys.stderr)
    return 1 if failed else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from agents.evaluate import evaluate

    try:
        result = evaluate(args.checkpoint, args.prompts, samples_per_prompt=args.samples, seed=args.seed)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from err
    print(json.dumps(result, indent=2))
    return 0


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

    train = sub.add_parser("train", help="train one agent (SB3/sb3-contrib or lm-ppo, grpo, rloo); resumable")
    _add_run_arguments(train)
    train.add_argument("--agent", required=True, help="one of: " + ", ".join(_agents()))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="run directory: checkpoints, curve.csv, summary.json")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    compare = sub.add_parser("compare", help="every (agent, seed) pair on one env: table, CSVs, PNG of curves")
    _add_run_arguments(compare, steps_flag="--budget")
    compare.add_argument("--agents", required=True, help="comma-separated, e.g. ppo,a2c,dqn")
    compare.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 per agent")
    compare.add_argument("--out", required=True)
    compare.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    compare.set_defaults(func=cmd_compare)

    evaluate = sub.add_parser("eval", help="reward (and, for LM agents, KL/perplexity) statistics on held-out prompts")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory (from train) or its checkpoint/")
    evaluate.add_argument("--prompts", required=True, help="a .txt/.jsonl file or builtin:test")
    evaluate.add_argument("--samples", type=int, default=1, help="completions per prompt")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(func=cmd_eval)

    from agents.preference_commands import register as register_preference_commands
    from agents.reward_model_commands import register as register_reward_model_commands

    register_preference_commands(sub)
    register_reward_model_commands(sub)
    return parser


def _agents() -> tuple[str, ...]:
    from agents.runner import AGENTS

    return AGENTS


def _add_run_arguments(parser: argparse.ArgumentParser, steps_flag: str = "--steps") -> None:
    parser.add_argument("--env", required=True, help="a registered env id (see: textenv envs)")
    parser.add_argument(steps_flag, dest="steps", type=int, required=True, help="environment steps (tokens) per run")
    parser.add_argument("--reward", help="reward spec overriding the env's (name or module:attr)")
    parser.add_argument("--model", help="LM agents: the policy model (default: the env's tokenizer model)")
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="env arguments (JSON values)")
    parser.add_argument("--agent-kwargs", nargs="*", metavar="KEY=VALUE", help="agent/config arguments (JSON values)")


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
