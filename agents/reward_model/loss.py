"""The Bradley-Terry reward-model loss with margin, label smoothing and reward centring."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    center_rewards_coefficient: float = 0.0,
) -> torch.Tensor:
    """Mean over pairs of ``-(1 - eps) log sigmoid(d) - eps log sigmoid(-d)`` with ``d = r_c - r_r - margin``,
    plus ``coef * mean((r_c + r_r)^2)``.

    Args:
        chosen: ``(B,)`` scores of the chosen completions.
        rejected: ``(B,)`` scores of the rejected completions.
        margin: ``(B,)`` how much the chosen should win by (Llama 2 / TRL), or ``None`` for 0.
        label_smoothing: ``eps`` in ``[0, 0.5)``: the probability that a label is flipped (Part II).
        center_rewards_coefficient: weight of the centring term (TRL's ``center_rewards_coefficient``).
    """
    delta = chosen - rejected
    if margin is not None:
        delta = delta - margin
    loss = -(1.0 - label_smoothing) * F.logsigmoid(delta)
    if label_smoothing:
        loss = loss - label_smoothing * F.logsigmoid(-delta)
    loss = loss.mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
    return loss


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Fraction of pairs whose chosen completion scores higher (a tie counts half)."""
    wins = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    return float(wins.mean()) if wins.numel() else float("nan")
