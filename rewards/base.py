"""The reward-model wrapper: :class:`RewardModel`, :class:`RewardResult`, errors and output validation.

A *plugin* is any callable ``(prompts, completions, **info) -> Sequence[float]`` returning one float per
completion. It is called once per batch of finished episodes. :class:`RewardModel` wraps a plugin, checks
its inputs and outputs, and turns every failure into an error that names the plugin.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# ``info`` keys whose values are per-completion lists and must match the batch size when present.
PER_ITEM_INFO_KEYS = ("prompt_ids", "completion_ids", "references")

_SHOW = 5  # how many bad values an error message lists


class RewardPluginError(RuntimeError):
    """A reward plugin raised, or returned something other than one finite number per completion."""


class UnknownRewardError(ValueError):
    """A reward spec names no built-in, registered or entry-point reward, or a ``module:attr`` that is missing."""


@dataclass(frozen=True)
class RewardResult:
    """Rewards for one batch.

    Attributes:
        total: float64 array of shape ``(B,)``, the reward for each completion.
        components: each part's unweighted reward, ``(B,)`` float64 arrays keyed by part name. A single
            plugin has one component, ``{name: total}``; a composite has one per part.
    """

    total: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.total.shape[0])


def check_batch(prompts: Sequence[str], completions: Sequence[str], info: Mapping[str, Any]) -> int:
    """Check that prompts, completions and the per-item ``info`` lists have one entry per completion."""
    if isinstance(prompts, str) or isinstance(completions, str):
        raise TypeError("prompts and completions must be lists of strings, not a single string")
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(f"got {len(prompts)} prompts but {n} completions; expected one prompt per completion")
    for key in PER_ITEM_INFO_KEYS:
        value = info.get(key)
        if value is not None and len(value) != n:
            raise ValueError(f"info[{key!r}] has {len(value)} entries but there are {n} completions")
    return n


def _is_number(value: Any) -> bool:
    if isinstance(value, (str, bytes)):
        return False
    if isinstance(value, (numbers.Real, np.number, np.bool_)):
        return True
    if getattr(value, "ndim", None) == 0 and hasattr(value, "dtype"):  # 0-d numpy arrays and torch tensors
        kind = getattr(value.dtype, "kind", None)
        if kind is not None:
            return kind in "biuf"
        return getattr(value.dtype, "is_complex", True) is False
    return False


def _listing(pairs: list[tuple[int, Any]]) -> str:
    shown = ", ".join(f"index {i}: {v!r}" for i, v in pairs[:_SHOW])
    more = f" (and {len(pairs) - _SHOW} more)" if len(pairs) > _SHOW else ""
    return shown + more


def to_rewards(name: str, output: Any, n: int) -> np.ndarray:
    """Validate a plugin's output and convert it to a float64 array of shape ``(n,)``.

    Raises:
        RewardPluginError: the output is not a sequence of ``n`` finite real numbers. The message names the
            plugin and the offending value(s) with their index.
    """
    if hasattr(output, "detach") and hasattr(output, "cpu"):  # a torch tensor, without importing torch
        output = output.detach().cpu().numpy()
    if isinstance(output, np.ndarray):
        if output.ndim != 1:
            raise RewardPluginError(
                f"reward plugin {name!r} returned an array of shape {output.shape}; expected shape ({n},)"
            )
        if output.dtype.kind not in "biuf":
            bad = [(i, v) for i, v in enumerate(output.tolist()) if not _is_number(v)] or [(0, output.dtype)]
            raise RewardPluginError(
                f"reward plugin {name!r} returned non-numeric values ({output.dtype}): {_listing(bad)}"
            )
        items = output.tolist()
    elif isinstance(output, (str, bytes, Mapping)) or not hasattr(output, "__iter__"):
        raise RewardPluginError(
            f"reward plugin {name!r} returned {type(output).__name__} {output!r:.200}; "
            f"expected a sequence of {n} floats, one per completion"
        )
    else:
        items = list(output)
    if len(items) != n:
        raise RewardPluginError(
            f"reward plugin {name!r} returned {len(items)} values for {n} completions; expected one per completion"
        )
    bad = [(i, v) for i, v in enumerate(items) if not _is_number(v)]
    if bad:
        raise RewardPluginError(f"reward plugin {name!r} returned non-numeric values: {_listing(bad)}")
    values = np.array([float(v) for v in items], dtype=np.float64).reshape(n)
    nonfinite = [(int(i), float(values[i])) for i in np.flatnonzero(~np.isfinite(values))]
    if nonfinite:
        raise RewardPluginError(f"reward plugin {name!r} returned non-finite values: {_listing(nonfinite)}")
    return values


class RewardModel:
    """A reward plugin with validation; what :func:`rewards.make` returns.

    ``model(prompts, completions, **info)`` returns the ``(B,)`` float64 rewards; :meth:`score` also returns
    the components. Picklable whenever the plugin is (built-in plugins build their models lazily and leave
    them out of the pickle).

    Attributes:
        name: the reward's name, used in error messages and as its component name.
        plugin: the wrapped callable.
    """

    def __init__(self, plugin: Callable[..., Sequence[float]], name: str | None = None) -> None:
        if not callable(plugin):
            raise TypeError(f"a reward plugin must be callable, got {type(plugin).__name__}: {plugin!r}")
        self.plugin = plugin
        self.name = name or plugin_name(plugin)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> RewardResult:
        """Score a batch of finished completions.

        Args:
            prompts: the prompt of each completion.
            completions: the generated texts.
            **info: optional extras passed to the plugin (``prompt_ids``, ``completion_ids``, ``references``).

        Raises:
            ValueError: the batch is malformed (``len(prompts) != len(completions)``, ...).
            RewardPluginError: the plugin raised or returned a bad value.
        """
        n = check_batch(prompts, completions, info)
        total = self._score(list(prompts), list(completions), n, info)
        return RewardResult(total=total, components={self.name: total})

    def _score(self, prompts: list[str], completions: list[str], n: int, info: dict[str, Any]) -> np.ndarray:
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        try:
            output = self.plugin(prompts, completions, **info)
        except RewardPluginError:
            raise
        except Exception as err:
            raise RewardPluginError(
                f"reward plugin {self.name!r} raised {type(err).__name__}: {err}"
            ) from err
        return to_rewards(self.name, output, n)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> np.ndarray:
        """The total reward of each completion, shape ``(B,)`` float64 (``score(...).total``)."""
        return self.score(prompts, completions, **info).total

    def __repr__(self) -> str:
        return f"RewardModel(name={self.name!r}, plugin={self.plugin!r})"


class CompositeReward(RewardModel):
    """A weighted sum of reward models. ``components`` holds each part's unweighted reward under its name."""

    def __init__(self, parts: Sequence[tuple[str, RewardModel, float]], name: str | None = None) -> None:
        if not parts:
            raise ValueError("a composite reward needs at least one part")
        self.parts: list[tuple[str, RewardModel, float]] = list(parts)
        self.plugin = self
        self.name = name or "+".join(part_name for part_name, _, _ in self.parts)

    @property
    def weights(self) -> dict[str, float]:
        return {part_name: weight for part_name, _, weight in self.parts}

    def score(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> RewardResult:
        n = check_batch(prompts, completions, info)
        prompts, completions = list(prompts), list(completions)
        total = np.zeros(n, dtype=np.float64)
        components: dict[str, np.ndarray] = {}
        for part_name, model, weight in self.parts:
            value = model.score(prompts, completions, **info).total
            components[part_name] = value
            total += weight * value
        return RewardResult(total=total, components=components)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}*{w:g}" if w != 1 else n for n, _, w in self.parts)
        return f"CompositeReward({inner})"


def plugin_name(plugin: Any) -> str:
    """A default name for a plugin: its registered name, else its ``__name__``, else its class name."""
    owner = plugin if isinstance(plugin, type) or hasattr(plugin, "__code__") else type(plugin)
    registered = getattr(owner, "__dict__", {}).get("reward_name")  # not inherited by subclasses
    if isinstance(registered, str):
        return registered
    name = getattr(plugin, "__name__", None)
    return name if isinstance(name, str) else type(plugin).__name__


def check_weight(weight: Any, where: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (numbers.Real, np.number)) or not math.isfinite(weight):
        raise ValueError(f"{where}: weight must be a finite number, got {weight!r}")
    return float(weight)
