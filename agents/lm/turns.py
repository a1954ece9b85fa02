"""Multi-turn pieces of the LM agents: rewards placed at turn ends and GAE over the agent's own tokens.

In a multi-turn episode (:class:`textenv.dialogue_vector_env.DialogueVectorEnv`) a rollout's ``(N, T)`` columns are
the conversation's slots: the agent's tokens (``mask`` 1) and the tokens the env inserted between its turns
(``mask`` 0: never trained on). In a single-turn episode ``mask`` is a prefix of ones and every function here gives
exactly what its single-turn counterpart in :mod:`agents.lm.core` gives.
"""

from __future__ import annotations

import torch

from agents.lm.core import compute_gae


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Column of each row's last masked token, ``(N,)`` (0 for a row without one)."""
    columns = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return ((mask > 0).long() * columns).max(1).values.sub(1).clamp(min=0)


def used_width(mask: torch.Tensor) -> int:
    """Columns up to and including the last masked token of any row (at least 1)."""
    return int(last_token_index(mask).max().item()) + 1 if mask.numel() else 1


def place_scores(
    shaped: torch.Tensor, step_rewards: torch.Tensor | None, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """The env's rewards as ``(N, T)`` per-token rewards: each per-turn reward (``step_rewards``, at the agent token
    that ended the turn) times ``scale`` at its token, and at each row's last agent token the rest of its shaped
    score, so that every row's placed rewards sum to ``shaped`` (``(N,)``, the shaped episode score)."""
    rows = torch.arange(mask.shape[0], device=mask.device)
    last = last_token_index(mask)
    placed = torch.zeros_like(mask, dtype=shaped.dtype)
    if step_rewards is not None:
        early = (step_rewards * mask).to(shaped.dtype)
        early[rows, last] = 0.0
        placed = early * scale
    placed[rows, last] += shaped - placed.sum(1)
    return placed


def agent_token_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`agents.lm.core.compute_gae` over each row's agent tokens only: the inserted tokens between two turns
    are skipped (the next state of a turn's last token is the first token of the next turn, no discount across the
    reply). Advantages and returns come back in the ``(N, T)`` layout, zero outside ``mask``."""
    keys = (mask <= 0).to(torch.int8)  # agent tokens first, in order
    order = torch.sort(keys, dim=1, stable=True).indices
    advantages_c, returns_c = compute_gae(
        rewards.gather(1, order), values.gather(1, order), mask.gather(1, order), gamma, lam
    )
    advantages = torch.zeros_like(rewards).scatter(1, order, advantages_c)
    returns = torch.zeros_like(rewards).scatter(1, order, returns_c)
    return advantages, returns
