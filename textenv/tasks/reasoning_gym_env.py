"""``textenv/ReasoningGym-v0``: any reasoning-gym dataset as a single-turn text-generation env (and its vector env)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from textenv.env import TextGenerationEnv
from textenv.tasks.reasoning_gym_data import QuestionPool, TaskSpec, instruction_template
from textenv.tasks.settings import EnvSettings, SettingsEnv
from textenv.vector_env import TextGenerationVectorEnv

#: the reward the env scores with unless told otherwise (rewards/builtin/reasoning_gym.py)
DEFAULT_REWARD = "reasoning_gym"
#: what the prompt asks for, per answer format (``{question}`` is the reasoning-gym question)
INSTRUCTIONS = {
    "answer_tag": "{question}\nWrite only the final answer between <answer> and </answer>, e.g. <answer>42</answer>.",
    "last_line": "{question}\nWrite the final answer alone on the last line.",
    "last_number": "{question}\nEnd your reply with the final answer as a number.",
    "whole": "{question}\nReply with the final answer only.",
}


@dataclass(frozen=True)
class ReasoningGymSettings(EnvSettings):
    """The arguments ``textenv/ReasoningGym-v0`` adds to :class:`textenv.env.TextGenerationEnv`'s (documented in
    :class:`ReasoningGymEnv`)."""

    task: str = "chain_sum"
    task_config: dict[str, Any] = field(default_factory=dict)
    curriculum_level: int | None = None
    split: str = "train"
    train_size: int = 1000
    test_size: int = 100
    dataset_seed: int = 0
    answer_format: str = "answer_tag"
    prompt_template: str | None = None

    def task_kwargs(self, rest: dict[str, Any]) -> dict[str, Any]:
        """:class:`textenv.task.TextTask`'s arguments: the split's questions as prompts, the verifiable reward
        (reading answers in ``answer_format``) unless another is given, and ``rest`` as given."""
        if "prompts" in rest:
            raise ValueError(
                "textenv/ReasoningGym-v0 makes its prompts from the task; pass task/task_config, not prompts"
            )
        if self.answer_format not in INSTRUCTIONS:
            expected = ", ".join(map(repr, INSTRUCTIONS))
            raise ValueError(f"answer_format={self.answer_format!r}; expected one of {expected}")
        template = instruction_template(self.prompt_template, INSTRUCTIONS[self.answer_format])
        spec = TaskSpec(self.task, self.task_config or {}, self.curriculum_level)
        pool = question_pool(spec.key(), self.split, self.train_size, self.test_size, self.dataset_seed, template)
        kwargs = {"reward": DEFAULT_REWARD, **rest, "prompts": pool}
        if kwargs["reward"] == DEFAULT_REWARD:
            kwargs["reward_kwargs"] = {"extraction": self.answer_format, **(rest.get("reward_kwargs") or {})}
        return kwargs


@functools.lru_cache(maxsize=16)
def question_pool(
    spec_key: str, split: str, train_size: int, test_size: int, dataset_seed: int, template: str
) -> QuestionPool:
    """One pool per split and arguments in a process (envs share it, and the questions it has generated)."""
    spec = TaskSpec.from_data(json.loads(spec_key))
    return QuestionPool(spec, split, train_size, test_size, dataset_seed, template)


class ReasoningGymEnv(SettingsEnv, TextGenerationEnv):
    """
    ## Description

    A reasoning-gym task (any of its procedural datasets: arithmetic, algebra, logic, string puzzles, ...) as a
    single-turn text-generation env. An episode is one question: the prompt is the question with an instruction
    that shows the answer format; the agent writes its reply one token at a time; the verifiable reward
    ``reasoning_gym`` scores it with the task's own ``score_answer``. Everything else is
    :class:`textenv.env.TextGenerationEnv` (whose documentation covers the spaces, the episode end and errors).

    ```python
    >>> import gymnasium as gym, textenv
    >>> env = gym.make("textenv/ReasoningGym-v0", task="chain_sum",
    ...                task_config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1})
    >>> obs, info = env.reset(seed=0)
    ```

    ## Action Space

    ``Discrete(vocab_size)``: the next token id, as :class:`textenv.env.TextGenerationEnv`.

    ## Observation Space

    ``Dict(input_ids, attention_mask)`` of length ``max_prompt_tokens + max_new_tokens``, as
    :class:`textenv.env.TextGenerationEnv`. Long questions (ARC grids, puzzles) need a larger
    ``max_prompt_tokens`` (a longer prompt keeps its last tokens and warns, per ``prompt_truncation``).

    ## Rewards

    0 on every step but the last. On the last step, the ``reasoning_gym`` reward (unless ``reward`` names
    another): ``correct`` = the task's ``score_answer`` of the answer read from the completion in
    ``answer_format``, plus ``format_weight`` (a reward argument, default 0) times ``format`` (1 when an answer in
    that format was found); both are in ``info["reward_components"]``. The scorer reads the question's entry from
    the episode's ``reference`` (the prompt's JSON data: task, settings, question, answer, metadata), never from
    the prompt text.

    ## Starting State

    ``reset`` draws a question of the ``split`` uniformly with the env's ``np_random`` (the same seed gives the
    same questions). The two splits never share a question (compared by question text): the test split is the
    first ``test_size`` distinct questions reasoning-gym generates from ``dataset_seed``, the train split every
    later question that is not one of them (see :mod:`textenv.tasks.reasoning_gym_data`); a task with few distinct
    questions repeats its train questions. ``info["prompt"]`` is the prompt; the episode's last ``info`` holds the
    ``reference``.

    ## Episode End

    As :class:`textenv.env.TextGenerationEnv`: EOS terminates, ``max_new_tokens`` truncates.

    ## Arguments

    * ``task``: a reasoning-gym dataset name (``"chain_sum"``, ``"letter_counting"``, ...; ``textenv envs
      reasoning-gym`` lists them) or ``"composite"``.
    * ``task_config``: the dataset's settings (``{"min_terms": 2, ...}``); for ``"composite"``:
      ``{"datasets": [{"name": "chain_sum", "weight": 2, "config": {...}}, {"name": "gcd", "weight": 1}]}``.
      ``seed`` and ``size`` are the env's (``dataset_seed``, ``train_size``, ``test_size``). An unknown task or
      setting, or settings the task refuses, raise ``ValueError`` naming them.
    * ``curriculum_level``: a level of the task's reasoning-gym curriculum (0 = easiest); it sets the settings
      the curriculum controls (``task_config`` may not set those too).
    * ``split``: ``"train"`` (default) or ``"test"``; ``train_size`` (1000) train questions, ``test_size`` (100,
      at most) test questions; ``dataset_seed`` (0) seeds both.
    * ``answer_format``: ``"answer_tag"`` (default: ``<answer>...</answer>``), ``"last_line"``, ``"last_number"`` or
      ``"whole"``: the instruction in the prompt and the reward's ``extraction``.
    * ``prompt_template``: the prompt, ``{question}`` replaced by the question (default: the question and the
      ``answer_format`` instruction).
    * every :class:`textenv.env.TextGenerationEnv` argument (``tokenizer``, ``max_new_tokens``,
      ``max_prompt_tokens``, ``chat_template``, ``system_prompt``, ``reward``, ``reward_kwargs``, ...) except
      ``prompts``. ``reward_kwargs`` of the default reward: ``format_weight``, ``partial_credit``, ``extraction``.

    Needs the ``tasks`` extra (``pip install "textenv[tasks]"``): without it, making the env raises
    ``textenv.extras.MissingExtraError`` saying so. Building the env generates the test split (``test_size``
    questions); train questions are generated when first drawn.
    """

    settings_class = ReasoningGymSettings


class ReasoningGymVectorEnv(SettingsEnv, TextGenerationVectorEnv):
    """``num_envs`` rows of :class:`ReasoningGymEnv` in one buffer: :class:`textenv.vector_env.TextGenerationVectorEnv`
    (its documentation covers the batched spaces, autoreset and infos) with the task's questions as prompts and the
    verifiable reward, every finished row scored in one batched call. Arguments: ``num_envs``,
    ``autoreset_mode``, ``render_mode`` and every :class:`ReasoningGymEnv` argument. It is the vector entry point
    of ``textenv/ReasoningGym-v0``::

        gym.make_vec("textenv/ReasoningGym-v0", num_envs=8, vectorization_mode="vector_entry_point", task="gcd")
    """

    settings_class = ReasoningGymSettings
