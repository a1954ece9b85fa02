"""Passing a KV cache into a transformers causal LM and reading it back, on every supported transformers version.

transformers 4.x and early 5.x name the cache ``past_key_values`` (argument and output field); later 5.x
releases name it ``cache`` and keep ``past_key_values`` only as a deprecated alias. The name is read from the
model's ``forward`` signature, so no version number is compared.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


@functools.lru_cache(maxsize=64)
def _keyword(kind: type) -> str:
    return "cache" if "cache" in inspect.signature(kind.forward).parameters else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for ``model(..., **cache_kwargs(model, cache), use_cache=True)``; a ``DistributedDataParallel``
    (or other ``.module``) wrapper is looked through to the model's own ``forward``."""
    return {_keyword(type(getattr(model, "module", model))): cache}


def returned_cache(output: Any) -> Any:
    """The KV cache a ``use_cache=True`` forward returned (``output.cache`` or ``output.past_key_values``)."""
    cache = getattr(output, "cache", None)
    return output.past_key_values if cache is None else cache
