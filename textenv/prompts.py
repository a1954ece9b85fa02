"""Prompt sources: where an environment's prompts come from.

A prompt source is any of:

* ``None`` or ``"builtin"`` -- MossText-v0's own set of 240 movie-review openings (package data);
  ``"builtin:train"`` / ``"builtin:test"`` give a fixed 200/40 split for held-out evaluation;
* a list (or tuple) of strings;
* a path to a ``.txt`` file (one prompt per line, blank lines skipped) or a ``.jsonl`` file (one object per
  line with a ``"prompt"`` field and an optional ``"reference"`` field);
* any iterable of dicts with a ``"prompt"`` key and an optional ``"reference"`` key;
* a :class:`PromptPool`: prompts generated on demand (reasoning-gym questions, game openings), used as it is.

Every prompt is checked once, when the source is loaded (a pool's, when it is generated): an empty (or
whitespace-only) prompt is refused with an error naming its position.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
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


class PromptPool(Sequence[Prompt]):
    """A sequence of prompts generated on demand and cached: ``pool[i]`` is made the first time it is read.

    Subclasses set ``size`` and implement :meth:`generate`. Environments only ever read ``len(pool)`` and
    ``pool[i]``, so a pool of a million procedurally generated questions costs only the ones that are used.
    """

    size: int = 0

    def generate(self, index: int) -> Prompt:
        """Prompt ``index`` (``0 <= index < size``); called once per index."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.size))]
        if isinstance(index, bool) or not isinstance(index, int) or not -self.size <= index < self.size:
            raise IndexError(f"prompt index {index!r} is out of range for a pool of {self.size} prompts")
        index %= self.size
        cache: dict[int, Prompt] = self.__dict__.setdefault("_generated", {})
        prompt = cache.get(index)
        if prompt is None:
            prompt = self.generate(index)
            if not isinstance(prompt.text, str) or not prompt.text.strip():
                raise ValueError(f"prompt #{index} is empty ({prompt.text!r}); every prompt needs some text")
            cache[index] = prompt
        return prompt

    def __iter__(self) -> Any:
        return (self[i] for i in range(self.size))


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


def load_prompts(source: PromptSource = None) -> Sequence[Prompt]:
    """Materialise a prompt source (see the module docstring) into a validated list of :class:`Prompt` (a
    :class:`PromptPool` is returned as it is: it checks each prompt when it generates it)."""
    if isinstance(source, PromptPool):
        if len(source) == 0:
            raise ValueError(f"the prompt pool {source!r} holds no prompts")
        return source
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


def prompt_records(
    prompts: Iterable[Prompt], chat: bool = False, system_prompt: str | None = None
) -> list[dict[str, Any]]:
    """Dataset rows of prompts, e.g. for TRL's trainers (``datasets.Dataset.from_list``): ``{"prompt": text,
    "reference": reference}``; with ``chat``, the prompt as chat messages (a system message first when
    ``system_prompt`` is given), which TRL renders with the tokenizer's chat template as a textenv env with
    ``chat_template=True`` does."""
    rows = []
    for prompt in prompts:
        text: Any = prompt.text
        if chat:
            text = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
                {"role": "user", "content": prompt.text}
            ]
        rows.append({"prompt": text, "reference": prompt.reference})
    return rows
