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

from rewards.timeout import CallTimeout, TimedCaller

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
    try:
        values = np.array([float(v) for v in items], dtype=np.float64).reshape(n)
    except (OverflowError, TypeError, ValueError) as err:  # e.g. an int too large for a float
        raise RewardPluginError(f"reward plugin {name!r} returned a value that is not a float: {err}") from err
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
        timeout: seconds one plugin call may take (``None``: no limit); see :meth:`with_timeout`.
    """

    def __init__(
        self, plugin: Callable[..., Sequence[float]], name: str | None = None, timeout: float | None = None
    ) -> None:
        if not callable(plugin):
            raise TypeError(f"a reward plugin must be callable, got {type(plugin).__name__}: {plugin!r}")
        self.plugin = plugin
        self.name = name or plugin_name(plugin)
        self.timeout = check_timeout(timeout)
        self._caller = TimedCaller(self.timeout) if self.timeout is not None else None

    def with_timeout(self, timeout: float | None) -> RewardModel:
        """A copy of this model whose plugin calls fail after ``timeout`` seconds (``None``: no limit).

        A call that runs out of time raises :class:`RewardPluginError` saying so, and the environment that made
        the call is left as before the step. Python cannot stop the call: it goes on in a background daemon
        thread until it returns by itself, and its result is dropped (see :mod:`rewards.timeout`). So the plugin
        should be safe to call from two threads at once, and a plugin that never returns keeps its thread until
        the process exits.
        """
        copy = RewardModel.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.timeout = check_timeout(timeout)
        copy._caller = TimedCaller(copy.timeout) if copy.timeout is not None else None
        return copy

    def score(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> RewardResult:
        """Score a batch of finished completions.

        Args:
            prompts: the prompt of each completion.
            completions: the generated texts.
            **info: optional extras passed to the plugin (``prompt_ids``, ``completion_ids``, ``references``).

        Raises:
            ValueError: the batch is malformed (``len(prompts) != len(completions)``, ...).
            RewardPluginError: the plugin raised (also while its output, e.g. a generator, was read), ran past
                its timeout, or returned a bad value. Exceptions that are not ``Exception`` subclasses
                (``KeyboardInterrupt``, ``SystemExit``) propagate unchanged.
        """
        n = check_batch(prompts, completions, info)
        total = self._score(list(prompts), list(completions), n, info)
        return RewardResult(total=total, components={self.name: total})

    def _score(self, prompts: list[str], completions: list[str], n: int, info: dict[str, Any]) -> np.ndarray:
        if n == 0:
            return np.zeros(0, dtype=np.float64)

        def call() -> Any:
            return _materialise(self.plugin(prompts, completions, **info))

        try:
            caller = getattr(self, "_caller", None)  # None also for subclasses that skip __init__
            output = call() if caller is None else caller.call(call)
        except RewardPluginError:
            raise
        except CallTimeout as err:
            raise RewardPluginError(
                f"reward plugin {self.name!r} did not return within its timeout of {self.timeout:g} s; the call "
                "goes on in a background thread and its result will be dropped"
            ) from err
        except Exception as err:
            raise RewardPluginError(
                f"reward plugin {self.name!r} raised {type(err).__name__}: {err}"
            ) from err
        return to_rewards(self.name, output, n)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> np.ndarray:
        """The total reward of each completion, shape ``(B,)`` float64 (``score(...).total``)."""
        return self.score(prompts, completions, **info).total

    def __repr__(self) -> str:
        timeout = f", timeout={self.timeout:g}" if self.timeout is not None else ""
        return f"RewardModel(name={self.name!r}, plugin={self.plugin!r}{timeout})"


class CompositeReward(RewardModel):
    """A weighted sum of reward models. ``components`` holds each part's unweighted reward under its name.

    Each part is validated on its own (one finite number per completion); the weighted total is checked too, as
    finite values with large weights can sum to ``inf``.
    """

    def __init__(self, parts: Sequence[tuple[str, RewardModel, float]], name: str | None = None) -> None:
        if not parts:
            raise ValueError("a composite reward needs at least one part")
        self.parts: list[tuple[str, RewardModel, float]] = list(parts)
        self.plugin = self
        self.name = name or "+".join(part_name for part_name, _, _ in self.parts)
        self.timeout = None
        self._caller = None

    @property
    def weights(self) -> dict[str, float]:
        return {part_name: weight for part_name, _, weight in self.parts}

    def with_timeout(self, timeout: float | None) -> CompositeReward:
        """A copy whose parts' plugin calls each fail after ``timeout`` seconds (:meth:`RewardModel.with_timeout`)."""
        parts = [(part_name, model.with_timeout(timeout), weight) for part_name, model, weight in self.parts]
        copy = CompositeReward(parts, self.name)
        copy.timeout = check_timeout(timeout)
        return copy

    def score(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> RewardResult:
        n = check_batch(prompts, completions, info)
        prompts, completions = list(prompts), list(completions)
        total = np.zeros(n, dtype=np.float64)
        components: dict[str, np.ndarray] = {}
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, by name
            for part_name, model, weight in self.parts:
                value = model.score(prompts, completions, **info).total
                components[part_name] = value
                total += weight * value
        bad = np.flatnonzero(~np.isfinite(total))
        if bad.size:
            row = int(bad[0])
            terms = " + ".join(
                f"{weight:g} * {part_name} ({components[part_name][row]:g})" for part_name, _, weight in self.parts
            )
            raise RewardPluginError(
                f"reward {self.name!r}: the weighted total of completion {row} is {total[row]} ({terms}); "
                f"{bad.size} of {n} totals are not finite. Use smaller weights."
            )
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


def check_timeout(timeout: Any, name: str = "timeout") -> float | None:
    """``timeout`` as a float, or ``None``; a ``ValueError`` naming ``name`` unless it is ``None`` or a positive
    finite number."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (numbers.Real, np.number)) or not 0 < timeout < math.inf:
        raise ValueError(f"{name} must be None or a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _materialise(output: Any) -> Any:
    """A plugin's output with an iterable that is not a sequence (a generator, ``map``, ...) read into a list,
    so that errors raised while it is read happen inside the guarded plugin call."""
    if isinstance(output, (np.ndarray, Sequence, Mapping, str, bytes)) or hasattr(output, "detach"):
        return output
    if hasattr(output, "__iter__"):
        return list(output)
    return output
