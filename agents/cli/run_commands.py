"""The run sub-commands of ``textenv``: ``envs``, ``rewards``, ``sample``, ``train``, ``compare``, ``eval``.

Trusted: the code installed here and the flags on the command line. Untrusted: everything read from disk or a hub
(run directories, checkpoints, model and tokenizer directories, prompt files), which is read as data only
(:mod:`agents.runs.untrusted`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym

from agents.cli.common import CLIError, check_out, check_positive, make_env, parse_kwargs, parse_reward_spec


# -- envs / rewards -----------------------------------------------------------------------------------------
def cmd_envs(args: argparse.Namespace) -> int:
    from textenv.registration import ENV_IDS, TASK_FAMILIES

    if args.family:
        return _list_family(args.family)
    for env_id, (kwargs, description) in ENV_IDS.items():
        print(f"{env_id}: {description}")
        for key, value in kwargs.items():
            print(f"    {key} = {value!r}")
    print("\ntask families (third-party libraries; `textenv envs FAMILY` lists a family's tasks):")
    for name, family in TASK_FAMILIES.items():
        installed = importlib.util.find_spec(family.library) is not None
        state = "installed" if installed else f'not installed: pip install "textenv[{family.extra}]"'
        print(f"    {name:<14} {family.env_id:<24} {family.library} {state}")
    return 0


def _list_family(name: str) -> int:
    from textenv.extras import MissingExtraError
    from textenv.registration import TASK_FAMILIES

    if name not in TASK_FAMILIES:
        raise CLIError(f"unknown task family {name!r}; expected one of: {', '.join(TASK_FAMILIES)}")
    try:
        if name == "reasoning-gym":
            from textenv.tasks.reasoning_gym_data import curriculum_names, task_names

            with_curriculum = set(curriculum_names())
            for task in task_names():
                print(f"{task}{'  (curriculum)' if task in with_curriculum else ''}")
            return 0
        from textenv.tasks.textarena_games import NotSinglePlayerError, game_ids, probe_game

        print("# single-player TextArena games that run here (each is started once, offline)", file=sys.stderr)
        for game in game_ids():
            error = probe_game(game)
            if error is None:
                print(game)
            elif not isinstance(error, NotSinglePlayerError):
                print(f"# {error}", file=sys.stderr)
        return 0
    except MissingExtraError as err:
        raise CLIError(str(err)) from err


def cmd_rewards(args: argparse.Namespace) -> int:
    import rewards

    available = rewards.available()
    width = max(map(len, available), default=0)
    for name, source in sorted(available.items()):
        print(f"{name:<{width}}  {source}")
    return 0


# -- sample -------------------------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    check_positive("-n", args.n)
    check_positive("--temperature", args.temperature)
    env_kwargs = parse_kwargs(args.env_kwargs)
    if args.reward:
        from textenv.registration import with_reward

        env_kwargs = with_reward(env_kwargs, parse_reward_spec(args.reward, "--reward"))
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
    print(f"mean reward over {args.n} episodes: {total / args.n:+.3f}")
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

    from agents.modeling.lm_policy import CausalLMPolicy, run_episode
    from textenv.models import load_causal_lm

    try:
        model = load_causal_lm(args.policy)
    except (OSError, ValueError) as err:
        raise CLIError(f"--policy {args.policy!r}: {err}") from err
    policy = CausalLMPolicy(model, env.unwrapped.task.max_prompt_tokens, temperature=args.temperature, seed=args.seed)

    def play_lm(seed: int) -> tuple[dict[str, Any], float]:
        result = run_episode(env, policy, seed=seed)
        return result, result["reward"]

    return play_lm


# -- train / compare / eval ---------------------------------------------------------------------------------
def _run_spec(args: argparse.Namespace, agent: str, seed: int, agent_kwargs_pairs: list[str] | None = None) -> Any:
    """The run the flags ask for, every value checked (the env is built once) before anything is written.
    ``agent_kwargs_pairs``: the agent's KEY=VALUE pairs (default: ``--agent-kwargs``)."""
    from agents.runs.agent_args import check_agent_kwargs
    from agents.runs.runner import RunSpec, UnknownAgentError

    env_kwargs = parse_kwargs(args.env_kwargs)
    pairs = args.agent_kwargs if agent_kwargs_pairs is None else agent_kwargs_pairs
    agent_kwargs = parse_kwargs(pairs, "--agent-kwargs")
    try:
        spec = RunSpec(
            agent=agent,
            env=args.env,
            steps=args.steps,
            seed=seed,
            env_kwargs=env_kwargs,
            reward=parse_reward_spec(args.reward, "--reward") if args.reward else None,
            model=args.model,
            agent_kwargs=agent_kwargs,
        )
        check_agent_kwargs(agent, agent_kwargs)
    except (UnknownAgentError, ValueError) as err:
        raise CLIError(str(err)) from err
    if spec.reward is not None:
        import rewards

        try:
            rewards.make(spec.reward)
        except (ValueError, TypeError, ImportError) as err:
            raise CLIError(f"--reward {args.reward!r}: {err}") from err
    make_env(args.env, spec.full_env_kwargs()).close()
    return spec


def _save_schedule(args: argparse.Namespace) -> Any:
    from agents.runs.runner import SaveSchedule

    try:
        return SaveSchedule(every_steps=args.save_every_steps, every_minutes=args.save_every_minutes)
    except ValueError as err:
        raise CLIError(str(err)) from err


def cmd_train(args: argparse.Namespace) -> int:
    from agents.checkpoint import DamagedCheckpointError, OutputDirError
    from agents.runs.runner import COMMAND, RUN_FILE, RunArgumentError, RunMismatchError, train

    if args.help_agent:
        return _help_agent(args.agent)
    missing = [
        flag for flag, value in (("--env", args.env), ("--steps", args.steps), ("--out", args.out)) if value is None
    ]
    if missing:
        raise CLIError(f"train needs {', '.join(missing)} (see textenv train --help)")
    check_out(args.out, COMMAND, (RUN_FILE,))
    spec = _run_spec(args, args.agent, args.seed)
    try:
        summary = train(spec, args.out, progress_bar=not args.no_progress, save=_save_schedule(args))
    except KeyboardInterrupt:
        print(
            f"textenv: interrupted; checkpoint and partial curve kept in {args.out} (rerun to resume)", file=sys.stderr
        )
        return 130
    except (RunMismatchError, RunArgumentError, DamagedCheckpointError, OutputDirError) as err:
        raise CLIError(str(err)) from err
    print(json.dumps(summary, indent=2))
    return 0


def _help_agent(agent: str) -> int:
    from agents.runs.agent_args import describe_agent
    from agents.runs.runner import AGENTS

    if agent not in AGENTS:
        raise CLIError(f"unknown agent {agent!r}; expected one of: {', '.join(AGENTS)}")
    print(describe_agent(agent))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from agents.runs.compare import COMMAND, COMPARE_FILE, SUMMARY_MD, compare

    check_out(args.out, COMMAND, (COMPARE_FILE,))
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    if not agents:
        raise CLIError("--agents needs at least one agent name")
    if args.seeds <= 0 or args.jobs <= 0:
        raise CLIError(f"--seeds and --jobs must be positive, got {args.seeds} and {args.jobs}")
    agent_kwargs = _agent_kwargs_per_agent(args, agents)
    for agent in agents:
        _run_spec(args, agent, 0, agent_kwargs[agent])  # validate every name and argument before starting anything
    _save_schedule(args)
    passthrough = [
        "--save-every-steps", str(args.save_every_steps), "--save-every-minutes", str(args.save_every_minutes)
    ]
    for flag, value in (("--reward", args.reward), ("--model", args.model)):
        if value:
            passthrough += [flag, value]
    if args.env_kwargs:
        passthrough += ["--env-kwargs", *args.env_kwargs]
    try:
        rows, failed = compare(
            args.env, agents, args.seeds, args.steps, args.out, jobs=args.jobs, train_args=passthrough,
            agent_kwargs=agent_kwargs,
        )
    except KeyboardInterrupt:
        print(f"textenv: interrupted; partial table in {args.out}/summary.md (rerun to finish)", file=sys.stderr)
        return 130
    print(Path(args.out, SUMMARY_MD).read_text())
    for pair in failed:
        print(f"textenv: run {pair.agent} seed {pair.seed} failed; see {pair.out_dir}/train.log", file=sys.stderr)
    return 1 if failed else 0


def _agent_kwargs_per_agent(args: argparse.Namespace, agents: list[str]) -> dict[str, list[str]]:
    """Each agent's KEY=VALUE pairs: ``--agent-kwargs``, then its ``--agent-kwargs-for`` pairs (a later key wins)."""
    per_agent = {agent: list(args.agent_kwargs or []) for agent in agents}
    for agent, *pairs in args.agent_kwargs_for or []:
        if agent not in per_agent:
            raise CLIError(f"--agent-kwargs-for {agent!r}: not one of --agents ({', '.join(agents)})")
        parse_kwargs(pairs, f"--agent-kwargs-for {agent}")  # a malformed pair is named with its flag
        per_agent[agent] += pairs
    return per_agent


def cmd_eval(args: argparse.Namespace) -> int:
    from agents.runs.evaluate import evaluate

    check_positive("--samples", args.samples)
    try:
        result = evaluate(
            args.checkpoint, args.prompts, samples_per_prompt=args.samples, seed=args.seed,
            reward=parse_reward_spec(args.reward, "--reward") if args.reward else None,
            trust_remote_code=args.trust_remote_code,
        )
    except (OSError, ValueError) as err:  # no run, a damaged checkpoint, a run asking to run code, bad prompts
        raise CLIError(str(err)) from err
    print(json.dumps(result, indent=2))
    return 0


# -- parser -------------------------------------------------------------------------------------------------
def add_envs_parser(sub: Any) -> None:
    envs = sub.add_parser("envs", help="list registered environments and their key arguments, and the task families")
    envs.add_argument(
        "family", nargs="?", help="list one task family's tasks: reasoning-gym (datasets) or textarena (games)"
    )
    envs.set_defaults(func=cmd_envs)


def add_rewards_parser(sub: Any) -> None:
    sub.add_parser("rewards", help="list reward plugins and where each comes from").set_defaults(func=cmd_rewards)


def add_sample_parser(sub: Any) -> None:
    sample = sub.add_parser("sample", help="print episodes: prompt, completion, reward components")
    sample.add_argument("--env", default="MossText-v0")
    sample.add_argument(
        "--policy", default="random",
        help="'random', a built-in model name, a model directory, or a checkpoint directory",
    )
    sample.add_argument("-n", type=int, default=3, help="episodes")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--reward", help="reward spec overriding the env's")
    sample.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE")
    sample.set_defaults(func=cmd_sample)


def add_train_parser(sub: Any) -> None:
    train = sub.add_parser("train", help="train one agent (SB3/sb3-contrib or lm-ppo, grpo, rloo); resumable")
    _add_run_arguments(train, required=False)
    train.add_argument("--agent", required=True, help="one of: " + ", ".join(_agents()))
    train.add_argument(
        "--help-agent", action="store_true", help="list the agent's --agent-kwargs (type, default, help) and exit"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="run directory: checkpoints, curve.csv, summary.json (required)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)


def add_compare_parser(sub: Any) -> None:
    compare = sub.add_parser("compare", help="every (agent, seed) pair on one env: table, CSVs, PNG of curves")
    _add_run_arguments(compare, steps_flag="--budget")
    compare.add_argument("--agents", required=True, help="comma-separated, e.g. ppo,a2c,dqn")
    compare.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 per agent")
    compare.add_argument("--out", required=True)
    compare.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    compare.add_argument(
        "--agent-kwargs-for", nargs="+", action="append", metavar=("AGENT", "KEY=VALUE"),
        help="arguments for one agent only, over --agent-kwargs (repeat the flag per agent), e.g. "
        "--agent-kwargs-for grpo num_generations=4 --agent-kwargs-for ppo top_k=8",
    )
    compare.set_defaults(func=cmd_compare)


def add_eval_parser(sub: Any) -> None:
    evaluate = sub.add_parser("eval", help="reward (and, for LM agents, KL/perplexity) statistics on held-out prompts")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory (from train) or its checkpoint/")
    evaluate.add_argument("--prompts", required=True, help="a .txt/.jsonl file or builtin:test")
    evaluate.add_argument("--samples", type=int, default=1, help="completions per prompt")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--reward", help="reward spec replacing the run's; needed to use a run whose reward is a 'module:attr' plugin"
    )
    evaluate.add_argument(
        "--trust-remote-code", action="store_true",
        help="allow the trust_remote_code the run asks for (runs Python shipped with its model or tokenizer)",
    )
    evaluate.set_defaults(func=cmd_eval)


def _agents() -> tuple[str, ...]:
    from agents.runs.runner import AGENTS

    return AGENTS


def _add_run_arguments(parser: argparse.ArgumentParser, steps_flag: str = "--steps", required: bool = True) -> None:
    suffix = "" if required else " (required)"
    parser.add_argument("--env", required=required, help="a registered env id (see: textenv envs)" + suffix)
    parser.add_argument(
        steps_flag, dest="steps", type=int, required=required, help="environment steps (tokens) per run" + suffix
    )
    parser.add_argument("--reward", help="reward spec overriding the env's (name or module:attr)")
    parser.add_argument(
        "--model",
        help="LM agents: the policy model; SB3 agents with top_k: the LM that ranks tokens (default: the env's "
        "tokenizer model)",
    )
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="env arguments (JSON values)")
    parser.add_argument(
        "--agent-kwargs", nargs="*", metavar="KEY=VALUE",
        help="agent/config arguments (JSON values); textenv train --agent NAME --help-agent lists them",
    )
    parser.add_argument(
        "--save-every-steps", type=int, default=0, metavar="N",
        help="also checkpoint every N environment steps (default 0: off)",
    )
    parser.add_argument(
        "--save-every-minutes", type=float, default=5.0, metavar="M",
        help="checkpoint every M minutes of training (default 5; 0: off); a kill loses at most one interval",
    )
