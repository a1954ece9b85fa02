"""What every ``textenv`` sub-command shares: the one-line user error, ``KEY=VALUE`` arguments, env-id and env-argument
checks, the ``--out`` folder check."""

from __future__ import annotations

import json
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
        except (ValueError, RecursionError):  # not JSON (or too deep, or an int too long): the text itself
            kwargs[key] = raw
    return kwargs


def parse_reward_spec(text: str, flag: str = "--gold") -> Any:
    """A ``--gold`` or ``--reward`` value: a JSON list or object (a weighted spec, a plugin with arguments such as
    ``{"name": "reward_model", "kwargs": {"path": DIR}}``), else the string itself (a name or ``module:attr``)."""
    if text.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as err:
            raise CLIError(f"{flag} {text!r}: not valid JSON ({getattr(err, 'msg', err)})") from err
    return text


def env_ids() -> list[str]:
    from textenv.registration import ENV_IDS

    return list(ENV_IDS)


def check_env_id(env_id: str) -> None:
    import textenv  # noqa: F401  (registers the ids)

    if env_id not in gym.registry:
        raise CLIError(f"unknown env {env_id!r}; registered textenv envs: {', '.join(env_ids())}")


def env_arguments(env_id: str | None = None) -> dict[str, Any]:
    """The keyword arguments env ``env_id`` takes, with their defaults: its entry point's own settings (a task
    env's ``settings_class``) and those of the task it builds on (:class:`textenv.dialogue_task.DialogueTask` for a
    multi-turn env, else :class:`textenv.task.TextTask`), plus ``render_mode``. Without an id: the single-turn
    env's."""
    import dataclasses
    import inspect

    from textenv.dialogue_env import DialogueEnv
    from textenv.dialogue_task import DialogueTask
    from textenv.task import TextTask

    env_class = None if env_id is None else gym.spec(env_id).entry_point
    if isinstance(env_class, str):
        from gymnasium.envs.registration import load_env_creator

        env_class = load_env_creator(env_class)
    task_class = DialogueTask if isinstance(env_class, type) and issubclass(env_class, DialogueEnv) else TextTask
    arguments: dict[str, Any] = {}
    settings = getattr(env_class, "settings_class", None)
    if settings is not None:
        arguments.update(
            {f.name: f.default if f.default is not dataclasses.MISSING else None for f in dataclasses.fields(settings)}
        )
    for name, param in inspect.signature(task_class.__init__).parameters.items():
        if name != "self":
            arguments[name] = param.default
    arguments["render_mode"] = None
    return arguments


def check_env_kwargs(env_kwargs: dict[str, Any], env_id: str | None = None) -> None:
    """Unknown env arguments and values of the wrong type are named, with what was expected."""
    arguments = env_arguments(env_id)
    for key, value in env_kwargs.items():
        if key not in arguments:
            raise CLIError(f"unknown env argument {key!r}; valid: {', '.join(arguments)}")
        default = arguments[key]
        expected = type(default) if isinstance(default, (bool, int, float)) else None
        if expected is not None and not (
            isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            or expected is float and isinstance(value, int) and not isinstance(value, bool)
        ):
            raise CLIError(f"env argument {key}={value!r}: expected {expected.__name__}")


def make_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    """``gym.make`` with errors a user can act on (bad kwarg names the argument and the expected type)."""
    from textenv.extras import MissingExtraError

    check_env_id(env_id)
    check_env_kwargs(env_kwargs, env_id)
    try:
        return gym.make(env_id, **env_kwargs)
    except TypeError as err:
        raise CLIError(f"bad env argument for {env_id}: {err}") from err
    except (ValueError, MissingExtraError, OSError, MemoryError, OverflowError) as err:  # FileNotFoundError is an
        # OSError
        raise CLIError(f"{env_id}: {err}") from err


def check_positive(flag: str, value: float) -> None:
    if not value > 0:
        raise CLIError(f"{flag} must be > 0, got {value}")


def check_out(out: str, command: str, markers: tuple[str, ...] = ()) -> None:
    """``--out``: a new or empty folder or an earlier output of ``command``, checked before any work."""
    from agents.checkpoint import check_output_dir

    try:
        check_output_dir(out, command, markers=markers)
    except ValueError as err:  # OutputDirError, or a damaged marker file
        raise CLIError(f"--out {err}") from err
