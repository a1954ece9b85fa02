"""The reward registry: built-ins, :func:`register`, entry points, and :func:`make`.

Names resolve in this order: built-ins and names registered with :func:`register`, then entry points of the
group ``textenv.rewards`` (loaded only when used), then ``"module:attr"`` strings.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from rewards.base import CompositeReward, RewardModel, UnknownRewardError, check_weight, plugin_name
from textenv.user_warnings import warn_caller

ENTRY_POINT_GROUP = "textenv.rewards"
BUILTIN_SOURCE = "builtin"

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry:
    obj: Any
    source: str


_REGISTRY: dict[str, _Entry] = {}
_WARNED: set[tuple[str, str]] = set()


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__qualname__
    return f"{module}.{name}"


def register(name: str) -> Callable[[T], T]:
    """Class or function decorator registering a reward plugin under ``name``.

    A class is instantiated by :func:`make` with the keyword arguments given there; a function is used as the
    plugin itself. Registering a name twice raises ``ValueError``.

    Example::

        @rewards.register("shouting")
        def shouting(prompts, completions, **info):
            return [sum(c.isupper() for c in text) / max(len(text), 1) for text in completions]
    """
    if not isinstance(name, str) or not name.strip() or ":" in name or name != name.strip():
        raise ValueError(f"reward name must be a non-empty string without ':' or surrounding spaces, got {name!r}")

    def decorator(obj: T) -> T:
        if not callable(obj):
            raise TypeError(f"@register({name!r}) needs a class or a function, got {type(obj).__name__}")
        if name in _REGISTRY:
            raise ValueError(
                f"reward name {name!r} is already registered ({_REGISTRY[name].source}); pick another name"
            )
        module = getattr(obj, "__module__", "") or ""
        source = BUILTIN_SOURCE if module.startswith("rewards.builtin") else f"registered: {_qualname(obj)}"
        _REGISTRY[name] = _Entry(obj, source)
        try:
            obj.reward_name = name  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            pass
        return obj

    return decorator


def _warn_once(key: tuple[str, str], message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warn_caller(message, RuntimeWarning)


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) or "?"


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Entry points of group ``textenv.rewards`` by name, not loaded. Registered names shadow them (warned once)."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            _warn_once(
                ("shadowed", ep.name),
                f"reward entry point {ep.name!r} = {ep.value!r} from {_dist_name(ep)!r} is ignored: "
                f"the {_REGISTRY[ep.name].source} reward of the same name takes precedence",
            )
        elif ep.name in found:
            first = found[ep.name]
            if first.value != ep.value:
                _warn_once(
                    ("duplicate", ep.name),
                    f"reward entry point {ep.name!r} is defined twice: {first.value!r} from {_dist_name(first)!r} "
                    f"(used) and {ep.value!r} from {_dist_name(ep)!r} (ignored)",
                )
        else:
            found[ep.name] = ep
    return found


def available() -> dict[str, str]:
    """All reward names and where each comes from.

    Returns:
        ``{name: source}`` with source ``"builtin"``, ``"registered: module.qualname"`` or
        ``"entry point: <dist name> (<module:attr>)"``. Entry points are listed without being imported.
    """
    names = {name: entry.source for name, entry in _REGISTRY.items()}
    for name, ep in _entry_points().items():
        names[name] = f"entry point: {_dist_name(ep)} ({ep.value})"
    return dict(sorted(names.items()))


def _import_attr(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not module_name or not attr:
        raise UnknownRewardError(f"reward spec {spec!r}: expected 'module:attr', e.g. 'my_package.rewards:MyReward'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise UnknownRewardError(
                f"reward spec {spec!r}: module {module_name!r} could not be imported ({err})"
            ) from err
        raise  # the module exists but one of its own imports is missing
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            public = sorted(n for n in dir(module) if not n.startswith("_"))
            raise UnknownRewardError(
                f"reward spec {spec!r}: module {module_name!r} has no attribute {attr!r}"
                f" (it has: {', '.join(public[:30])}{', ...' if len(public) > 30 else ''})"
            ) from err
    return obj


def _check_kwargs(factory: Any, kwargs: Mapping[str, Any], name: str, function: bool = False) -> None:
    """Raise TypeError naming the plugin and the argument when ``factory`` does not accept a keyword argument.

    For a plugin *function* the first two parameters (prompts, completions) and ``**info`` do not count:
    only its other named parameters can be bound by :func:`make`.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: let the call itself complain
        return
    params = list(signature.parameters.values())
    if function:
        params = params[2:]
    elif any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = [
        p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        raise TypeError(
            f"reward {name!r} ({_qualname(factory)}) got unexpected keyword argument"
            f"{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(accepted) or '(none)'}"
        )


def _build(obj: Any, name: str | None, kwargs: Mapping[str, Any], origin: str) -> RewardModel:
    """Turn a resolved object (class, function, callable instance, RewardModel) into a RewardModel."""
    if isinstance(obj, RewardModel):
        if kwargs:
            raise TypeError(f"reward {obj.name!r} is already built; it takes no keyword arguments ({sorted(kwargs)})")
        return obj
    display = name or plugin_name(obj)
    if inspect.isclass(obj):
        _check_kwargs(obj, kwargs, display)
        try:
            plugin = obj(**kwargs)
        except TypeError as err:
            raise TypeError(f"reward {display!r} ({_qualname(obj)}): {err}") from err
        if isinstance(plugin, RewardModel):
            return plugin if name is None or plugin.name == name else RewardModel(plugin, name)
    elif callable(obj):
        plugin = obj
        if kwargs:
            if not (inspect.isfunction(obj) or inspect.ismethod(obj)):
                raise TypeError(
                    f"reward {display!r} is a callable instance; keyword arguments {sorted(kwargs)} can only be "
                    "passed to a plugin class or function"
                )
            _check_kwargs(obj, kwargs, display, function=True)
            plugin = functools.partial(obj, **kwargs)
    else:
        raise TypeError(f"{origin} resolved to {type(obj).__name__} {obj!r:.100}, which is not a reward plugin")
    return RewardModel(plugin, display)


def _resolve_name(spec: str, kwargs: Mapping[str, Any]) -> RewardModel:
    name = spec.strip()
    if name in _REGISTRY:
        return _build(_REGISTRY[name].obj, name, kwargs, f"reward {name!r}")
    entry_points = _entry_points()
    if name in entry_points:
        ep = entry_points[name]
        try:
            obj = ep.load()
        except Exception as err:
            raise ImportError(
                f"reward entry point {name!r} = {ep.value!r} from {_dist_name(ep)!r} could not be loaded: "
                f"{type(err).__name__}: {err}"
            ) from err
        return _build(obj, name, kwargs, f"reward entry point {name!r} ({ep.value})")
    if ":" in name:
        return _build(_import_attr(name), None, kwargs, f"reward spec {name!r}")
    known = sorted(set(_REGISTRY) | set(entry_points))
    raise UnknownRewardError(
        f"unknown reward {spec!r}. Known rewards: {', '.join(known) or '(none)'}; "
        "or pass a 'module:attr' string, a callable, or a list of specs"
    )


def _composite_part(item: Any, index: int) -> tuple[RewardModel, float]:
    where = f"reward list item {index}"
    if isinstance(item, Mapping):
        unknown = set(item) - {"name", "weight", "kwargs"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected 'name', 'weight', 'kwargs'")
        if "name" not in item:
            raise ValueError(f"{where}: a dict item needs a 'name' (a reward spec), got {dict(item)!r}")
        kwargs = item.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"{where}: 'kwargs' must be a dict, got {type(kwargs).__name__}")
        return make(item["name"], **kwargs), check_weight(item.get("weight", 1.0), where)
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ValueError(f"{where}: a tuple item must be (spec, weight), got {item!r}")
        return make(item[0]), check_weight(item[1], where)
    if isinstance(item, list):
        raise TypeError(f"{where}: nested lists are not supported; use (spec, weight) tuples or dicts")
    return make(item), 1.0


def _is_weighted_pair(spec: tuple) -> bool:
    return (
        len(spec) == 2
        and isinstance(spec[1], numbers.Real)
        and not isinstance(spec[1], bool)
        and not isinstance(spec[0], numbers.Real)
    )


def make(spec: Any, **kwargs: Any) -> RewardModel:
    """Build a :class:`RewardModel` from a spec.

    Args:
        spec: one of

            * a reward name: built-in (``"sentiment"``), registered with :func:`register`, or an entry point
              of group ``textenv.rewards``;
            * a ``"module:attr"`` string: ``attr`` is imported from ``module``; a class is instantiated with
              ``kwargs``, a function is used as the plugin;
            * a callable plugin (a class is instantiated with ``kwargs``); its name is its ``__name__`` or
              class name;
            * a :class:`RewardModel`, returned as-is;
            * a list making a weighted sum; each item is a spec, a ``(spec, weight)`` tuple, or a dict
              ``{"name": spec, "weight": 1.0, "kwargs": {...}}``. ``components`` of the result holds each
              part's unweighted reward under the part's name (repeated names become ``name_2``, ...).
        **kwargs: passed to the plugin's constructor (or bound to a plugin function). Not allowed for lists:
            give each part its own ``kwargs``.

    Raises:
        UnknownRewardError: an unknown name (the message lists the known ones) or a missing ``module:attr``.
        TypeError: a keyword argument the plugin does not accept (the message names both).
    """
    if isinstance(spec, RewardModel):
        return _build(spec, None, kwargs, "reward")
    if isinstance(spec, str):
        return _resolve_name(spec, kwargs)
    if isinstance(spec, tuple) and _is_weighted_pair(spec):
        spec = [spec]
    if isinstance(spec, Mapping):
        spec = [spec]
    if isinstance(spec, (list, tuple)):
        if kwargs:
            raise TypeError(
                f"keyword arguments {sorted(kwargs)} cannot be applied to a list of rewards; "
                "give each part a dict item with its own 'kwargs'"
            )
        if not spec:
            raise ValueError("an empty list is not a reward spec; give at least one reward")
        parts: list[tuple[str, RewardModel, float]] = []
        seen: set[str] = set()
        for index, item in enumerate(spec):
            model, weight = _composite_part(item, index)
            part_name, k = model.name, 2
            while part_name in seen:
                part_name, k = f"{model.name}_{k}", k + 1
            seen.add(part_name)
            parts.append((part_name, model, weight))
        return CompositeReward(parts)
    if callable(spec):
        return _build(spec, None, kwargs, "reward")
    raise TypeError(
        f"cannot make a reward from {type(spec).__name__} {spec!r:.100}; expected a name, 'module:attr', "
        "a callable, a RewardModel, or a list of those"
    )
