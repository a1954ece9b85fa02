"""Old module paths of ``agents`` that moved into sub-packages, kept importable for one release.

``import agents.runner`` (and ``from agents.runner import train``) still works: it warns with a
``DeprecationWarning`` naming the new path and returns the new module itself, so both names share one module
object. Remove this table (and its finder) in the release after the move.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

#: old module name -> new module name
MOVED: dict[str, str] = {
    "agents.agent_args": "agents.runs.agent_args",
    "agents.compare": "agents.runs.compare",
    "agents.diversity": "agents.runs.diversity",
    "agents.evaluate": "agents.runs.evaluate",
    "agents.machine": "agents.runs.machine",
    "agents.runner": "agents.runs.runner",
    "agents.untrusted": "agents.runs.untrusted",
    "agents.decoding": "agents.modeling.decoding",
    "agents.lm_policy": "agents.modeling.lm_policy",
    "agents.model_blocks": "agents.modeling.model_blocks",
    "agents.labelling": "agents.preferences.labelling",
    "agents.preference_pairs": "agents.preferences.pairs",
    "agents.preference_commands": "agents.cli.preference_commands",
    "agents.reward_model_commands": "agents.cli.reward_model_commands",
}


class _MovedModuleLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new_name = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new_name}; the old name goes in the next release", DeprecationWarning, stacklevel=2
        )
        return importlib.import_module(new_name)

    def exec_module(self, module: ModuleType) -> None:
        """The new module is already executed."""


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old names in :data:`MOVED` and loads them as their new modules."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedModuleLoader())


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
