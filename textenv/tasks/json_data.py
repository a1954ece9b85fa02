"""Task data as JSON text that reads back to the same Python values.

A generated task entry (a reasoning-gym question with its answer and metadata) travels with its episode as a
JSON string: in the prompt's ``reference``, the env's infos, a TRL dataset column. Plain JSON would turn tuples
into lists and integer dict keys into strings, and some tasks' scorers compare exactly those values, so
:func:`dumps` tags them (``{"__tuple__": [...]}``, ``{"__items__": [[key, value], ...]}``) and :func:`loads`
restores them. Numpy scalars become Python numbers. Anything else (a set, an object) is refused by name.
"""

from __future__ import annotations

import json
from typing import Any

TUPLE_TAG = "__tuple__"
ITEMS_TAG = "__items__"


def dumps(value: Any) -> str:
    """``value`` (dicts, lists, tuples, str, numbers, bools, None, numpy scalars) as JSON text."""
    return json.dumps(_tagged(value, "value"), ensure_ascii=False, separators=(",", ":"))


def loads(text: str) -> Any:
    """The value :func:`dumps` wrote (tuples and non-string dict keys restored)."""
    return _untagged(json.loads(text))


def _tagged(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, tuple):
        return {TUPLE_TAG: [_tagged(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_tagged(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value) and not ({TUPLE_TAG, ITEMS_TAG} & set(value)):
            return {key: _tagged(v, f"{where}[{key!r}]") for key, v in value.items()}
        return {ITEMS_TAG: [[_tagged(k, f"{where} key"), _tagged(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    item = getattr(value, "item", None)  # a numpy scalar
    if callable(item) and getattr(value, "ndim", None) == 0:
        return _tagged(item(), where)
    raise TypeError(f"{where} is a {type(value).__name__} ({value!r:.80}); task data must be JSON-like")


def _untagged(value: Any) -> Any:
    if isinstance(value, list):
        return [_untagged(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and TUPLE_TAG in value:
            return tuple(_untagged(v) for v in value[TUPLE_TAG])
        if len(value) == 1 and ITEMS_TAG in value:
            return {_hashable(_untagged(k)): _untagged(v) for k, v in value[ITEMS_TAG]}
        return {key: _untagged(v) for key, v in value.items()}
    return value


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    return key
