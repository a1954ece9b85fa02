"""The numerical pieces of LM-PPO, GRPO and RLOO, as small pure functions over ``(batch, tokens)`` tensors.

Shapes: ``N`` sequences, ``T`` completion tokens. ``mask`` is 1.0 on a sequence's completion tokens (its first
``length`` slots, EOS included) and 0.0 after. Every function that averages across the batch accepts an optional
``accelerator`` and then averages across processes too, so data-parallel replicas compute identical statistics.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.modeling.decoding import entropy_from_logprobs


# -- masked statistics ---------------------------------------------------------------------------------------
def masked_sum_count(x: torch.Tensor, mask: torch.Tensor, accelerator: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of ``x`` over ``mask`` and the number of masked entries, summed over processes."""
    total = torch.stack([(x * mask).sum(), mask.sum()]).double()
    if accelerator is not None and accelerator.num_processes > 1:
        total = accelerator.reduce(total, reduction="sum")
    return total[0], total[1]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, accelerator: Any = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1 (over every process when ``accelerator`` is distributed)."""
    total, count = masked_sum_count(x, mask, accelerator)
    return (total / count.clamp(min=1)).to(x.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, accelerator: Any = None) -> torch.Tensor:
    """Population variance of ``x`` where ``mask`` is 1 (over every process when distributed)."""
    mean = masked_mean(x, mask, accelerator)
    total, count = masked_sum_count((x - mean) ** 2, mask, accelerator)
    return (total / count.clamp(min=1)).to(x.dtype)


def whiten(x: torch.Tensor, mask: torch.Tensor, accelerator: Any = None, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries; masked-out entries come back as 0."""
    mean = masked_mean(x, mask, accelerator)
    var = masked_var(x, mask, accelerator)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def process_advantages(
    advantages: torch.Tensor, mask: torch.Tensor, whiten_advantages: bool, clip: float | None, accelerator: Any = None
) -> torch.Tensor:
    """PPO-max's advantage treatment: whiten over ``mask`` (all processes), then clip to ``[-clip, clip]``."""
    if whiten_advantages:
        advantages = whiten(advantages, mask, accelerator)
    if clip is not None:
        advantages = advantages.clamp(-clip, clip)
    return advantages * mask


class RunningMoments:
    """Running mean and variance of every reward seen so far (Chan et al.'s parallel update, as in SB3's
    ``RunningMeanStd`` and MOSS-RLHF's ``RunningMoments``). Callers pass the scores of all processes (gathered), so
    every replica holds the same statistics."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = 0

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0:
            return
        batch_mean, batch_var, n = float(values.mean()), float(values.var()), values.size
        if self.count == 0:
            self.mean, self.var, self.count = batch_mean, batch_var, n
            return
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])


def shape_scores(
    scores: torch.Tensor,
    truncated: torch.Tensor,
    moments: RunningMoments,
    normalization: str,
    clip: float | None,
    missing_eos_penalty: float | None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """The PPO-max score pipeline: penalise truncated completions, update the running statistics with the
    scores, normalise (``"normalize"``: ``(r - mean) / std``; ``"scale"``: ``r / std``; ``"none"``), then clip.

    Pass every process's scores (gathered) so that ``moments`` stays identical on every replica.
    """
    scores = scores.double()
    if missing_eos_penalty is not None:
        scores = scores - missing_eos_penalty * truncated.double()
    if normalization != "none":
        moments.update(scores.cpu().numpy())
        std = moments.std + eps
        scores = (scores - moments.mean) / std if normalization == "normalize" else scores / std
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    return scores.float()


# -- KL to the reference -------------------------------------------------------------------------------------
class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019), as in TRL: ``beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon``,
    where ``KL`` is the mean per-completion KL of the last batch and ``n_steps`` its number of episodes."""

    def __init__(self, value: float, target: float, horizon: int) -> None:
        super().__init__(value)
        self.target, self.horizon = float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


def kl_penalized_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``-kl_coef * (log pi - log pi_ref)`` with the sequence's score added at its last token.

    Returns ``(rewards, kl)``, both ``(N, T)`` and zero after each sequence's end; ``kl`` is the k1 estimate
    ``log pi - log pi_ref`` of the sampled tokens.
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards = rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))
    return rewards, kl


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Schulman's non-negative, unbiased per-token KL estimate ``exp(r) - r - 1`` with ``r = log pi_ref - log pi``."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1.0


def token_kl(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    estimator: str = "k3",
    old_logprobs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled tokens' log-probs (Schulman, "Approximating KL
    Divergence", 2020), with ``r = log pi_ref - log pi``: ``"k1"`` = ``-r``, ``"k2"`` = ``r^2 / 2``, ``"k3"`` =
    :func:`k3_kl`.

    With ``old_logprobs`` (the sampling policy's), the estimate is multiplied by the differentiable importance
    ratio ``pi / pi_old`` (DeepSeek-V3.2; TRL ``use_bias_correction_kl``): its gradient is then, in expectation over
    the samples, the gradient of the reverse KL(pi || pi_ref), even where the ratio is exactly 1. Without it, k3's
    expected gradient is that of the forward KL(pi_ref || pi)."""
    log_ratio = ref_logprobs - logprobs
    if estimator == "k3":
        kl = k3_kl(logprobs, ref_logprobs)
    elif estimator == "k1":
        kl = -log_ratio
    elif estimator == "k2":
        kl = 0.5 * log_ratio**2
    else:
        raise ValueError(f"kl_estimator={estimator!r}; expected one of ('k1', 'k2', 'k3')")
    return kl if old_logprobs is None else kl * torch.exp(logprobs - old_logprobs)


# -- advantages ----------------------------------------------------------------------------------------------
def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each sequence's completion tokens.

    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)`` with ``V = 0`` after the last token (the episode is over:
    terminated by EOS, or truncated and already scored by the env), ``A_t = delta_t + gamma * lam * A_{t+1}``;
    returns are ``A + V``. Both come back ``(N, T)`` and zero outside ``mask``.
    """
    n, t_max = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(n, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(t_max)):
        next_mask = mask[:, t + 1] if t + 1 < t_max else torch.zeros_like(last)
        next_value = values[:, t + 1] * next_mask if t + 1 < t_max else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last * next_mask) * mask[:, t]
        advantages[:, t] = last
    returns = (advantages + values) * mask
    return advantages, returns


def grpo_advantages(scores: torch.Tensor, group_size: int, scale: str, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: each score minus its group's mean, divided by the group's std (``"group"``), the batch's std
    (``"batch"``) or nothing (``"none"``). Rows ``[g*k, (g+1)*k)`` form group ``g``. Std is unbiased, as in TRL."""
    grouped = scores.view(-1, group_size)
    centred = (grouped - grouped.mean(1, keepdim=True)).view(-1)
    if scale == "group":
        return centred / (grouped.std(1, keepdim=True).expand_as(grouped).reshape(-1) + eps)
    if scale == "batch":
        return centred / (scores.std() + eps)
    return centred


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO: each score minus the mean score of the other ``k - 1`` completions of its prompt."""
    grouped = scores.view(-1, group_size)
    baselines = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baselines).view(-1)


# -- losses --------------------------------------------------------------------------------------------------
def logprobs_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``tokens`` (``(N, T)``) under ``logits`` (``(N, T, V)``), computed in float32."""
    logits = logits.float()
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def masked_logprobs(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`logprobs_of` with 0 outside ``mask`` (padding slots may hold tokens whose logit is -inf)."""
    logprobs = logprobs_of(logits, tokens)
    return torch.where(mask > 0, logprobs, torch.zeros_like(logprobs))


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each position's distribution, ``(N, T, V) -> (N, T)`` (-inf logits allowed)."""
    return entropy_from_logprobs(F.log_softmax(logits.float(), dim=-1))


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    clip: bool = True,
    clip_range_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token PPO surrogate ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps_high) * A)`` (``(N, T)``, zero outside
    ``mask``; the caller aggregates), and its statistics: the clip fraction (share of tokens with the ratio
    outside the clip range) and the approximate KL ``E[(ratio - 1) - log ratio]`` to the rollout policy."""
    high = clip_range if clip_range_high is None else clip_range_high
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + high)
    per_token = (torch.max(unclipped, clipped) if clip else unclipped) * mask
    with torch.no_grad():
        outside = ((ratio < 1.0 - clip_range) | (ratio > 1.0 + high)).float()
        stats = {
            "clip_fraction": (outside * mask).sum() / mask.sum().clamp(min=1),
            "approx_kl": (((ratio - 1.0) - log_ratio) * mask).sum() / mask.sum().clamp(min=1),
        }
    return per_token, stats


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
    clip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``0.5 * mean(max((V - R)^2, (V_clip - R)^2))`` over ``mask`` with ``V_clip`` within ``clip_range_value`` of the
    rollout's values (plain ``0.5 * mean((V - R)^2)`` when ``clip`` is False), and the share of tokens where the
    clipped term was the larger."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    per_token = torch.max(loss_unclipped, loss_clipped) if clip else loss_unclipped
    count = mask.sum().clamp(min=1)
    loss = 0.5 * (per_token * mask).sum() / count
    with torch.no_grad():
        clip_fraction = ((loss_clipped > loss_unclipped).float() * mask).sum() / count
    return loss, clip_fraction


def explained_variance(
    predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, accelerator: Any = None
) -> float:
    """``1 - Var(targets - predictions) / Var(targets)`` over ``mask`` (NaN when the targets do not vary)."""
    var_targets = masked_var(targets, mask, accelerator)
    if float(var_targets) == 0.0:
        return float("nan")
    return float(1.0 - masked_var(targets - predictions, mask, accelerator) / var_targets)
