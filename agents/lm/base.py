"""What every LM agent shares: the env and models, rollouts, the frozen reference's forward, the optimiser step
under ``accelerate`` and the training loop. The algorithms (``ppo.py``, ``group.py``) only write their
``iteration_step``. Per-iteration seeds (:mod:`agents.lm.seeding`), cross-process statistics
(:mod:`agents.lm.distributed`), logging (:mod:`agents.lm.logger`), checkpoint contents
(:mod:`agents.lm.checkpoint_io`) and per-iteration hooks (:mod:`agents.lm.callbacks`) live in their own modules.

Data parallelism: run the same script under ``accelerate launch`` (or ``torchrun``). Every process owns its own
vector env and collects its own rollouts (prompts and samples are seeded per process); gradients are averaged by
DDP and every batch statistic (reward normalisation, whitening, KL) is computed over all processes, so the
replicas stay identical.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import textenv  # noqa: F401  (registers the env ids)
from agents.checkpoint import CHECKPOINT_DIR, find_checkpoint, write_atomically
from agents.lm.async_rollouts import (
    BEHAVIOUR_DIR,
    actor_for_loop,
    check_supported,
    correct_for_staleness,
    read_behaviour_weights,
)
from agents.lm.callbacks import Callback, CallbackList, CheckpointSchedule
from agents.lm.checkpoint_io import read_saved_config, read_trainer_checkpoint, write_trainer_checkpoint
from agents.lm.config import LMAgentConfig
from agents.lm.experimental import move_study_fields
from agents.lm.core import masked_logprobs, masked_sum_count
from agents.lm.distributed import Processes
from agents.lm.execution_plan import (
    ExecutionPlan,
    adapter_part,
    frozen_trunk_part,
    prompt_forward_part,
    reference_part,
    rollouts_part,
    trained_part,
)
from agents.lm.frozen_trunk import (
    TrunkStates,
    frozen_leading_blocks,
    frozen_versions,
    matches_full_forward,
    same_frozen_blocks,
    trunk_states,
)
from agents.lm.logger import MetricsLogger
from agents.lm.lora import LoRAAdapter
from agents.modeling.decoding import filter_logits, masked_logits
from agents.modeling.model_blocks import freeze_lower_blocks
from agents.lm.rollout import Rollout, RolloutEngine, completion_logits, text_vector_env
from agents.lm.schedule import LearningRateSchedule
from agents.lm.seeding import IterationSeeds
from agents.lm.turns import last_token_index
from textenv.user_warnings import warn_caller

POLICY_DIR = "policy"
PLAN_LOG = logging.getLogger("agents.lm")  # the execution plan, at INFO


class LMTrainer:
    """Base class of the LM agents.

    Args:
        env: a registered env id (built with ``gym.make_vec(..., vectorization_mode="vector_entry_point",
            autoreset_mode=DISABLED, num_envs=config.num_envs, **env_kwargs)``) or such a vector env.
        model: the policy: a model name or directory (:func:`textenv.load_causal_lm`) or a transformers causal LM.
        config: the trainer's config dataclass (default: its defaults).
        reward: a reward spec for the env (shortcut for ``env_kwargs["reward"]``; only with an env id).
        env_kwargs: keyword arguments for the env (only with an env id).
        accelerator: an ``accelerate.Accelerator`` (default: a new one; it reads ``accelerate launch``'s settings).
    """

    config_class: type[LMAgentConfig] = LMAgentConfig
    prepared_models: tuple[str, ...] = ("policy",)  # attributes holding models passed to accelerator.prepare_model

    def __init__(
        self,
        env: str | gym.vector.VectorEnv,
        model: str | Any,
        config: LMAgentConfig | None = None,
        *,
        reward: Any = None,
        env_kwargs: dict[str, Any] | None = None,
        accelerator: Any = None,
    ) -> None:
        from accelerate import Accelerator

        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        config.validate()
        self.config = config
        self.accelerator = accelerator if accelerator is not None else Accelerator()
        self.device = self.accelerator.device
        if config.async_rollouts:
            check_supported(self.accelerator)
        self.seeds = IterationSeeds(config.seed, self.accelerator.process_index)
        self.env = self._make_env(env, reward, env_kwargs)
        self.task = text_vector_env(self.env).task
        self.num_envs = text_vector_env(self.env).num_envs
        self.processes = Processes(self.accelerator, self.num_envs)
        self._check_batch_layout()

        self.adapter: LoRAAdapter | None = None  # config.lora's adapter in the policy (agents.lm.lora)
        self.policy = self._load_policy(model)
        # the frozen initial policy: the KL anchor, and the model the completions' perplexity is measured under
        self.reference = self._make_reference() if self.uses_reference() else None
        self.engine = RolloutEngine(self.env, self.policy, config.temperature)
        self._build_models()
        self.optimizer = torch.optim.AdamW(
            self.parameter_groups(), betas=config.adam_betas, weight_decay=config.weight_decay
        )
        self.lr_schedule = LearningRateSchedule(
            config.lr_schedule, self.optimizer, config.update_epochs * config.num_minibatches,
            config.lr_decay_iterations,
        )
        for name in self.prepared_models:  # DDP-wrapped when distributed
            setattr(self, name, self.accelerator.prepare_model(getattr(self, name)))
        self.iteration = 0  # iterations completed
        self.num_timesteps = 0  # completion tokens generated, all processes
        self.num_episodes = 0  # episodes finished, all processes
        self.timings: dict[str, float] = defaultdict(float)
        self._trunk_exact: bool | None = None  # the frozen trunk's check on the first rollout, once done
        self.shared_trunk_blocks = 0  # frozen blocks the last rollout's forwards shared (the frozen trunk)
        self.off_policy_stats: dict[str, float] = {}  # async_rollouts: this iteration's importance weights
        self._trunk_verified: dict[str, tuple[Any, ...]] = {}  # model -> frozen weights' versions when found equal
        self.rollout_actor: Any = None  # async_rollouts: the actor process, while a training loop runs
        self.behaviour_weights: Any = None  # async_rollouts: the trained weights the actor samples the next round with

    # -- construction ------------------------------------------------------------------------------------------
    def _make_env(self, env: Any, reward: Any, env_kwargs: dict[str, Any] | None) -> Any:
        if isinstance(env, str):
            kwargs = dict(env_kwargs or {})
            if reward is not None:
                kwargs["reward"] = reward
            return gym.make_vec(
                env,
                num_envs=self.config.num_envs,
                vectorization_mode="vector_entry_point",
                autoreset_mode=gym.vector.AutoresetMode.DISABLED,
                **kwargs,
            )
        if reward is not None or env_kwargs:
            raise ValueError("reward and env_kwargs only apply when env is an id; configure a vector env yourself")
        text_vector_env(env)  # raises a clear error for anything else
        return env

    def _check_batch_layout(self) -> None:
        """Subclasses check that ``num_envs`` fits their grouping and minibatching."""
        if self.num_envs % self.config.num_minibatches:
            raise ValueError(
                f"num_envs={self.num_envs} is not divisible by num_minibatches={self.config.num_minibatches}"
            )

    def _load_policy(self, model: Any) -> Any:
        name = str(model) if isinstance(model, (str, Path)) else getattr(model, "name_or_path", None) or None
        if isinstance(model, (str, Path)):
            model = textenv.load_causal_lm(str(model))
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "get_output_embeddings"):
            raise TypeError(
                f"model must be a model name/directory or a transformers causal LM, got {type(model).__name__}"
            )
        model = model.to(self.device)
        model.eval()  # dropout off for good: rollouts and the loss must see the same function
        if self.config.lora is not None:
            self.adapter = LoRAAdapter(model, self.config.lora, base_model=name, blocks=self.config.adapter_blocks(),
                                       seed=self.config.seed)
        elif self.config.trainable_blocks is not None:
            freeze_lower_blocks(model, self.config.trainable_blocks)
        return model

    def reference_needs(self) -> list[str]:
        """The settings that need the frozen reference (a KL term, the reference fluency, the reference metrics);
        subclasses add theirs. Empty: no reference is built."""
        cfg = self.config
        needs = ["reference_metrics"] if cfg.reference_metrics else []
        if cfg.reference_fluency_weight > 0:
            needs.append(f"reference_fluency_weight={cfg.reference_fluency_weight:g}")
        return needs

    def uses_reference(self) -> bool:
        """Whether the frozen reference is needed (:meth:`reference_needs`)."""
        return bool(self.reference_needs())

    def _make_reference(self) -> Any:
        """A frozen copy of the policy as passed in (a resumed run rebuilds it the same way); with a LoRA adapter,
        the policy itself with the adapter switched off (no copy)."""
        if self.adapter is not None:
            return self.adapter.base_view()
        reference = copy.deepcopy(self.policy).eval()
        reference.requires_grad_(False)
        return reference

    def _build_models(self) -> None:
        """Subclasses build their other trained models here (after the policy, before the optimiser)."""

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups of the one optimiser: the policy's, at the config's learning rate and epsilon."""
        cfg = self.config
        params = list(self.policy.parameters()) if self.adapter is None else self.adapter.trainable_parameters()
        return [{"params": params, "lr": cfg.learning_rate, "eps": cfg.adam_eps}]

    @property
    def unwrapped_policy(self) -> Any:
        return self.accelerator.unwrap_model(self.policy)

    # -- rollouts ----------------------------------------------------------------------------------------------
    def prompt_indices(self, group_size: int = 1, iteration: int | None = None) -> np.ndarray:
        """Each row's prompt in ``iteration`` (default: the current one): ``num_envs / group_size`` prompts drawn
        without replacement (with replacement when there are fewer prompts than groups), each repeated for
        ``group_size`` consecutive rows."""
        num_prompts = len(self.task.prompts)
        groups = self.num_envs // group_size
        chosen = self.seeds.rng(self.iteration if iteration is None else iteration, "prompts").choice(
            num_prompts, size=groups, replace=groups > num_prompts
        )
        return np.repeat(chosen, group_size)

    def collect(self, group_size: int = 1) -> Rollout:
        """One lockstep batch of episodes from the current policy (``generation``/``env`` timings recorded); with
        ``async_rollouts``, the actor's, from the previous round's policy (:mod:`agents.lm.async_rollouts`)."""
        blocks = self.shareable_trunk_blocks()
        if self.rollout_actor is not None:
            rollout, same_weights, actor_timings = self.rollout_actor.rollout(
                self.unwrapped_policy, self.iteration, blocks, lambda r: self.prompt_indices(group_size, r)
            )
            for key, value in actor_timings.items():
                self.timings[key] += value
        else:
            self.engine.keep_states_of_blocks = blocks  # the frozen blocks' output, kept while sampling
            rollout = self.engine.collect(
                generator=self.seeds.generator(self.iteration, "sampling", self.device),
                seed=self.seeds.seed(self.iteration, "env"),
                prompt_indices=self.prompt_indices(group_size),
            )
        self.timings["generation_seconds"] += rollout.generation_seconds
        self.timings["env_seconds"] += rollout.env_seconds
        with self.timer("forward_seconds"):
            rollout.trunk = self.frozen_trunk(rollout, blocks)
        self.shared_trunk_blocks = 0 if rollout.trunk is None else rollout.trunk.blocks
        self.num_timesteps += int(self.processes.gather(rollout.lengths.float()).sum())
        self.num_episodes += rollout.num_sequences * self.accelerator.num_processes
        if self.rollout_actor is not None:  # the learner's log-probs, and the stale tokens' importance weights
            self.off_policy_stats = correct_for_staleness(self, rollout, same_weights)
        return rollout

    def shareable_trunk_blocks(self) -> int:
        """How many of the policy's lower blocks the next rollout's forwards can share (:mod:`agents.lm.frozen_trunk`):
        0 when the whole policy trains, the reference's frozen blocks differ from the policy's (compared again
        whenever a frozen weight of either has been written to), the model failed the exactness check on the first
        rollout, or ``experimental.share_frozen_trunk`` turned the path off."""
        if not self.config.experimental.share_frozen_trunk or self._trunk_exact is False:
            return 0
        blocks = frozen_leading_blocks(self.unwrapped_policy)
        if blocks == 0 or self.reference is None:
            return blocks
        return blocks if self.frozen_blocks_match("reference", self.reference, blocks) else 0

    def completions_per_prompt(self) -> int:
        """Rows of a rollout that share one prompt (GRPO/RLOO: ``num_generations``)."""
        return 1

    def execution_plan(self) -> ExecutionPlan:
        """What the trainer trains, shares and runs, and why a faster path does not apply
        (:mod:`agents.lm.execution_plan`); logged as one line when training starts."""
        cfg, policy = self.config, self.unwrapped_policy
        blocks = frozen_leading_blocks(policy)
        allowed = cfg.experimental.share_frozen_trunk
        differs = bool(blocks and allowed and self.reference is not None
                       and not self.frozen_blocks_match("reference", self.reference, blocks))
        if cfg.lora is not None:
            trains = adapter_part(policy, cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules, cfg.adapter_blocks())
        else:
            trains = trained_part(policy, cfg.trainable_blocks)
        return ExecutionPlan((
            trains,
            frozen_trunk_part(policy, blocks, allowed, differs, self._trunk_exact),
            prompt_forward_part(cfg.experimental.share_prompt_forward, self.shareable_trunk_blocks(),
                                self.completions_per_prompt()),
            reference_part(self.reference_needs(), adapter=self.adapter is not None),
            rollouts_part(cfg.async_rollouts, cfg.importance_sampling_cap),
        ))

    def frozen_blocks_match(self, name: str, model: Any, blocks: int) -> bool:
        """Whether ``model``'s (called ``name``) input embeddings and first ``blocks`` blocks hold exactly the
        policy's weights; compared again only after a write to a weight of either (their version counters)."""
        policy = self.unwrapped_policy
        versions = (blocks, frozen_versions(policy, blocks), frozen_versions(model, blocks))
        if self._trunk_verified.get(name) == versions:
            return True
        if not same_frozen_blocks(policy, model, blocks):
            return False
        self._trunk_verified[name] = versions
        return True

    def frozen_trunk(self, rollout: Rollout, blocks: int) -> TrunkStates | None:
        """The output of the policy's first ``blocks`` (frozen) blocks over the rollout's sequences, for the
        reference and every minibatch: the states the rollout engine kept while sampling, or (where it could not,
        e.g. in multi-turn episodes) one forward of those blocks. ``None`` when ``blocks`` is 0 or the first
        rollout's exactness check fails."""
        if blocks == 0:
            return None
        trunk = rollout.trunk
        if trunk is None:
            with self.accelerator.autocast():
                trunk = trunk_states(self.unwrapped_policy, rollout.input_ids, rollout.attention_mask,
                                     rollout.prompt_slots, blocks, self.config.experimental.share_prompt_forward)
        if self._trunk_exact is None:
            self._trunk_exact = self._trunk_matches_full_forward(rollout, trunk)
        return trunk if self._trunk_exact else None

    def _trunk_matches_full_forward(self, rollout: Rollout, trunk: TrunkStates) -> bool:
        """Whether the policy's log-probs of the rollout from ``trunk`` (its frozen blocks' output, kept while
        sampling or computed) equal the full forward's, under the accelerator's autocast, to 1e-4 relative (2e-2 in
        mixed or half precision); warn when not."""
        policy = self.unwrapped_policy
        tokens, mask = rollout.completion_ids, rollout.mask
        with torch.no_grad(), self.accelerator.autocast():
            full = masked_logprobs(completion_logits(policy, rollout).float(), tokens, mask)
            top = masked_logprobs(completion_logits(policy, rollout, prompt_model=policy, trunk=trunk).float(),
                                  tokens, mask)
        float32 = next(policy.parameters()).dtype == torch.float32 and self.accelerator.mixed_precision == "no"
        difference = matches_full_forward(full, top, mask, 1e-4 if float32 else 2e-2)
        if difference is not None:
            warn_caller(
                f"frozen trunk: {type(policy).__name__}'s log-probs from its frozen blocks' output differ from "
                f"the full forward's by up to {difference:.3g} (its forward changes inputs_embeds, e.g. by adding "
                "position embeddings); every forward runs the whole model instead"
            )
        return difference is None

    @torch.no_grad()
    def reference_logprobs(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of the completion tokens under the frozen reference, from one forward pass: at the sampling
        temperature with the env's token mask (for the KL), and untempered over the whole vocabulary (for the
        completions' perplexity under the reference). Both ``(N, T)``, 0 outside the mask.

        Runs under the accelerator's autocast, like the policy (``accelerate``'s ``prepare`` patches the policy's
        forward, not the reference copy's): with ``mixed_precision="bf16"`` both read the same bf16 numerics, so
        the KL of the untouched policy stays ~0 instead of measuring the bf16-vs-fp32 gap."""
        share = self.config.experimental.share_prompt_forward or rollout.trunk is not None
        prompt_model = self.reference if share else None
        with self.accelerator.autocast():
            logits = completion_logits(self.reference, rollout, prompt_model=prompt_model, trunk=rollout.trunk).float()
        tokens, mask = rollout.completion_ids, rollout.mask
        natural = masked_logprobs(logits, tokens, mask)
        temperature, allowed = self.config.temperature, self.engine.allowed
        if temperature == 1.0 and allowed is None:
            return natural, natural
        tempered = masked_logprobs(filter_logits(logits, temperature, allowed=allowed), tokens, mask)
        return tempered, natural

    def add_reference_fluency(self, rollout: Rollout, ref_natural: torch.Tensor | None) -> None:
        """Add ``reference_fluency_weight`` times each completion's mean log-prob per token under the reference
        (``ref_natural``, from :meth:`reference_logprobs`) to its score, and keep the unweighted value as the
        ``reference_fluency`` part of the reward. Nothing when the weight is 0.

        The tokens are the ones the policy wrote, less the EOS that ended a terminated completion: the ``fluency``
        plugin's quantity (it scores the completion's text, which leaves special tokens out), read without
        re-tokenising. Where the sampled ids are not the text's own tokenisation the two differ."""
        weight = self.config.reference_fluency_weight
        if weight == 0:
            return
        if ref_natural is None:
            raise RuntimeError("reference_fluency_weight > 0 needs the reference's log-probs")
        mask = rollout.mask.clone()
        ended = rollout.terminated.nonzero()[:, 0]
        mask[ended, last_token_index(mask)[ended]] = 0.0
        fluency = (ref_natural * mask).sum(1) / mask.sum(1).clamp(min=1)  # an empty completion scores 0
        rollout.scores = rollout.scores + weight * fluency
        rollout.reward_components["reference_fluency"] = fluency

    def policy_logprobs(self, model: Any, rollout: Rollout, with_entropy: bool = False) -> tuple[torch.Tensor, Any]:
        """Log-probs ``(N, T)`` of the rollout's tokens under ``model`` (the trained, possibly DDP-wrapped policy),
        tempered and masked as when sampling; also the per-token entropy when ``with_entropy``."""
        from agents.lm.core import entropy_of

        # the prompt forward bypasses the DDP wrapper: one DDP forward per backward, whatever the prompts
        share = self.config.experimental.share_prompt_forward or rollout.trunk is not None
        prompt_model = self.accelerator.unwrap_model(model) if share else None
        logits = completion_logits(
            model, rollout, self.config.temperature, prompt_model=prompt_model, trunk=rollout.trunk
        ).float()
        logits = masked_logits(logits, self.engine.allowed)
        logprobs = masked_logprobs(logits, rollout.completion_ids, rollout.mask)
        return logprobs, (entropy_of(logits) if with_entropy else None)

    # -- optimisation ------------------------------------------------------------------------------------------
    def minibatches(self, num_rows: int, epoch: int) -> Iterator[torch.Tensor]:
        """Row indices of each minibatch of one epoch, in an order drawn from the iteration's seed."""
        rng = self.seeds.rng(self.iteration, f"epoch{epoch}")
        order = torch.as_tensor(rng.permutation(num_rows), device=self.device)
        yield from order.chunk(self.config.num_minibatches)

    def optimizer_step(
        self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, models: dict[str, Any]
    ) -> dict[str, float]:
        """Backward, global gradient-norm clipping of each model (``{metric name: model}``), step. Returns each
        model's gradient norm before clipping."""
        optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self.lr_schedule.before_step(optimizer)
        norms = {}
        for name, model in models.items():
            parameters = [p for p in model.parameters() if p.grad is not None]
            if not parameters:
                continue
            if self.config.max_grad_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.max_grad_norm)
            else:
                norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters]))
            norms[name] = float(norm)
        optimizer.step()
        self.lr_schedule.after_step()
        return norms

    @contextlib.contextmanager
    def timer(self, key: str) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timings[key] += time.perf_counter() - started

    # -- the loop ----------------------------------------------------------------------------------------------
    def iteration_step(self) -> dict[str, float]:
        """One iteration of the algorithm: collect rollouts, update. Returns its metrics."""
        raise NotImplementedError

    def train(
        self,
        iterations: int | None = None,
        *,
        max_seconds: float | None = None,
        callbacks: Callback | list[Callback] | None = None,
    ) -> list[dict[str, float]]:
        """Run up to ``iterations`` more iterations (continuing from a loaded checkpoint) and at most
        ``max_seconds`` of wall time (no iteration starts after it), until a callback stops the run; return the
        iterations' metrics. One of ``iterations`` and ``max_seconds`` is needed."""
        if iterations is None and max_seconds is None:
            raise ValueError("train() needs iterations, max_seconds, or both")
        if iterations is not None and (
            isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0
        ):
            raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
        stop_at = None if iterations is None else self.iteration + iterations
        self.lr_schedule.plan_iterations(stop_at)
        return self._loop(lambda: stop_at is None or self.iteration < stop_at, iterations, max_seconds, callbacks)

    def learn(
        self,
        total_timesteps: int,
        *,
        max_seconds: float | None = None,
        callbacks: Callback | list[Callback] | None = None,
    ) -> list[dict[str, float]]:
        """Train until ``num_timesteps`` (completion tokens generated, all processes) reaches ``total_timesteps``
        (SB3's convention: a resumed run continues towards the same total), or ``max_seconds`` or a callback
        stops it."""
        if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int) or total_timesteps < 0:
            raise ValueError(f"total_timesteps must be an int >= 0, got {total_timesteps!r}")
        self.lr_schedule.plan_timesteps(total_timesteps)
        return self._loop(lambda: self.num_timesteps < total_timesteps, None, max_seconds, callbacks)

    def _loop(
        self, keep_going: Any, total: int | None, max_seconds: float | None, callbacks: Any
    ) -> list[dict[str, float]]:
        with actor_for_loop(self):  # async_rollouts: the actor process lives for this loop
            return self._run_loop(keep_going, total, max_seconds, callbacks)

    def _run_loop(
        self, keep_going: Any, total: int | None, max_seconds: float | None, callbacks: Any
    ) -> list[dict[str, float]]:
        if max_seconds is not None and not max_seconds >= 0:
            raise ValueError(f"max_seconds must be a number >= 0, got {max_seconds!r}")
        user = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
        logger = self._make_logger(total)
        callback = CallbackList([*user, logger, *self._checkpoint_schedule()])
        started = time.monotonic()
        history: list[dict[str, float]] = []
        if self.accelerator.is_main_process:
            plan = self.execution_plan().line()
            PLAN_LOG.info(plan)
            logger.log_plan(plan)
        callback.on_train_begin(self)
        try:
            while keep_going() and (max_seconds is None or time.monotonic() - started < max_seconds):
                history.append(self._run_iteration())
                if callback.on_iteration_end(self, history[-1]):
                    break
            callback.on_train_end(self)
        finally:
            logger.close()
        return history

    def _checkpoint_schedule(self) -> list[Callback]:
        """The config's checkpoint schedule, when there is an ``output_dir`` to write to."""
        cfg = self.config
        if cfg.output_dir is None:
            return []
        return [CheckpointSchedule(cfg.save_every, cfg.save_every_minutes, cfg.save_at_end)]

    def _run_iteration(self) -> dict[str, float]:
        self.timings = defaultdict(float)
        self.off_policy_stats = {}
        started = time.perf_counter()
        self.lr_schedule.start_iteration(self.num_timesteps)
        metrics = self.iteration_step()
        self.iteration += 1
        elapsed = time.perf_counter() - started
        metrics = {"iteration": float(self.iteration), **metrics}
        metrics["timesteps"] = float(self.num_timesteps)
        metrics["iteration_seconds"] = elapsed
        metrics["learning_rate"] = float(self.optimizer.param_groups[0]["lr"])  # the policy's, at the last step
        for key, value in sorted(self.timings.items()):
            metrics[key] = value
        metrics.update(self.off_policy_stats)  # async_rollouts: the importance weights' statistics
        metrics["tokens_per_second"] = metrics.get("batch_tokens", 0.0) / max(elapsed, 1e-9)
        return metrics

    def _make_logger(self, total: int | None) -> MetricsLogger:
        return MetricsLogger(
            self.config.output_dir,
            enabled=self.accelerator.is_main_process,
            progress_bar=self.config.progress_bar,
            total=total,
        )

    def rollout_metrics(
        self, rollout: Rollout, ref_natural: torch.Tensor | None, kl: torch.Tensor | None
    ) -> dict[str, float]:
        """The per-iteration metrics every agent logs, over all processes."""
        scores = self.processes.gather(rollout.scores)
        lengths = self.processes.gather(rollout.lengths.float())
        truncated = self.processes.gather(rollout.truncated.float())
        tokens = float(lengths.sum())
        metrics = {
            "reward_mean": float(scores.mean()),
            "reward_std": float(scores.std()) if scores.numel() > 1 else 0.0,
            "response_length": float(lengths.mean()),
            "truncated_fraction": float(truncated.mean()),
            "batch_tokens": tokens,
            "generation_tokens_per_second": float(rollout.num_tokens) / max(rollout.generation_seconds, 1e-9),
        }
        for name, values in sorted(rollout.reward_components.items()):  # each part of a composite reward, unweighted
            metrics[f"reward_{name}_mean"] = float(self.processes.gather(values).mean())
        entropy_sum, count = masked_sum_count(rollout.entropy, rollout.mask, self.accelerator)
        metrics["entropy"] = float(entropy_sum / count.clamp(min=1))
        if ref_natural is not None:
            nll_sum, count = masked_sum_count(-ref_natural, rollout.mask, self.accelerator)
            metrics["ref_perplexity"] = float(torch.exp(nll_sum / count.clamp(min=1)))
        else:
            metrics["ref_perplexity"] = float("nan")
        metrics["kl"] = float(self.processes.gather(kl.sum(1)).mean()) if kl is not None else float("nan")
        return metrics

    # -- checkpoints -------------------------------------------------------------------------------------------
    def checkpoint_models(self) -> dict[str, Any]:
        """Name -> model (unwrapped) saved in the checkpoint, or its LoRA adapter; subclasses add theirs."""
        models = {POLICY_DIR: self.unwrapped_policy if self.adapter is None else self.adapter}
        if self.behaviour_weights is not None and self.behaviour_weights.round == self.iteration:
            models[BEHAVIOUR_DIR] = self.behaviour_weights  # async_rollouts: the next round's sampling weights
        return models

    def checkpoint_state(self) -> dict[str, Any]:
        """JSON-able trainer state; subclasses add theirs."""
        return {"iteration": self.iteration, "num_timesteps": self.num_timesteps, "num_episodes": self.num_episodes,
                "lr_schedule": self.lr_schedule.state_dict()}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.num_timesteps = int(state["num_timesteps"])
        self.num_episodes = int(state["num_episodes"])
        if "lr_schedule" in state:  # a checkpoint without one ran at a constant rate
            self.lr_schedule.load_state_dict(state["lr_schedule"])

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def save_checkpoint(self, output_dir: str | Path | None = None) -> Path:
        """Write ``<output_dir>/checkpoint`` atomically (main process; every process waits for it)."""
        output_dir = output_dir or self.config.output_dir
        if output_dir is None:
            raise ValueError("save_checkpoint needs an output_dir (argument or config.output_dir)")
        path = None
        if self.accelerator.is_main_process:
            path = write_atomically(
                output_dir,
                lambda directory: write_trainer_checkpoint(
                    directory,
                    models=self.checkpoint_models(),
                    optimizers=self.optimizers(),
                    state=self.checkpoint_state(),
                    config_json=self.config.to_json(),
                    tokenizer=self.task.tokenizer,
                ),
            )
        self.accelerator.wait_for_everyone()
        return path or Path(output_dir) / CHECKPOINT_DIR

    def load_checkpoint(self, path: str | Path | None = None) -> bool:
        """Restore weights, optimiser, RNG and trainer state from a checkpoint (or an output_dir holding one).
        Returns False when there is none. Build the trainer with the same env, model and config first: the
        frozen reference is the policy as passed to the constructor."""
        path = path or self.config.output_dir
        found = find_checkpoint(path) if path is not None else None
        if found is None:
            return False
        self._warn_config_differences(read_saved_config(found))
        self.behaviour_weights = None
        state = read_trainer_checkpoint(found, models=self.checkpoint_models(), optimizers=self.optimizers())
        self.load_checkpoint_state(state)
        if self.config.async_rollouts:  # the weights the checkpoint's next round is sampled with
            self.behaviour_weights = read_behaviour_weights(found, self.unwrapped_policy, self.iteration)
        return True

    def _warn_config_differences(self, saved: dict[str, Any]) -> None:
        move_study_fields(saved, type(self.config).__name__)  # a checkpoint from before they moved
        current = self.config.to_dict()
        ignored = {"output_dir", "save_every", "save_every_minutes", "save_at_end", "progress_bar"}
        changed = sorted(k for k in current if k not in ignored
                         and json.dumps(saved.get(k), sort_keys=True) != json.dumps(current[k], sort_keys=True))
        if changed:
            warn_caller(f"resuming with a config that differs from the checkpoint's in {changed}")

    def close(self) -> None:
        """Close the environments and, under ``accelerate launch``, leave the process group cleanly.

        Every process waits for the others first, so no rank tears down its gloo/NCCL sockets while another
        is still communicating (exiting without this can abort with "terminate called without an active
        exception").
        """
        self.env.close()
        self.accelerator.wait_for_everyone()  # a no-op in a single process
        # DDP wrappers keep the process group alive (their reducer holds it): drop them, and accelerate's own
        # references, while the interpreter is fully alive, so gloo's threads are not torn down at exit
        for name in self.prepared_models:
            setattr(self, name, self.accelerator.unwrap_model(getattr(self, name)))
        self.accelerator.free_memory()  # forgets the prepared models and runs the garbage collector
        self.accelerator.end_training()  # destroy_process_group

