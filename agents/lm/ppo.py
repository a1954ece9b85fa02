"""LM-PPO with the MOSS-RLHF "PPO-max" details, reading top to bottom like CleanRL's ``ppo.py``.

One iteration:

1. collect ``num_envs`` episodes per process by stepping the textenv vector env (prefill once, one token per step
   from the KV cache), keeping each token's sampling log-prob;
2. one forward pass of the frozen reference and of the value model over the finished sequences;
3. shape the env's scores: missing-EOS penalty, running normalisation, clipping;
4. per-token rewards: the token-level KL penalty to the reference, plus the shaped score at the last token;
5. GAE (gamma 1, lambda 0.95);
6. ``update_epochs`` x ``num_minibatches`` optimiser steps on the clipped policy loss, the clipped value loss, the
   entropy bonus and the PPO-ptx loss, with advantages whitened per minibatch and gradients clipped per model
   (the policy is frozen during the first ``critic_warmup_iterations``);
7. adapt the KL coefficient (if ``adaptive_kl``).

Example::

    from agents.lm import LMPPOConfig, LMPPOTrainer

    trainer = LMPPOTrainer("MossText-v0", "smollm2-135m-instruct", LMPPOConfig(num_envs=16, learning_rate=1e-5))
    trainer.train(iterations=50)
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.lm.base import LMTrainer
from agents.lm.config import LMPPOConfig
from agents.lm.lora import TrainableWeights, copy_sharing_frozen
from agents.lm.core import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    kl_penalized_rewards,
    masked_mean,
    process_advantages,
    shape_scores,
)
from agents.lm.execution_plan import ExecutionPlan, PlanPart, block_range, parameter_share
from agents.lm.ptx import PretrainCorpus
from agents.modeling.decoding import position_ids
from agents.modeling.model_blocks import freeze_lower_blocks, transformer_blocks
from agents.lm.frozen_trunk import frozen_leading_blocks
from agents.lm.rollout import Rollout
from agents.lm.turns import agent_token_gae, place_scores
from agents.lm.value_model import ValueModel

VALUE_DIR = "value"


class LMPPOTrainer(LMTrainer):
    """LM-PPO ("PPO-max") on a textenv vector env.

    Args:
        env, model, config, reward, env_kwargs, accelerator: see :class:`agents.lm.base.LMTrainer`.
        value_model: ``None`` (built as ``config.value_model_init`` says: a copy of the policy's backbone, or a
            classifier reward-model directory), a classifier directory, or a :class:`ValueModel`.
        pretrain_corpus: texts for PPO-ptx (a list of str or a ``.txt`` path); needed when ``config.ptx_coef > 0``.
    """

    config_class = LMPPOConfig
    prepared_models = ("policy", "value_model")
    config: LMPPOConfig

    def __init__(
        self,
        env: Any,
        model: Any,
        config: LMPPOConfig | None = None,
        *,
        value_model: Any = None,
        pretrain_corpus: Any = None,
        reward: Any = None,
        env_kwargs: dict[str, Any] | None = None,
        accelerator: Any = None,
    ) -> None:
        self._value_model_source, self._pretrain_source = value_model, pretrain_corpus
        super().__init__(env, model, config, reward=reward, env_kwargs=env_kwargs, accelerator=accelerator)
        cfg = self.config
        if cfg.adaptive_kl:
            self.kl_controller: FixedKLController = AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        else:
            self.kl_controller = FixedKLController(cfg.kl_coef)
        self.reward_moments = RunningMoments()

    def _build_models(self) -> None:
        cfg = self.config
        self.value_adapter_only = False  # the value model trains (and saves) an adapter and its head only
        self.value_model = self._make_value_model(self._value_model_source).to(self.device).eval()
        if cfg.trainable_blocks is not None:  # the critic trains the policy's top blocks (and its value head)
            freeze_lower_blocks(self.value_model.backbone, cfg.trainable_blocks)
        self.pretrain = None
        if self._pretrain_source is not None:
            self.pretrain = PretrainCorpus(self._pretrain_source, self.task.tokenizer, cfg.ptx_block_size)
        if cfg.ptx_coef > 0 and self.pretrain is None:
            raise ValueError(f"ptx_coef={cfg.ptx_coef} needs a pretrain_corpus (a list of str or a .txt path)")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """One AdamW, two parameter groups (MOSS-RLHF): the policy's and the critic's learning rate and epsilon."""
        cfg = self.config
        params = list(self.value_model.parameters())
        if self.value_adapter_only:  # never the base weights it shares with the policy
            params = [p for p in params if p.requires_grad]
        critic = {"params": params, "lr": cfg.critic_learning_rate, "eps": cfg.critic_adam_eps}
        return [*super().parameter_groups(), critic]

    def reference_needs(self) -> list[str]:
        kl = [f"the KL penalty kl_coef={self.config.kl_coef:g}"] if self.config.kl_coef > 0 else []
        return kl + super().reference_needs()

    def _make_value_model(self, value_model: Any) -> ValueModel:
        if isinstance(value_model, ValueModel):
            return value_model
        source = self.config.value_model_init if value_model is None else value_model
        if source == "policy" and self.adapter is not None:  # its own adapter on the policy's (shared) base weights
            self.value_adapter_only = True
            return ValueModel.from_policy(self.policy, copy_backbone=copy_sharing_frozen)
        if source == "policy":
            return ValueModel.from_policy(self.policy)
        if isinstance(source, (str, Path)):
            return ValueModel.from_classifier(source, tokenizer=self.task.tokenizer)
        raise TypeError(f"value_model must be None, 'policy', a classifier directory or a ValueModel, got {source!r}")

    def execution_plan(self) -> ExecutionPlan:
        plan = super().execution_plan()
        return ExecutionPlan((*plan.parts, self._value_model_plan()))

    def _value_model_plan(self) -> PlanPart:
        """Where the value model comes from, what of it trains, and whether it starts from the policy's trunk."""
        critic = self.accelerator.unwrap_model(self.value_model)
        source = self.config.value_model_init if self._value_model_source is None else self._value_model_source
        if isinstance(source, ValueModel):
            made = "passed in"
        else:
            made = "a copy of the policy's backbone" if source == "policy" else f"from {source}"
        blocks, why = self.value_model_trunk(self.shareable_trunk_blocks())
        count = len(transformer_blocks(critic.backbone))
        runs = f"runs {block_range(blocks, count)}" + (" on the policy's frozen trunk" if blocks else "")
        return PlanPart("value model", f"{made}, {parameter_share(critic)[2]} trained, {runs}", why)

    def value_model_trunk(self, blocks: int) -> tuple[int, str]:
        """How many of the policy's ``blocks`` frozen-trunk blocks the value model starts from (0: it runs all its
        own), and why: it does when its embeddings and lower blocks are the policy's frozen ones."""
        backbone = self.accelerator.unwrap_model(self.value_model).backbone
        if not blocks:
            return 0, "the policy's forwards have no frozen trunk"
        if frozen_leading_blocks(backbone) < blocks:
            return 0, "it trains some of the policy's frozen blocks"
        if not self.frozen_blocks_match("value", backbone, blocks):
            return 0, "its embeddings or lower blocks are not the policy's"
        return blocks, "its embeddings and lower blocks are the policy's frozen ones"

    # -- one iteration -------------------------------------------------------------------------------------------
    def iteration_step(self) -> dict[str, float]:
        cfg = self.config

        # 1. rollouts: step the vector env, one token per step from the policy's KV cache
        rollout = self.collect()
        mask = rollout.mask

        # 2. one forward pass over the finished sequences: the frozen reference's log-probs and the values
        with self.timer("forward_seconds"):
            ref_logprobs, ref_natural = self.reference_logprobs(rollout) if self.reference is not None else (None, None)
            with torch.no_grad():
                old_values = self.predict_values(self.accelerator.unwrap_model(self.value_model), rollout)
        self.add_reference_fluency(rollout, ref_natural)

        # 3. score shaping (PPO-max): missing-EOS penalty, running mean/std normalisation, clipping
        shaped = self.shaped_scores(rollout)

        # 4. per-token rewards: -kl_coef * (log pi - log pi_ref) at every token, the shaped score at the last one
        #    (multi-turn: per-turn rewards at the tokens that ended their turns, agents/lm/turns.py)
        kl_coef = self.kl_controller.value
        reference = ref_logprobs if ref_logprobs is not None else rollout.logprobs  # no reference: no penalty
        rewards, kl = kl_penalized_rewards(torch.zeros_like(shaped), rollout.logprobs, reference, mask, kl_coef)
        rewards = rewards + place_scores(shaped, rollout.step_rewards, mask, self.turn_reward_scale())

        # 5. generalised advantage estimation over the agent's tokens (inserted tokens skipped)
        advantages, returns = agent_token_gae(rewards, old_values, mask, cfg.gamma, cfg.lam)

        # 6. update_epochs x num_minibatches optimiser steps (the policy is frozen during critic warm-up)
        train_policy = self.iteration >= cfg.critic_warmup_iterations
        trained = {"value_grad_norm": self.value_model, **({"grad_norm": self.policy} if train_policy else {})}
        stats: dict[str, list[float]] = defaultdict(list)
        with self.timer("update_seconds"):
            for epoch in range(cfg.update_epochs):
                for index, rows in enumerate(self.minibatches(rollout.num_sequences, epoch)):
                    loss, step_stats = self.minibatch_loss(
                        rollout.select(rows), advantages[rows], returns[rows], old_values[rows], train_policy,
                        ptx_key=f"{epoch}.{index}",
                    )
                    step_stats.update(self.optimizer_step(self.optimizer, loss, trained))
                    for key, value in step_stats.items():
                        stats[key].append(value)

        # 7. adaptive KL coefficient (Ziegler et al.): one update per iteration, from the batch's mean KL
        all_kl = self.processes.gather(kl.sum(1))
        if ref_logprobs is not None:
            self.kl_controller.update(float(all_kl.mean()), n_steps=int(all_kl.numel()))

        metrics = self.rollout_metrics(rollout, ref_natural, kl if ref_logprobs is not None else None)
        metrics["optimizer_steps"] = float(len(stats["value_loss"]))
        metrics.update(self.processes.mean({key: float(np.mean(values)) for key, values in stats.items()}))
        metrics.update(
            {
                "kl_coef": kl_coef,
                "score_shaped_mean": float(self.processes.gather(shaped).mean()),
                "value_mean": float(masked_mean(old_values, mask, self.accelerator)),
                "return_mean": float(masked_mean(returns, mask, self.accelerator)),
                "advantage_mean": float(masked_mean(advantages, mask, self.accelerator)),
                "explained_variance": explained_variance(old_values, returns, mask, self.accelerator),
                "reward_running_mean": self.reward_moments.mean,
                "reward_running_std": self.reward_moments.std,
                "critic_warmup": float(not train_policy),
            }
        )
        return metrics

    def minibatch_loss(
        self,
        batch: Rollout,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        old_values: torch.Tensor,
        train_policy: bool,
        ptx_key: str,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The PPO-max loss of one minibatch (its rows of the iteration's ``(N, T)`` tensors): clipped value loss,
        and when ``train_policy`` the clipped surrogate with whitened advantages, the entropy bonus and PPO-ptx."""
        cfg = self.config
        t = batch.mask.shape[1]
        mask, advantages, returns, old_values = batch.mask, advantages[:, :t], returns[:, :t], old_values[:, :t]

        new_values = self.predict_values(self.value_model, batch)
        value_loss, value_clip_fraction = clipped_value_loss(
            new_values, old_values, returns, mask, cfg.clip_range_value, cfg.clip_value_loss
        )
        loss = cfg.vf_coef * value_loss
        stats = {"value_loss": float(value_loss.detach()), "value_clip_fraction": float(value_clip_fraction)}
        if not train_policy:
            return loss, stats

        # advantage whitening over the minibatch (all processes), then optional clipping
        advantages = process_advantages(advantages, mask, cfg.whiten_advantages, cfg.advantage_clip, self.accelerator)
        new_logprobs, entropy = self.policy_logprobs(self.policy, batch, with_entropy=cfg.entropy_coef > 0)
        per_token, policy_stats = clipped_policy_loss(
            new_logprobs, batch.logprobs, advantages, mask, cfg.clip_range, cfg.clip_policy_loss
        )
        if batch.importance_weights is not None:  # async_rollouts: stale samples reweighted
            per_token = per_token * batch.importance_weights
        policy_loss = per_token.sum() / mask.sum().clamp(min=1)
        loss = loss + policy_loss
        stats.update(
            policy_loss=float(policy_loss.detach()),
            clip_fraction=float(policy_stats["clip_fraction"]),
            approx_kl=float(policy_stats["approx_kl"]),
        )
        if cfg.entropy_coef > 0:
            entropy_bonus = masked_mean(entropy, mask)
            loss = loss - cfg.entropy_coef * entropy_bonus
            stats["entropy_bonus"] = float(entropy_bonus.detach())
        if cfg.ptx_coef > 0:
            ptx_loss = self.pretrain_loss(ptx_key)
            loss = loss + cfg.ptx_coef * ptx_loss
            stats["ptx_loss"] = float(ptx_loss.detach())
        return loss, stats

    def shaped_scores(self, rollout: Rollout) -> torch.Tensor:
        """This process's rows of the shaped scores, shaped over every process's scores (so that every replica
        keeps the same running statistics)."""
        cfg = self.config
        shaped = shape_scores(
            self.processes.gather(rollout.scores),
            self.processes.gather(rollout.truncated.float()),
            self.reward_moments,
            cfg.reward_normalization,
            cfg.reward_clip,
            cfg.missing_eos_penalty,
        )
        return self.processes.local_rows(shaped)

    def turn_reward_scale(self) -> float:
        """The factor per-turn rewards are shaped by: ``1 / std`` of the running scores when they are normalised or
        scaled (as the episode score is), else 1."""
        if self.config.reward_normalization == "none":
            return 1.0
        return 1.0 / (self.reward_moments.std + 1e-8)

    # -- pieces ------------------------------------------------------------------------------------------------
    def predict_values(self, value_model: Any, rollout: Rollout) -> torch.Tensor:
        """``V(s_t)`` ``(N, T)`` for every completion token's state, read at the slot before the token. When the
        value model's lower blocks are the policy's frozen ones (a copy of the policy, frozen alike), only its blocks
        above the rollout's trunk run (:mod:`agents.lm.frozen_trunk`)."""
        p, t = rollout.prompt_slots, rollout.mask.shape[1]
        width = p + t - 1
        trunk = rollout.trunk
        if trunk is not None and not self.value_model_trunk(trunk.blocks)[0]:
            trunk = None
        if trunk is None:
            attention = rollout.attention_mask[:, :width]
            values = value_model(rollout.input_ids[:, :width], attention, position_ids(attention))
            return values[:, p - 1 :].float() * rollout.mask
        states, first = trunk.columns(rollout.attention_mask, p, width)
        attention = rollout.attention_mask[:, first:width]
        values = value_model(None, attention, position_ids(attention), inputs_embeds=states, first_block=trunk.blocks)
        return values[:, p - 1 - first :].float() * rollout.mask

    def pretrain_loss(self, key: str) -> torch.Tensor:
        """PPO-ptx: the policy's next-token cross-entropy on a batch of corpus blocks (drawn from the iteration's
        seed and ``key``, the minibatch's)."""
        assert self.pretrain is not None
        rng = self.seeds.rng(self.iteration, f"ptx{key}")
        blocks = self.pretrain.sample(rng, self.config.ptx_batch_size).to(self.device)
        return self.policy(input_ids=blocks, labels=blocks, use_cache=False).loss

    # -- checkpoints -------------------------------------------------------------------------------------------
    def checkpoint_models(self) -> dict[str, Any]:
        value_model = self.accelerator.unwrap_model(self.value_model)
        if self.value_adapter_only:
            value_model = TrainableWeights(value_model)  # its adapter and head: the base weights are the policy's
        return {**super().checkpoint_models(), VALUE_DIR: value_model}

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            **super().checkpoint_state(),
            "kl_controller": self.kl_controller.state_dict(),
            "reward_moments": self.reward_moments.state_dict(),
        }

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        super().load_checkpoint_state(state)
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.reward_moments.load_state_dict(state["reward_moments"])
