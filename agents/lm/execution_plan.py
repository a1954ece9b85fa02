"""The execution plan of an LM trainer: what it trains, what it runs once and shares, and why a faster path does not
apply. The trainer decides these itself (each fast path gives the same log-probs and gradients as the plain one, to
float rounding) and logs the plan as one line when training starts (``LMTrainer.execution_plan``); the user's
lever is what trains (``trainable_blocks``), not the paths.

The parts, in the order the line gives them:

* ``trains`` -- the policy's parameters that the optimiser updates;
* ``frozen trunk`` -- whether the policy's frozen lower blocks run once per rollout (while sampling) and every later
  forward starts from their output (:mod:`agents.lm.frozen_trunk`), or why not;
* ``prompt forward`` -- whether each distinct prompt of a batch is forwarded once and its KV cache shared by its
  completions, or why not;
* ``reference`` -- whether a frozen copy of the initial policy runs each iteration, and what needs it;
* ``value model`` (LM-PPO) -- where the critic comes from, what of it trains, and whether it starts from the
  policy's frozen trunk.

``docs/execution-plan.md`` describes each path and when it applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.modeling.model_blocks import final_norm, transformer_blocks


@dataclass(frozen=True)
class PlanPart:
    """One decision of the plan: ``name: what (why)``."""

    name: str
    what: str
    why: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.what}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class ExecutionPlan:
    """The parts of a trainer's plan; :meth:`line` is what the trainer logs."""

    parts: tuple[PlanPart, ...]

    def line(self) -> str:
        return "execution plan: " + "; ".join(str(part) for part in self.parts)

    def part(self, name: str) -> PlanPart:
        return next(p for p in self.parts if p.name == name)


def block_range(start: int, stop: int) -> str:
    """``"block 3"`` or ``"blocks 0-21"`` (``stop`` exclusive)."""
    return f"block {start}" if stop - start == 1 else f"blocks {start}-{stop - 1}"


def trained_part(model: Any, trainable_blocks: int | None, also: tuple[str, ...] = ()) -> PlanPart:
    """What of ``model`` trains: its top ``trainable_blocks`` blocks and final norm, every parameter, or what was
    left trainable in the model as passed; and ``also`` (what trains beside those, e.g. a score head)."""
    trained, total, share = parameter_share(model)
    if trainable_blocks is not None:
        count = len(transformer_blocks(model))
        parts = (f"the top {trainable_blocks} of {count} blocks", "the final norm", *also)
        return PlanPart("trains", f"{_joined(parts)}, {share}", f"trainable_blocks={trainable_blocks}")
    what = "every parameter" if trained == total else "the parameters that require grad in the model as passed"
    return PlanPart("trains", f"{_joined((what, *also))}, {share}", "trainable_blocks=None")


def parameter_share(model: Any) -> tuple[int, int, str]:
    """``model``'s trained and total parameter counts, and ``"<trained>M of <total>M parameters"``."""
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trained, total, f"{trained / 1e6:.3g}M of {total / 1e6:.3g}M parameters"


def _joined(items: tuple[str, ...]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def frozen_trunk_part(model: Any, blocks: int, allowed: bool, reference_differs: bool, exact: bool | None) -> PlanPart:
    """The frozen-trunk decision for a policy whose first ``blocks`` blocks (and input embeddings) are frozen.

    Args:
        model: the policy (unwrapped).
        blocks: its frozen leading blocks (:func:`agents.lm.frozen_trunk.frozen_leading_blocks`).
        allowed: ``experimental.share_frozen_trunk``.
        reference_differs: the reference's embeddings or frozen blocks are not the policy's.
        exact: the first rollout's exactness check (``None``: not run yet).
    """
    name = "frozen trunk"
    if not allowed:
        return PlanPart(name, "off", "turned off by experimental.share_frozen_trunk=False")
    if blocks == 0:
        return PlanPart(name, "off", _why_no_frozen_blocks(model))
    if exact is False:
        return PlanPart(name, "off", "the first rollout's check found the trunk's log-probs differ from the full "
                        "forward's: the model's forward changes inputs_embeds")
    if reference_differs:
        return PlanPart(name, "off", "the reference's embeddings or frozen blocks differ from the policy's")
    total = len(transformer_blocks(model))
    check = "" if exact else "; checked against the full forward on the first rollout"
    return PlanPart(
        name,
        f"the output of {block_range(0, blocks)} is kept while sampling, once per rollout; the reference and loss "
        f"forwards run {block_range(blocks, total)} only",
        f"the input embeddings and {block_range(0, blocks)} are frozen{check}",
    )


def _why_no_frozen_blocks(model: Any) -> str:
    if all(p.requires_grad for p in model.parameters()):
        return "every parameter trains; trainable_blocks=N freezes all but the top N blocks"
    if any(p.requires_grad for p in model.get_input_embeddings().parameters()):
        return "the input embeddings train"
    try:
        blocks = transformer_blocks(model)
    except ValueError:
        return f"no transformer block list found in {type(model).__name__}"
    if final_norm(model.base_model) is None:
        return f"no final norm found in {type(model).__name__}"
    return "block 0 trains" if len(blocks) else "the model has no blocks"


def prompt_forward_part(allowed: bool, trunk_blocks: int, completions_per_prompt: int) -> PlanPart:
    """Whether the reference and loss forwards run each distinct prompt once and share its KV cache."""
    name = "prompt forward"
    if trunk_blocks:
        return PlanPart(name, "not needed", "the frozen trunk already holds every prompt's states; the blocks above it "
                        "run over whole sequences")
    if not allowed:
        return PlanPart(name, "every sequence forwarded whole", "turned off by experimental.share_prompt_forward=False")
    if completions_per_prompt > 1:
        return PlanPart(name, "each distinct prompt once, its KV cache shared by its completions",
                        f"{completions_per_prompt} completions per prompt")
    return PlanPart(name, "each distinct prompt once, its KV cache shared by its completions",
                    "saves work where a batch repeats a prompt")


def reference_part(needed_by: list[str], adapter: bool = False) -> PlanPart:
    """Whether the frozen reference runs, and the settings that need it; with a LoRA ``adapter`` the reference is
    the policy with its adapter switched off (no copy)."""
    if not needed_by:
        return PlanPart("reference", "none", "no KL term, reference_metrics=False, reference_fluency_weight=0")
    what = ("the policy with its LoRA adapter switched off (no copy)" if adapter
            else "a frozen copy of the initial policy") + ", one forward per iteration"
    return PlanPart("reference", what, "for " + _joined(tuple(needed_by)))


def adapter_part(model: Any, rank: int, alpha: float, target_modules: Any, blocks: int | None) -> PlanPart:
    """What a LoRA adapter trains: its rank, scale, target modules and blocks, and its share of the parameters."""
    share = parameter_share(model)[2]
    targets = target_modules if isinstance(target_modules, str) else ", ".join(target_modules)
    where = "every block" if blocks is None else f"the top {blocks} of {len(transformer_blocks(model))} blocks"
    return PlanPart("trains", f"a LoRA adapter (r={rank}, alpha={alpha:g}, {targets}) in {where}, {share}; the base "
                    "weights stay frozen", "lora")


def rollouts_part(async_rollouts: bool, importance_sampling_cap: float) -> PlanPart:
    """Whether sampling and training take turns in one process or overlap in an actor and a learner."""
    if async_rollouts:
        return PlanPart("rollouts", "an actor process samples round n+1 while the learner trains on round n (one "
                        f"round stale, per-token importance weights truncated at {importance_sampling_cap:g})",
                        "async_rollouts=True")
    return PlanPart("rollouts", "sampled, then trained on, in turn, in this process", "async_rollouts=False")


__all__ = [
    "ExecutionPlan",
    "PlanPart",
    "adapter_part",
    "parameter_share",
    "block_range",
    "frozen_trunk_part",
    "prompt_forward_part",
    "reference_part",
    "rollouts_part",
    "trained_part",
]
