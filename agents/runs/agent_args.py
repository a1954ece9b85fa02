"""An agent's arguments (``--agent-kwargs``): what each one is, and a check of given values before a run starts.

LM agents (``lm-ppo``, ``grpo``, ``rloo``) take the fields of their config dataclass (:mod:`agents.lm.config`),
each documented in ``field(metadata={"help": ...})``; ``experimental`` takes a JSON object of the study switches
(:mod:`agents.lm.experimental`), and a study switch given at the top level, as configs before them did, is read
into it. SB3 agents take :func:`agents.sb3.make_sb3`'s keyword
arguments and the algorithm's constructor parameters; their defaults are the constructor's, overridden by
textenv's :data:`agents.sb3.DEFAULT_HYPERPARAMS`, and their help is the ``:param name:`` text of the
algorithm's docstring.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
from dataclasses import dataclass
from typing import Any

#: set by the runner from its own flags (``--agent``, ``--seed``, ``--out``, ``--no-progress``, ``--env-kwargs``)
RUNNER_ARGUMENTS = (
    "algo", "seed", "output_dir", "progress_bar", "env", "env_kwargs", "policy", "verbose", "_init_setup_model"
)


@dataclass(frozen=True)
class AgentArgument:
    """One argument an agent takes."""

    name: str
    type: str
    default: Any
    help: str
    textenv_default: bool = False  # the default is textenv's, not the library's


def agent_arguments(agent: str) -> list[AgentArgument]:
    """The arguments ``--agent-kwargs`` accepts for ``agent`` (a name of :data:`agents.runs.runner.AGENTS`)."""
    from agents.runs.runner import LM_AGENTS

    return _lm_arguments(agent) if agent in LM_AGENTS else _sb3_arguments(agent)


def lm_config_class(agent: str) -> type:
    from agents import lm

    return {"lm-ppo": lm.LMPPOConfig, "grpo": lm.GRPOConfig, "rloo": lm.RLOOConfig}[agent]


def _lm_arguments(agent: str) -> list[AgentArgument]:
    """The config's fields, the study switches (``experimental``) last."""
    config_class = lm_config_class(agent)
    arguments = []
    for f in dataclasses.fields(config_class):
        if f.name in RUNNER_ARGUMENTS:
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        arguments.append(AgentArgument(f.name, str(f.type), default, f.metadata.get("help", "")))
    return sorted(arguments, key=lambda argument: dataclasses.is_dataclass(argument.default))


def _study_switches(agent: str) -> list[AgentArgument]:
    """The fields of ``experimental`` that ``agent``'s config reads (``--help-agent`` lists them under it)."""
    from agents.lm.experimental import ExperimentalSettings

    config = lm_config_class(agent).__name__
    return [
        AgentArgument(f.name, str(f.type), f.default, f.metadata.get("help", ""))
        for f in dataclasses.fields(ExperimentalSettings)
        if f.metadata.get("only") in (None, config)
    ]


def _sb3_arguments(agent: str) -> list[AgentArgument]:
    from agents.sb3 import DEFAULT_HYPERPARAMS, make_sb3
    from agents.sb3.factory import algorithm_class

    cls = algorithm_class(agent)
    helps = _docstring_params(cls.__doc__ or "")
    helps.update(_google_args(make_sb3.__doc__ or ""))
    textenv_defaults = DEFAULT_HYPERPARAMS.get(agent, {})
    arguments = []
    seen = set()
    for function in (make_sb3, cls.__init__):
        for p in inspect.signature(function).parameters.values():
            if p.name in seen or p.name in RUNNER_ARGUMENTS or p.name == "self" or p.kind is p.VAR_KEYWORD:
                continue
            seen.add(p.name)
            ours = p.name in textenv_defaults
            default = textenv_defaults[p.name] if ours else (None if p.default is p.empty else p.default)
            annotation = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
            annotation = "" if p.annotation is p.empty else annotation
            arguments.append(AgentArgument(p.name, annotation, default, helps.get(p.name, ""), ours))
    return [*arguments, TOP_K_ARGUMENT]


#: an SB3 agent's argument that chooses between :func:`agents.sb3.make_sb3` and :func:`agents.sb3.make_top_k_sb3`
TOP_K_ARGUMENT = AgentArgument(
    "top_k", "int | None", None,
    "Act among the K most likely next tokens of an LM (the run's --model, default the env's tokenizer model): "
    "action i is its i-th most likely token, the token embeddings start from that LM's and stay frozen, and the "
    "PPO family gets textenv's top-k hyperparameters (agents.sb3.make_top_k_sb3). None: the whole vocabulary.",
)


def _docstring_params(doc: str) -> dict[str, str]:
    """``:param name: text`` (text running on over indented lines) -> {name: text}."""
    found = {}
    for match in re.finditer(r":param (\w+):(.*?)(?=\n\s*:param |\n\s*:return|\n\s*\n|\Z)", doc, re.S):
        found[match.group(1)] = " ".join(match.group(2).split())
    return found


def _google_args(doc: str) -> dict[str, str]:
    """``name: text`` entries of a Google-style ``Args:`` section; ``a, b: text`` documents both."""
    section = doc.partition("Args:")[2]
    found = {}
    for match in re.finditer(r"^\s{8}([\w, *]+): (.*?)(?=^\s{8}[\w, *]+: |\Z)", section, re.S | re.M):
        for name in match.group(1).replace("*", "").split(","):
            found[name.strip()] = " ".join(match.group(2).split())
    return found


def describe_agent(agent: str, width: int = 100) -> str:
    """Every argument of ``agent`` with its type, default and help, as ``--help-agent`` prints it."""
    from agents.runs.runner import LM_AGENTS

    arguments = agent_arguments(agent)
    if agent in LM_AGENTS:
        head = f"{agent}: fields of {lm_config_class(agent).__name__} (agents/lm/config.py)"
    else:
        head = (
            f"{agent}: arguments of agents.sb3.make_sb3 and the algorithm's constructor; (textenv) marks textenv's "
            "default (agents.sb3.DEFAULT_HYPERPARAMS), the others are the library's"
        )
    lines = [head, "pass them as --agent-kwargs KEY=VALUE (JSON values), e.g. --agent-kwargs learning_rate=0.001", ""]
    for argument in arguments:
        if dataclasses.is_dataclass(argument.default):  # the study switches: one JSON object, its keys below
            lines.append(f"  {argument.name}: JSON object, e.g. --agent-kwargs '{argument.name}={{\"KEY\": VALUE}}'")
            lines += _wrapped(argument.help, width, 6)
            for switch in _study_switches(agent):
                lines.append(f"      {switch.name}: {switch.type} = {switch.default!r}")
                lines += _wrapped(switch.help, width, 10)
            continue
        mark = " (textenv)" if argument.textenv_default else ""
        lines.append(f"  {argument.name}: {argument.type or 'any'} = {argument.default!r}{mark}")
        lines += _wrapped(argument.help, width, 6)
    return "\n".join(lines)


def _wrapped(text: str, width: int, indent: int) -> list[str]:
    return textwrap.wrap(text, width, initial_indent=" " * indent, subsequent_indent=" " * indent,
                         break_on_hyphens=False, break_long_words=False)


def check_agent_kwargs(agent: str, kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first unknown argument, or a value whose type its default rules out."""
    from agents.lm.experimental import ExperimentalSettings, coerce_settings
    from agents.runs.runner import LM_AGENTS

    arguments = {argument.name: argument for argument in agent_arguments(agent)}
    moved = {f.name for f in dataclasses.fields(ExperimentalSettings)} if agent in LM_AGENTS else set()
    for key, value in kwargs.items():
        if key in moved and key not in arguments:  # a study switch at the top level: the config reads it
            continue
        if key not in arguments:
            hint = " (set by the command line's own flags)" if key in RUNNER_ARGUMENTS else ""
            raise ValueError(
                f"unknown {agent} argument {key!r}{hint}; valid: {', '.join(arguments)} (see --help-agent)"
            )
        default = arguments[key].default
        if dataclasses.is_dataclass(default):  # a JSON object of its fields
            coerce_settings(type(default), value, f"{agent} argument {key}")
            continue
        expected = _expected_types(arguments[key])
        if expected is not None and not _matches(value, expected):
            names = " or ".join(sorted({t.__name__ for t in expected}))
            raise ValueError(f"{agent} argument {key}={value!r}: expected {names}")


_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _expected_types(argument: AgentArgument) -> tuple[type, ...] | None:
    """Types a JSON value may take, from the default (and ``None`` / tuple where the annotation allows them)."""
    default, annotation = argument.default, argument.type
    first = annotation.split("|")[0].strip()  # "int" of "int | None"
    if isinstance(default, bool):
        expected: tuple[type, ...] = (bool,)
    elif isinstance(default, int):
        expected = (int,)
    elif isinstance(default, float):
        expected = (int, float)
    elif isinstance(default, str):
        expected = (str,)
    elif isinstance(default, (tuple, list)):
        expected = (list, tuple)
    elif isinstance(default, dict):
        expected = (dict,)
    elif default is None and first in _SIMPLE_TYPES:
        expected = _SIMPLE_TYPES[first]
    else:
        return None  # default None: the annotation alone does not say enough to check a JSON value
    if "None" in annotation or "Optional" in annotation:
        expected += (type(None),)
    if "tuple" in annotation and list not in expected:
        expected += (list, tuple)
    return expected


def _matches(value: Any, expected: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in expected:
        return False
    return isinstance(value, expected)
