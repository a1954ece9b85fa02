"""reasoning-gym datasets as textenv prompts: building a dataset from JSON arguments, and a train/test split of its
questions that never shares a question.

A task is named by a :class:`TaskSpec` (the reasoning-gym dataset name, its config settings as JSON-like data, and
an optional curriculum level). The same spec rebuilds the same dataset anywhere (the env, the reward plugin in
another process, a TRL reward function), so every prompt carries it in its ``reference`` together with the
generated entry (question, answer, metadata): the scorer reads them as data, never from the prompt text.

The split (:class:`QuestionPool`): reasoning-gym generates entry ``i`` from ``dataset_seed + i``. The test split is
the first ``test_size`` distinct questions among entries ``0 .. 4 * test_size - 1`` (fewer when the task has fewer
distinct questions), generated when the pool is built. Train question ``i`` is the first entry at or after
``4 * test_size + i`` (cycling through ``4 * train_size`` train entries) whose question text is not a test
question, generated the first time it is read. So the splits never share a question text, also when the question
space is small (2-term one-digit ``chain_sum`` has about 200 questions, and disjoint index ranges alone would
share many), and a train pool of any size costs only the questions an agent reads.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from textenv.extras import import_extra
from textenv.prompts import Prompt, PromptPool
from textenv.tasks import json_data

FEATURE = "textenv/ReasoningGym-v0"
EXTRA = "tasks"
COMPOSITE = "composite"
SPLITS = ("train", "test")
#: entries scanned per requested question (test split) and train entries cycled through per train question
DRAWS_PER_QUESTION = 4
#: config settings the pool sets itself (from dataset_seed and the split sizes)
RESERVED_SETTINGS = ("seed", "size")
QUESTION = "{question}"


def reasoning_gym() -> ModuleType:
    """The ``reasoning_gym`` module, or :class:`textenv.extras.MissingExtraError` naming the extra."""
    return import_extra("reasoning_gym", EXTRA, FEATURE)


def task_names() -> list[str]:
    """Every reasoning-gym dataset name (``composite`` included)."""
    reasoning_gym()
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def curriculum_names() -> list[str]:
    """The reasoning-gym datasets that have a curriculum (difficulty levels)."""
    reasoning_gym()
    from reasoning_gym.factory import CURRICULA

    return sorted(CURRICULA)


@dataclass(frozen=True)
class TaskSpec:
    """A reasoning-gym dataset, named by JSON-like data.

    Attributes:
        task: a reasoning-gym dataset name (:func:`task_names`), or ``"composite"``.
        task_config: the dataset's config settings (``{"min_terms": 2, ...}``; for ``"composite"``:
            ``{"datasets": [{"name": ..., "weight": ..., "config": {...}}, ...]}``), without ``seed``/``size``.
        curriculum_level: if given, the task's curriculum at this global level sets the settings it controls.
    """

    task: str
    task_config: Mapping[str, Any] = field(default_factory=dict)
    curriculum_level: int | None = None

    def to_data(self) -> dict[str, Any]:
        return {"task": self.task, "task_config": dict(self.task_config), "curriculum_level": self.curriculum_level}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> TaskSpec:
        return cls(data["task"], data.get("task_config") or {}, data.get("curriculum_level"))

    def key(self) -> str:
        """A canonical JSON text of the spec (for caches)."""
        return json.dumps(self.to_data(), sort_keys=True)


def build_dataset(spec: TaskSpec, seed: int, size: int) -> Any:
    """The reasoning-gym dataset of ``spec`` with ``seed`` and ``size``, every argument checked first.

    Raises:
        MissingExtraError: reasoning-gym is not installed.
        ValueError: an unknown task, a setting the task does not have, a reserved setting, a curriculum level on a
            task without a curriculum, or a config the task refuses; one line naming the value.
    """
    reasoning_gym()
    from reasoning_gym.factory import DATASETS

    if not isinstance(spec.task, str) or spec.task not in DATASETS:
        names = sorted(DATASETS)
        raise ValueError(
            f"unknown reasoning-gym task {spec.task!r}; expected one of its {len(names)} datasets: {', '.join(names)}"
        )
    if not isinstance(spec.task_config, Mapping):
        raise ValueError(f"task_config must be a dict of {spec.task} settings, got {spec.task_config!r}")
    if spec.task == COMPOSITE:
        if spec.curriculum_level is not None:
            raise ValueError("curriculum_level applies to one task, not to 'composite'")
        return _composite(spec.task_config, seed, size)
    dataset_cls, config_cls = DATASETS[spec.task]
    config = _config(spec.task, config_cls, spec.task_config, spec.curriculum_level, seed, size)
    try:
        return dataset_cls(config=config)
    except Exception as err:  # a config the generator cannot work with
        raise ValueError(
            f"reasoning-gym task {spec.task!r} refused task_config {dict(spec.task_config)}: {err}"
        ) from err


def _check_settings(task: str, config_cls: type, settings: Mapping[str, Any], where: str) -> None:
    names = [f.name for f in dataclasses.fields(config_cls) if f.name not in RESERVED_SETTINGS]
    for key in settings:
        if key in RESERVED_SETTINGS:
            raise ValueError(
                f"{where} key {key!r} is set by the env (dataset_seed, train_size and test_size); leave it out"
            )
        if key not in names:
            raise ValueError(f"{where} key {key!r} is not a setting of {task}; expected one of: {', '.join(names)}")


def _config(
    task: str, config_cls: type, settings: Mapping[str, Any], level: int | None, seed: int, size: int
) -> Any:
    _check_settings(task, config_cls, settings, "task_config")
    try:
        if level is None:
            config = config_cls(**settings, seed=seed, size=size)
        else:
            config = _curriculum_config(task, settings, level, seed, size)
        if hasattr(config, "validate"):
            config.validate()
    except (AssertionError, TypeError, ValueError) as err:
        raise ValueError(f"task_config {dict(settings)} is invalid for {task}: {err or type(err).__name__}") from err
    return config


def _curriculum_config(task: str, settings: Mapping[str, Any], level: Any, seed: int, size: int) -> Any:
    from reasoning_gym.coaching.attributes import RangeAttributeDefinition
    from reasoning_gym.factory import CURRICULA

    if task not in CURRICULA:
        raise ValueError(f"{task} has no curriculum; tasks with one: {', '.join(sorted(CURRICULA))}")
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ValueError(f"curriculum_level={level!r}; expected an int >= 0")
    curriculum = CURRICULA[task]()
    controlled = set()
    for attr in curriculum.attributes.values():
        if isinstance(attr, RangeAttributeDefinition):
            controlled |= {attr.lower_field_name, attr.upper_field_name}
        else:
            controlled.add(attr.field_name)
    overlap = sorted(controlled & set(settings))
    if overlap:
        raise ValueError(f"task_config sets {overlap}, which {task}'s curriculum sets at curriculum_level={level}")
    curriculum.set_global_level(level)  # attributes with fewer levels stay at their highest
    return curriculum.generate_configuration(defaults={**settings, "seed": seed, "size": size})


def _composite(settings: Mapping[str, Any], seed: int, size: int) -> Any:
    from reasoning_gym.composite import CompositeConfig, CompositeDataset, DatasetSpec
    from reasoning_gym.factory import DATASETS

    if set(settings) != {"datasets"} or not isinstance(settings["datasets"], list) or not settings["datasets"]:
        raise ValueError(
            "task_config of 'composite' must be {'datasets': [{'name': ..., 'weight': ..., 'config': {...}}, ...]}, "
            f"got {dict(settings)}"
        )
    specs = []
    for index, item in enumerate(settings["datasets"]):
        where = f"task_config['datasets'][{index}]"
        if not isinstance(item, Mapping) or "name" not in item or set(item) - {"name", "weight", "config"}:
            raise ValueError(f"{where} must be {{'name': ..., 'weight': ..., 'config': {{...}}}}, got {item!r}")
        name, weight, config = item["name"], item.get("weight", 1.0), item.get("config") or {}
        if name not in DATASETS or name == COMPOSITE:
            raise ValueError(f"{where}: unknown reasoning-gym task {name!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ValueError(f"{where}: weight must be a number > 0, got {weight!r}")
        if not isinstance(config, Mapping):
            raise ValueError(f"{where}: config must be a dict of {name} settings, got {config!r}")
        _check_settings(name, DATASETS[name][1], config, f"{where}['config']")
        specs.append(DatasetSpec(name=name, weight=float(weight), config=dict(config)))
    try:
        return CompositeDataset(CompositeConfig(size=size, seed=seed, datasets=specs))
    except (AssertionError, TypeError, ValueError) as err:
        raise ValueError(f"task_config {dict(settings)} is invalid for 'composite': {err}") from err


@functools.lru_cache(maxsize=32)
def _scoring_dataset(key: str) -> Any:
    return build_dataset(TaskSpec.from_data(json.loads(key)), seed=0, size=1)


def scoring_dataset(spec: TaskSpec) -> Any:
    """A dataset of ``spec`` to call ``score_answer`` on (built once per process and spec)."""
    return _scoring_dataset(spec.key())


def make_reference(spec: TaskSpec, entry: Mapping[str, Any]) -> str:
    """The ``reference`` of a prompt: the spec and the generated entry, as JSON text
    (:mod:`textenv.tasks.json_data`)."""
    return json_data.dumps({**spec.to_data(), "entry": dict(entry)})


def read_reference(reference: Any) -> tuple[TaskSpec, dict[str, Any]]:
    """``(spec, entry)`` from a reference written by :func:`make_reference` (its JSON text or the decoded dict).

    Raises:
        ValueError: the reference is not such data (one line saying what it is).
    """
    data = reference
    if isinstance(reference, str):
        try:
            data = json_data.loads(reference)
        except json.JSONDecodeError as err:
            raise ValueError(f"the reference {reference[:60]!r} is not reasoning-gym entry data (JSON): {err}") from err
    if not isinstance(data, Mapping) or "task" not in data or not isinstance(data.get("entry"), Mapping):
        raise ValueError(
            f"the reference {reference!r:.80} is not reasoning-gym entry data: expected a JSON object with 'task', "
            "'task_config' and 'entry' (what textenv/ReasoningGym-v0 puts in each prompt's reference)"
        )
    return TaskSpec.from_data(data), dict(data["entry"])


def instruction_template(template: str | None, default: str) -> str:
    """The prompt template (``{question}`` is replaced by the question text); ``default`` when ``None``."""
    template = default if template is None else template
    if not isinstance(template, str) or QUESTION not in template:
        raise ValueError(f"prompt_template must be a str holding {QUESTION!r}, got {template!r}")
    return template


class QuestionPool(PromptPool):
    """One split of a reasoning-gym task's questions, as prompts (see the module docstring for the split).

    ``pool[i]`` is ``Prompt(template with the question, reference=make_reference(spec, entry))``.

    Args:
        spec: the task.
        split: ``"train"`` or ``"test"``.
        train_size: train questions (indices an env draws from; a small question space repeats questions).
        test_size: the most test questions (fewer when the task has fewer distinct questions).
        dataset_seed: reasoning-gym's seed for both splits.
        template: the prompt text, ``{question}`` replaced by the question.
    """

    def __init__(
        self, spec: TaskSpec, split: str, train_size: int, test_size: int, dataset_seed: int, template: str
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; expected one of {SPLITS}")
        for name, value in (("train_size", train_size), ("test_size", test_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(dataset_seed, bool) or not isinstance(dataset_seed, int) or dataset_seed < 0:
            raise ValueError(f"dataset_seed must be an int >= 0, got {dataset_seed!r}")
        self.spec, self.split, self.template = spec, split, template
        self.train_size, self.test_size, self.dataset_seed = train_size, test_size, dataset_seed
        self.test_region = DRAWS_PER_QUESTION * test_size
        self.train_region = DRAWS_PER_QUESTION * train_size
        self.dataset = build_dataset(spec, dataset_seed, self.test_region + self.train_region)
        self.test_entries: list[dict[str, Any]] = []
        seen: set[str] = set()
        for index in range(self.test_region):
            entry = self.dataset[index]
            if entry["question"] not in seen:
                seen.add(entry["question"])
                self.test_entries.append(entry)
                if len(self.test_entries) == test_size:
                    break
        self.test_questions = frozenset(seen)
        self.size = len(self.test_entries) if split == "test" else train_size
        if split == "train":
            self[0]  # a task whose every question is a test question fails here, not at the first reset

    def entry(self, index: int) -> dict[str, Any]:
        """The reasoning-gym entry of question ``index`` of this split."""
        if self.split == "test":
            return self.test_entries[index]
        for step in range(self.train_region):
            entry = self.dataset[self.test_region + (index + step) % self.train_region]
            if entry["question"] not in self.test_questions:
                return entry
        raise ValueError(
            f"every question {self.spec.task} generated for the train split is a test question: its question space "
            f"is too small for test_size={self.test_size} ({len(self.test_entries)} test questions); lower test_size"
        )

    def generate(self, index: int) -> Prompt:
        entry = self.entry(index)
        return Prompt(self.template.replace(QUESTION, entry["question"]), make_reference(self.spec, entry))

    def __reduce__(self) -> tuple[Any, ...]:  # rebuilt from its arguments in another process
        return (
            QuestionPool,
            (self.spec, self.split, self.train_size, self.test_size, self.dataset_seed, self.template),
        )

    def __repr__(self) -> str:
        return f"QuestionPool({self.spec.task!r}, split={self.split!r}, size={self.size})"
