"""What a run directory may ask for: it is data, never code.

A run directory (``run.json``, checkpoints, model and tokenizer directories, prompt files) may come from someone
else, so nothing read from it may import a module or run code:

* a reward named as ``"module:attr"`` (anywhere in the reward spec: the run's ``reward``, ``env_kwargs["reward"]``,
  the names inside a reward list) would import ``module``: refused unless the user passes ``--reward`` on the
  command line, which then replaces the run's reward;
* ``trust_remote_code`` set anywhere in ``run.json`` (env kwargs, reward kwargs, agent kwargs) would run Python
  files shipped with a tokenizer or model directory: refused unless the user passes ``--trust-remote-code``;
* an env id of the form ``"module:Env-v0"`` would make Gymnasium import ``module``: refused (only ids registered
  in this process are accepted).

Rewards named by entry point come from installed packages, which the user chose to install: they are allowed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import gymnasium as gym

from agents.runs.agent_args import check_agent_kwargs
from agents.runs.runner import RunSpec
from textenv.registration import ENV_IDS


class UntrustedRunError(ValueError):
    """A run directory asks for something that would run code; the message says which flag allows it."""


def module_references(reward: Any) -> list[str]:
    """The ``"module:attr"`` strings in a reward spec (a name, a list of names/tuples/dicts, a dict)."""
    if isinstance(reward, str):
        return [reward] if ":" in reward else []
    if isinstance(reward, Mapping):
        return module_references(reward.get("name"))
    if isinstance(reward, (list, tuple)):
        return [ref for item in reward for ref in module_references(item)]
    return []


def remote_code_requests(value: Any, where: str) -> Iterator[str]:
    """Where in ``value`` (nested dicts and lists) ``trust_remote_code`` is set to anything but false."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "trust_remote_code" and item not in (False, None, 0):
                yield f"{where}.{key}"
            else:
                yield from remote_code_requests(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from remote_code_requests(item, f"{where}[{index}]")


def check_untrusted_spec(
    spec: RunSpec, source: str, *, reward: Any = None, trust_remote_code: bool = False
) -> RunSpec:
    """The spec read from ``source`` (a run directory), made safe to use, or :class:`UntrustedRunError`.

    Args:
        spec: as read from ``source``'s ``run.json``.
        source: where it was read (for the message).
        reward: the user's ``--reward``: replaces the run's reward (also one given in ``env_kwargs``, and its
            ``reward_kwargs``).
        trust_remote_code: the user's ``--trust-remote-code``: allows the ``trust_remote_code`` the run asks for.
    """
    if ":" in spec.env:
        raise UntrustedRunError(
            f"{source} names env {spec.env!r}, which would import a module; a run directory is data, not code: "
            "only registered env ids are accepted"
        )
    if spec.env not in gym.registry:
        raise UntrustedRunError(
            f"{source} names env {spec.env!r}, which is not registered here; textenv's envs: {', '.join(ENV_IDS)}"
        )
    env_kwargs = dict(spec.env_kwargs)
    if reward is not None:
        env_kwargs.pop("reward", None)
        env_kwargs.pop("reward_kwargs", None)  # they were the run's reward's
        spec = replace(spec, reward=reward, env_kwargs=env_kwargs)
    else:
        modules = module_references(spec.reward) + module_references(env_kwargs.get("reward"))
        if modules:
            raise UntrustedRunError(
                f"{source} names reward {modules[0]!r}, which would import module {modules[0].partition(':')[0]!r}; "
                f"a run directory is data, not code: pass --reward {modules[0]!r} to use that plugin"
            )
    requests = [
        *remote_code_requests(spec.env_kwargs, "env_kwargs"),
        *(remote_code_requests({"reward": spec.reward}, "run") if reward is None else ()),
        *remote_code_requests(spec.agent_kwargs, "agent_kwargs"),
    ]
    try:
        check_agent_kwargs(spec.agent, spec.agent_kwargs)
    except ValueError as err:
        raise UntrustedRunError(f"{source}: {err}") from err
    if requests and not trust_remote_code:
        raise UntrustedRunError(
            f"{source} sets {requests[0]}, which would run Python code shipped with a model or tokenizer; "
            "a run directory is data, not code: pass --trust-remote-code if you trust that code"
        )
    return spec
