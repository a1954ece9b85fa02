"""Reading the answer out of a completion: the explicit extraction settings of the verifiable rewards.

* ``"answer_tag"``: the text inside the last ``<answer>...</answer>`` (reasoning-gym's convention, read as its
  ``extract_answer`` reads it: one optional space inside each tag dropped, then stripped);
* ``"last_line"``: the last non-empty line, stripped;
* ``"last_number"``: the last integer or decimal number (a leading minus kept, thousands commas dropped);
* ``"whole"``: the whole completion, stripped.

Each returns ``None`` when the completion holds no answer in that form: that is what the format term scores.
"""

from __future__ import annotations

import re

EXTRACTIONS = ("answer_tag", "last_line", "last_number", "whole")

_ANSWER_TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def extract_answer(completion: str, extraction: str) -> str | None:
    """The answer ``completion`` gives under ``extraction`` (one of :data:`EXTRACTIONS`), or ``None``."""
    if extraction == "answer_tag":
        matches = _ANSWER_TAG.findall(completion)
        return matches[-1].strip() if matches else None
    if extraction == "last_line":
        lines = [line.strip() for line in completion.splitlines() if line.strip()]
        return lines[-1] if lines else None
    if extraction == "last_number":
        numbers = _NUMBER.findall(completion)
        return numbers[-1].replace(",", "") if numbers else None
    if extraction == "whole":
        return completion.strip() or None
    raise ValueError(f"extraction={extraction!r}; expected one of {', '.join(map(repr, EXTRACTIONS))}")

