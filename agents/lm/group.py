"""Group-baseline LM agents on the same rollout engine as LM-PPO: GRPO and RLOO.

Both sample ``k = num_generations`` completions of each prompt (``k`` consecutive rows of the vector env get the
same ``prompt_index`` at reset), score them with the env's reward, and replace the value model by a baseline
computed within each prompt's group; the resulting per-sequence advantage applies to every token of the
completion. The policy loss is PPO's clipped surrogate on the ratio to the sampling policy.

* GRPO (Shao et al. 2024): ``A = (r - mean_group) / std_group``; KL to the reference as a per-token term in the
  loss (``beta``, TRL default 0; the k3 estimator, as in TRL).
* RLOO (Ahmadian et al. 2024): ``A = r' - mean of the other k-1 r'`` with ``r' = r - beta * KL(sequence)``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

from agents.lm.base import LMTrainer
from agents.lm.config import GRPOConfig, RLOOConfig
from agents.lm.core import clipped_policy_loss, grpo_advantages, masked_sum_count, rloo_advantages, token_kl, whiten
from agents.lm.rollout import Rollout


class GroupTrainer(LMTrainer):
    """What GRPO and RLOO share: k completions per prompt, one optimiser, the clipped token-level update."""

    config: Any

    def reference_needs(self) -> list[str]:
        return ([f"the KL term beta={self.config.beta:g}"] if self.config.beta > 0 else []) + super().reference_needs()

    def completions_per_prompt(self) -> int:
        return self.config.num_generations

    def _check_batch_layout(self) -> None:
        super()._check_batch_layout()
        k = self.config.num_generations
        if self.num_envs % k:
            raise ValueError(
                f"num_envs={self.num_envs} is not a multiple of num_generations={k}: each prompt's k completions "
                "must be rows of the same vector env"
            )

    def collect_groups(self) -> tuple[Rollout, torch.Tensor | None, torch.Tensor | None]:
        """k completions of each prompt in consecutive rows, and the frozen reference's tempered and natural
        log-probs of them (``None`` without a reference)."""
        rollout = self.collect(group_size=self.config.num_generations)
        if self.reference is None:
            return rollout, None, None
        with self.timer("forward_seconds"):
            ref_logprobs, ref_natural = self.reference_logprobs(rollout)
        self.add_reference_fluency(rollout, ref_natural)
        return rollout, ref_logprobs, ref_natural

    def policy_update(
        self,
        rollout: Rollout,
        *,
        advantages: torch.Tensor,
        loss_mask: torch.Tensor,
        epsilon: float,
        epsilon_high: float | None = None,
        ref_logprobs: torch.Tensor | None = None,
        kl_beta: float = 0.0,
        kl_estimator: str = "k3",
        kl_importance_weight: bool = False,
        loss_type: str = "dapo",
        dapo_normalizer: str = "minibatch",
    ) -> dict[str, float]:
        """``update_epochs`` x ``num_minibatches`` clipped policy-gradient steps with per-sequence ``advantages``
        (``(N,)``) on the tokens of ``loss_mask`` (``(N, T)``).

        The loss per token is the clipped surrogate (ratio clipped to ``[1 - epsilon, 1 + epsilon_high]``) plus
        ``kl_beta`` times the ``kl_estimator`` KL estimate to the reference (``ref_logprobs``, needed when
        ``kl_beta > 0``; times the ratio to the sampling policy when ``kl_importance_weight``); tokens are
        aggregated as ``loss_type`` says (``"dapo"``: sum / all tokens of the minibatch over processes, or with
        ``dapo_normalizer="rollout"`` sum / (all tokens of ``loss_mask`` over processes / ``num_minibatches``);
        ``"grpo"``: mean of per-sequence means; ``"dr_grpo"``: sum / (sequences x max_new_tokens)).
        """
        if kl_beta > 0 and ref_logprobs is None:
            raise ValueError(f"kl_beta={kl_beta} needs ref_logprobs")
        token_count = None
        if dapo_normalizer == "rollout":
            token_count = masked_sum_count(loss_mask, loss_mask, self.accelerator)[1] / self.config.num_minibatches
        stats: dict[str, list[float]] = defaultdict(list)
        with self.timer("update_seconds"):
            for epoch in range(self.config.update_epochs):
                for rows in self.minibatches(rollout.num_sequences, epoch):
                    batch = rollout.select(rows)
                    t = batch.mask.shape[1]
                    mask = loss_mask[rows, :t]
                    new_logprobs, _ = self.policy_logprobs(self.policy, batch)
                    per_token, policy_stats = clipped_policy_loss(
                        new_logprobs, batch.logprobs, advantages[rows, None].expand(-1, t), mask, epsilon,
                        clip_range_high=epsilon_high,
                    )
                    if kl_beta > 0:
                        old = batch.logprobs if kl_importance_weight else None
                        kl = token_kl(new_logprobs, ref_logprobs[rows, :t], kl_estimator, old) * mask
                        per_token = per_token + kl_beta * kl
                        stats["kl_loss"].append(float(kl.detach().sum() / mask.sum().clamp(min=1)))
                    loss = aggregate_token_loss(
                        per_token, mask, loss_type, self.task.max_new_tokens, self.accelerator, token_count
                    )
                    norms = self.optimizer_step(self.optimizer, loss, {"grad_norm": self.policy})
                    stats["policy_loss"].append(float(loss.detach()))
                    stats["clip_fraction"].append(float(policy_stats["clip_fraction"]))
                    stats["approx_kl"].append(float(policy_stats["approx_kl"]))
                    for key, value in norms.items():
                        stats[key].append(value)
        metrics = self.processes.mean({key: float(np.mean(values)) for key, values in stats.items()})
        metrics["optimizer_steps"] = float(len(stats["policy_loss"]))
        return metrics


def aggregate_token_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    max_new_tokens: int,
    accelerator: Any = None,
    token_count: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a ``(N, T)`` per-token loss to a scalar (see :meth:`GroupTrainer.policy_update`). Under DDP the
    gradients are averaged over processes, so ``"dapo"`` scales by ``num_processes / global token count`` to give
    the mean over every process's tokens; ``token_count`` replaces that count (the minibatch's, over processes)."""
    if loss_type == "dapo":
        count = masked_sum_count(per_token.detach(), mask, accelerator)[1] if token_count is None else token_count
        processes = accelerator.num_processes if accelerator is not None else 1
        return per_token.sum() * processes / count.clamp(min=1).to(per_token.dtype)
    if loss_type == "grpo":
        return ((per_token.sum(1) / mask.sum(1).clamp(min=1))).mean()
    if loss_type == "dr_grpo":
        return per_token.sum() / (per_token.shape[0] * max_new_tokens)
    raise ValueError(f"loss_type={loss_type!r}")


class GRPOTrainer(GroupTrainer):
    """GRPO on a textenv vector env (see :mod:`agents.lm.group`)."""

    config_class = GRPOConfig
    config: GRPOConfig

    def iteration_step(self) -> dict[str, float]:
        cfg = self.config
        k = cfg.num_generations

        # 1-2. k completions of each prompt, in consecutive rows; the frozen reference's log-probs of them (for the
        #      k3 KL term, and the logged KL/perplexity)
        rollout, ref_logprobs, ref_natural = self.collect_groups()

        # 3. group-relative advantages, over every process's groups (a group never spans processes)
        all_scores = self.processes.gather(rollout.scores)
        advantages = self.processes.local_rows(grpo_advantages(all_scores, k, cfg.scale_rewards))

        # 4. clipped policy-gradient update, truncated completions optionally left out
        loss_mask = rollout.mask
        if cfg.mask_truncated_completions:
            loss_mask = loss_mask * (~rollout.truncated).float()[:, None]
        update = self.policy_update(
            rollout,
            advantages=advantages,
            loss_mask=loss_mask,
            epsilon=cfg.epsilon,
            epsilon_high=cfg.epsilon_high,
            ref_logprobs=ref_logprobs,
            kl_beta=cfg.beta,
            kl_estimator=cfg.experimental.kl_estimator,
            kl_importance_weight=cfg.experimental.kl_importance_weight,
            loss_type=cfg.loss_type,
            dapo_normalizer=cfg.experimental.dapo_normalizer,
        )

        kl = (rollout.logprobs - ref_logprobs) * rollout.mask if ref_logprobs is not None else None
        metrics = self.rollout_metrics(rollout, ref_natural, kl)
        metrics.update(update)
        metrics["advantage_std"] = float(advantages.std())
        metrics["group_reward_std"] = float(all_scores.view(-1, k).std(1).mean())
        return metrics


class RLOOTrainer(GroupTrainer):
    """RLOO on a textenv vector env (see :mod:`agents.lm.group`)."""

    config_class = RLOOConfig
    config: RLOOConfig

    def iteration_step(self) -> dict[str, float]:
        cfg = self.config

        # 1-2. k completions of each prompt, in consecutive rows; the frozen reference's log-probs of them: the
        #      sequence-level KL of each completion
        rollout, ref_logprobs, ref_natural = self.collect_groups()
        kl = None if ref_logprobs is None else (rollout.logprobs - ref_logprobs) * rollout.mask

        # 3. rewards: clipped scores minus beta * KL(sequence); leave-one-out baseline within each group
        scores = rollout.scores
        if cfg.reward_clip_range is not None:
            scores = scores.clamp(*cfg.reward_clip_range)
        rewards = scores - cfg.beta * kl.sum(1) if (kl is not None and cfg.beta > 0) else scores
        advantages = rloo_advantages(rewards, cfg.num_generations)
        if cfg.normalize_advantages:
            advantages = whiten(advantages, torch.ones_like(advantages), self.accelerator)

        # 4. clipped policy-gradient update (the KL is in the reward, not the loss)
        update = self.policy_update(rollout, advantages=advantages, loss_mask=rollout.mask, epsilon=cfg.epsilon)

        metrics = self.rollout_metrics(rollout, ref_natural, kl)
        metrics.update(update)
        metrics["advantage_std"] = float(advantages.std())
        metrics["rloo_reward_mean"] = float(self.processes.gather(rewards).mean())
        return metrics
