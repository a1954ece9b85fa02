"""What the task envs' settings share: taking their own arguments out of an env's keyword arguments."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

S = TypeVar("S", bound="EnvSettings")


class EnvSettings:
    """Base of a frozen dataclass of the arguments a task env adds to the env it builds on; subclasses define
    ``task_kwargs(rest)``: the arguments of that env."""

    def task_kwargs(self, rest: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def split_kwargs(cls: type[S], kwargs: dict[str, Any]) -> tuple[S, dict[str, Any]]:
        """``(settings, the rest)`` of an env's keyword arguments."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        settings = cls(**{key: value for key, value in kwargs.items() if key in names})
        return settings, {key: value for key, value in kwargs.items() if key not in names}


class SettingsEnv:
    """Mixin of a task env: takes its ``settings_class``'s arguments out of the keyword arguments, turns them into
    the arguments of the env it builds on (``settings.task_kwargs(rest)``) and passes every other argument on
    (``num_envs``, ``autoreset_mode``, ``render_mode``, ...). ``self.settings`` keeps them."""

    settings_class: type[EnvSettings]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings, rest = self.settings_class.split_kwargs(kwargs)
        super().__init__(*args, **settings.task_kwargs(rest))  # type: ignore[call-arg]
        self.settings = settings
