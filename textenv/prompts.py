"""Prompt sources: where an environment's prompts come from.

A prompt source is any of:

* ``None`` or ``"builtin"`` -- MossText-v0's own set of 240 movie-review openings (package data);
  ``"builtin:train"`` / ``"builtin:test"`` give a fixed 200/40 split for held-out evaluation;
* a list (or tuple) of strings;
* a path to a ``.txt`` file (one prompt per line, blank lines skipped) or a ``.jsonl`` file (one object per
  line with a ``"prompt"`` field and an optional ``"reference"`` field);
* any iterable of dicts with a ``"prompt"`` key and an optional ``"reference"`` key.

Every prompt is checked once, when the source is loaded: an empty (or whitespace-only) prompt is refused
with an error naming its position.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Union

from textenv.files import parse_json

BUILTIN_PROMPTS_FILE = "moss_review_prompts.txt"
BUILTIN_TEST_SIZE = 40  # the last 40 built-in prompts are held out ("builtin:test")

PromptSource = Union[None, str, os.PathLike, Iterable[Any]]


@dataclass(frozen=True)
class Prompt:
    """One prompt and its optional reference text (for reward plugins that compare against one)."""

    text: str
    reference: str | None = None


def _builtin_prompts(split: str) -> list[Prompt]:
    text = resources.files("textenv").joinpath("data", BUILTIN_PROMPTS_FILE).read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    splits = {"all": lines, "train": lines[:-BUILTIN_TEST_SIZE], "test": lines[-BUILTIN_TEST_SIZE:]}
    if split not in splits:
        raise ValueError(f"unknown built-in prompt split {split!r}; expected one of {sorted(splits)}")
    return [Prompt(line) for line in splits[split]]


def _from_record(record: Any, where: str) -> Prompt:
    if isinstance(record, Prompt):
        return record
    if isinstance(record, str):
        return Prompt(record)
    if isinstance(record, Mapping):
        if "prompt" not in record:
            raise ValueError(f"{where}: a prompt record needs a 'prompt' key, got keys {sorted(record)}")
        reference = record.get("reference")
        return Prompt(record["prompt"], None if reference is None else str(reference))
    raise TypeError(f"{where}: expected a str or a dict with a 'prompt' key, got {type(record).__name__}: {record!r}")


def _read_file(path: Path) -> list[Prompt]:
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist (expected a .txt or .jsonl file)")
    if path.suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        return [Prompt(line.strip()) for line in lines if line.strip()]
    if path.suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            record = parse_json(line, f"{path}:{number}")  # a ValueError naming file:line
            prompts.append(_from_record(record, f"{path}:{number}"))
        return prompts
    raise ValueError(f"prompt file {str(path)!r} has suffix {path.suffix!r}; expected '.txt' or '.jsonl'")


def load_prompts(source: PromptSource = None) -> list[Prompt]:
    """Materialise a prompt source (see the module docstring) into a validated list of :class:`Prompt`."""
    if source is None:
        prompts = _builtin_prompts("all")
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text == "builtin" or text.startswith("builtin:"):
            prompts = _builtin_prompts(text.partition(":")[2] or "all")
        else:
            prompts = _read_file(Path(text).expanduser())
    elif isinstance(source, Iterable):
        prompts = [_from_record(record, f"prompt #{i}") for i, record in enumerate(source)]
    else:
        raise TypeError(
            f"prompts must be None, 'builtin[:train|test]', a .txt/.jsonl path, a list of str or an iterable "
            f"of dicts; got {type(source).__name__}: {source!r}"
        )
    if not prompts:
        raise ValueError(f"the prompt source {source!r} holds no prompts")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt.text, str) or not prompt.text.strip():
            raise ValueError(f"prompt #{i} is empty ({prompt.text!r}); every prompt needs some text")
    return prompts
