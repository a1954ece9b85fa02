"""Study switches of the LM trainers: no stability promise.

A field here is either a variant of the loss that a study under ``experiments/`` trained against the default, and
that study changed no default; or a switch that turns off one of the trainer's exact speed paths, so that a
benchmark can time the fast path against the slow one. A user training a model needs none of them. Any of them may
change meaning or go in a later release, without a deprecation.

A config holds them as ``experimental``::

    GRPOConfig(experimental={"kl_importance_weight": True})                 # or ExperimentalSettings(...)
    textenv train --agent grpo --agent-kwargs 'experimental={"kl_importance_weight": true}'

Configs saved before these settings moved here held them at the top level; ``from_dict`` reads such a config
(a checkpoint, a run directory) into ``experimental``: see :func:`move_study_fields`.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

KL_ESTIMATORS = ("k1", "k2", "k3")
DAPO_NORMALIZERS = ("minibatch", "rollout")
ASYNC_OLD_LOGPROBS = ("learner", "actor")


@dataclass
class ExperimentalSettings:
    """Study switches of the LM trainers (see the module docstring): no stability promise."""

    share_prompt_forward: bool = field(
        default=True,
        metadata={"help": "``False`` turns off the trainer's shared prompt forward: every sequence is forwarded "
        "whole in the reference and loss forwards, even where prompts repeat. The shared path gives the same "
        "log-probs and gradients, so this only exists to time one path against the other."},
    )
    share_frozen_trunk: bool = field(
        default=True,
        metadata={"help": "``False`` turns off the trainer's frozen-trunk path: the reference, loss and value "
        "forwards run every block even where the policy's lower blocks are frozen. The frozen-trunk path gives "
        "the same log-probs and gradients, so this only exists to time one path against the other "
        "(``experiments/round_cost/``)."},
    )
    kl_estimator: str = field(
        default="k3",
        metadata={"only": "GRPOConfig", "help": "GRPO's per-token estimator of KL(pi || pi_ref) in the loss, from "
        "the sampled tokens' log-ratio ``r = log pi_ref - log pi`` (Schulman, \"Approximating KL Divergence\", "
        "2020): ``\"k3\"`` = ``exp(r) - r - 1`` (unbiased, >= 0; DeepSeekMath and TRL ``GRPOTrainer``, which has "
        "no other), ``\"k1\"`` = ``-r`` (unbiased, can be negative; its gradient is the score function, 0 in "
        "expectation on-policy), ``\"k2\"`` = ``r^2 / 2`` (biased, >= 0; its gradient is the reverse KL's "
        "on-policy). A variant of ``experiments/grpo_ablation/``."},
    )
    kl_importance_weight: bool = field(
        default=False,
        metadata={"only": "GRPOConfig", "help": "Multiply GRPO's per-token KL estimate by the (differentiable) "
        "ratio ``pi / pi_old`` to the sampling policy, so that its expected gradient is the reverse KL's "
        "(DeepSeek-V3.2; TRL's ``use_bias_correction_kl``, on by default there). ``False``: the plain estimate "
        "(DeepSeekMath's GRPO), whose k3 gradient is in expectation the forward KL(pi_ref || pi)'s. Studied in "
        "``experiments/grpo_ablation/`` and ``experiments/grpo_vs_trl/``; the default did not change."},
    )
    dapo_normalizer: str = field(
        default="minibatch",
        metadata={"only": "GRPOConfig", "help": "The token count dividing each optimiser step's summed loss under "
        "GRPO's ``loss_type=\"dapo\"``: ``\"minibatch\"`` = the step's own completion tokens (the DAPO paper's "
        "token mean per batch; TRL calls it ``\"bnpo\"``), ``\"rollout\"`` = the iteration's completion tokens / "
        "``num_minibatches`` (TRL's ``\"dapo\"``: ``num_items_in_batch`` of the generation batch over "
        "``steps_per_generation``), so a minibatch of long completions weighs more. Both over all processes. "
        "Studied in ``experiments/grpo_ablation/``; the default did not change."},
    )
    async_old_logprobs: str = field(
        default="learner",
        metadata={"help": "Under ``async_rollouts``, the old policy of the PPO ratio and the KL terms: "
        "``\"learner\"``, the learner's policy before the update, from one no-grad forward over the stale round "
        "(the proximal forward), each token's loss reweighted by the truncated importance weight; or "
        "``\"actor\"``, the actor's own sampling log-probs, so the ratio ``pi / pi_behaviour`` and its clip bound "
        "the one-round staleness, the learner skips that forward and importance weights are 1. Studied in "
        "``experiments/async_rollouts/`` (shorter rounds, less learnt per round); the default did not change."},
    )

    def validate(self, owner: str = "experimental", config_classes: tuple[str, ...] = ("GRPOConfig",)) -> None:
        """Raise a ``ValueError`` naming the first bad field. ``config_classes``: the names of the holding config's
        classes (its MRO); a field that only one config reads may differ from its default only there."""
        for name in ("share_prompt_forward", "share_frozen_trunk", "kl_importance_weight"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{owner}.{name}={getattr(self, name)!r}; expected True or False")
        for name, choices in (("kl_estimator", KL_ESTIMATORS), ("dapo_normalizer", DAPO_NORMALIZERS),
                              ("async_old_logprobs", ASYNC_OLD_LOGPROBS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{owner}.{name}={getattr(self, name)!r}; expected one of {choices}")
        for f in dataclasses.fields(self):
            only = f.metadata.get("only")
            if only is not None and only not in config_classes and getattr(self, f.name) != f.default:
                raise ValueError(f"{owner}.{f.name} applies to {only} only; {config_classes[0]} does not read it")

    @classmethod
    def coerce(cls, value: Any, owner: str = "experimental") -> ExperimentalSettings:
        """``None`` -> the defaults; a dict (``--agent-kwargs experimental={...}``, a saved config) or an
        :class:`ExperimentalSettings` -> those settings. Anything else, or an unknown key, is a ``ValueError``."""
        return coerce_settings(cls, value, owner)


def coerce_settings(settings_class: type, value: Any, owner: str) -> Any:
    """``value`` as a ``settings_class`` (a dataclass of study switches): ``None`` gives its defaults, a dict its
    fields; an instance is returned as it is. Anything else, or an unknown key, is a one-line ``ValueError``."""
    if value is None:
        return settings_class()
    if isinstance(value, settings_class):
        return value
    known = [f.name for f in dataclasses.fields(settings_class)]
    if not isinstance(value, dict):
        raise ValueError(f"{owner}={value!r}; expected an object with some of {known}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"{owner} has unknown keys {unknown}; expected some of {known}")
    return settings_class(**value)


def move_study_fields(values: dict[str, Any], config_name: str, settings_class: type = ExperimentalSettings) -> None:
    """Move the top-level fields of a config saved before they became study switches (``values``, as saved: a
    checkpoint's ``config.json``, a run's ``agent_kwargs``, a reward model's settings) into
    ``values["experimental"]``, in place. One warning names the fields moved with a value that is not their
    default (a run that set one keeps its behaviour); fields at their default move silently."""
    names = [f.name for f in dataclasses.fields(settings_class)]
    moved = {name: values.pop(name) for name in names if name in values}
    if not moved:
        return
    experimental = values.get("experimental")
    experimental = dataclasses.asdict(experimental) if dataclasses.is_dataclass(experimental) else experimental
    values["experimental"] = {**moved, **(experimental or {})}
    defaults = settings_class()
    changed = sorted(name for name, value in moved.items() if value != getattr(defaults, name))
    if changed:
        shown = ", ".join(f"{name}={moved[name]!r}" for name in changed)
        warnings.warn(
            f"{config_name}: {shown} moved into experimental (study switches, no stability promise) and is read "
            "from there",
            UserWarning,
            stacklevel=3,
        )


__all__ = ["DAPO_NORMALIZERS", "KL_ESTIMATORS", "ExperimentalSettings", "coerce_settings", "move_study_fields"]
