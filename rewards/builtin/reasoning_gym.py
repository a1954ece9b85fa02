"""``reasoning_gym``: a verifiable reward, scored by the reasoning-gym task's own ``score_answer``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.base import CompositeReward, RewardModel, check_weight
from rewards.builtin._util import check_bool, check_choice
from rewards.builtin.answer_extraction import EXTRACTIONS, extract_answer
from rewards.registry import register


@register("reasoning_gym")
class ReasoningGymReward(CompositeReward):
    """Scores each completion with the task's own ``score_answer`` on the answer read out of it.

    Each episode's ``reference`` carries what the scorer needs as data: the reasoning-gym task, its settings and
    the generated entry (question, answer, metadata), as ``textenv/ReasoningGym-v0`` writes it into every prompt
    (JSON text, or the dict it decodes to). The prompt text is never parsed. The task's dataset is rebuilt from
    those settings once per process to call its ``score_answer(answer, entry)``.

    Components (each reported under its name; the reward is ``correct + format_weight * format``):

    * ``correct``: ``score_answer(extracted answer, entry)``, in [0, 1] -- 1.0 for a right answer; some tasks give
      partial credit (e.g. 0.01 for a wrong answer in the right form). 0 when nothing could be extracted or when
      ``score_answer`` raises on the answer (a malformed answer). With ``partial_credit=False``: 1.0 only when
      ``score_answer`` gives 1.0, else 0 (exact accuracy).
    * ``format``: 1.0 when the completion holds an answer in the ``extraction`` form, else 0.

    Range:
        [0, 1 + format_weight] for a non-negative ``format_weight``.

    Arguments:
        extraction: how the answer is read (:mod:`rewards.builtin.answer_extraction`): ``"answer_tag"``
            (default; the last ``<answer>...</answer>``), ``"last_line"``, ``"last_number"`` or ``"whole"``.
        format_weight: weight of the ``format`` component in the total (default 0: reported, not rewarded).
        partial_credit: keep the task's partial credit (default True) or score exact accuracy.

    Needs the ``tasks`` extra (``pip install "textenv[tasks]"``).
    """

    def __init__(self, extraction: str = "answer_tag", format_weight: float = 0.0, partial_credit: bool = True) -> None:
        self.extraction = check_choice("extraction", extraction, EXTRACTIONS)
        self.format_weight = check_weight(format_weight, "reasoning_gym format_weight")
        self.partial_credit = check_bool("partial_credit", partial_credit)
        super().__init__(
            [
                ("correct", RewardModel(self.correct, "correct"), 1.0),
                ("format", RewardModel(self.format, "format"), self.format_weight),
            ],
            name="reasoning_gym",
        )

    def correct(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
        """The ``correct`` component (see the class docstring)."""
        from textenv.tasks.reasoning_gym_data import read_reference, scoring_dataset

        references = info.get("references")
        scores = []
        for row, completion in enumerate(completions):
            reference = None if references is None else references[row]
            if reference is None:
                raise ValueError(
                    f"completion {row} has no reference; the reasoning_gym reward reads the reasoning-gym entry from "
                    "each episode's reference (textenv/ReasoningGym-v0 sets it; for TRL, a 'reference' column)"
                )
            spec, entry = read_reference(reference)
            answer = extract_answer(completion, self.extraction)
            scores.append(0.0 if answer is None else self._score(scoring_dataset(spec), answer, entry))
        return scores

    def _score(self, dataset: Any, answer: str, entry: dict[str, Any]) -> float:
        try:
            score = float(dataset.score_answer(answer, entry))
        except Exception:  # the task's scorer cannot read this answer (e.g. int("seven")): a wrong answer
            return 0.0
        return score if self.partial_credit else float(score >= 1.0)

    def format(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
        """The ``format`` component: 1.0 when an answer could be extracted."""
        return [float(extract_answer(c, self.extraction) is not None) for c in completions]

    def __repr__(self) -> str:
        return (
            f"ReasoningGymReward(extraction={self.extraction!r}, format_weight={self.format_weight:g}, "
            f"partial_credit={self.partial_credit})"
        )
