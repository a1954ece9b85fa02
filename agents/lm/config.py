"""Hyperparameters of the LM agents: one dataclass per trainer; every field documents itself in
``field(metadata={"help": ...})`` (what it does, its default and where that comes from).

Sources cited below:

* **MOSS-RLHF** -- OpenLMLab/MOSS-RLHF, ``config_ppo.py`` (argparse defaults), ``train_ppo_en.sh`` (the released
  English PPO-max run), ``accelerate_config.yaml`` and ``ppo/ppo_trainer.py``; and the paper "Secrets of RLHF in
  Large Language Models Part I: PPO" (Zheng et al., 2023, arXiv:2307.04964), whose PPO-max recipe is: reward
  normalisation and clipping, a token-level KL penalty to the SFT model, advantage normalisation, clipped value
  loss, global gradient clipping, a critic initialised from the reward model (and optionally pre-trained), and an
  optional pretraining-loss term (PPO-ptx).
* **Ziegler et al.** -- "Fine-Tuning Language Models from Human Preferences" (2019): the adaptive KL controller,
  with TRL's ``PPOConfig`` defaults (``init_kl_coef=0.2``, ``target=6``, ``horizon=10000``).
* **TRL** -- huggingface/trl ``GRPOConfig`` and ``RLOOConfig`` (names and defaults of the group-baseline agents).

Defaults that differ from the source say why next to them. Study switches (loss variants a study compared with the
default, and switches that turn off an exact speed path) are not fields here: they live in one
``experimental`` field, :class:`agents.lm.experimental.ExperimentalSettings`, with no stability promise. Whether
the exact speed paths run (the shared prompt forward, the frozen trunk) is the trainer's decision; it logs it as its
execution plan when training starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from agents.lm.experimental import ExperimentalSettings, move_study_fields
from agents.lm.lora import LoRASettings
from agents.lm.schedule import LR_SCHEDULES

REWARD_NORMALIZATIONS = ("normalize", "scale", "none")
GRPO_SCALE_REWARDS = ("group", "batch", "none")
GRPO_LOSS_TYPES = ("dapo", "grpo", "dr_grpo")


@dataclass
class LMAgentConfig:
    """Settings shared by every LM agent (rollouts, optimisation, logging, checkpoints)."""

    # -- run -------------------------------------------------------------------------------------------------
    seed: int = field(
        default=42,
        metadata={"help": "Seed of everything random in a run: prompt choice, sampling, minibatch order (MOSS-RLHF "
        "``--seed 42``). Each iteration derives its own generators from ``(seed, iteration, "
        "process)``, so a resumed run draws exactly what an uninterrupted one would."},
    )
    num_envs: int = field(
        default=32,
        metadata={"help": "Episodes decoded in lockstep per iteration and process, when the trainer builds the "
        "vector env from an id (a vector env passed in keeps its own ``num_envs``). MOSS-RLHF "
        "``--rollout_batch_size 32``."},
    )

    # -- sampling --------------------------------------------------------------------------------------------
    temperature: float = field(
        default=1.0,
        metadata={"help": "Sampling temperature. The same temperature divides the logits in every log-prob the loss "
        "uses (policy and reference), as TRL does, so the ratio and the KL are those of the "
        "distribution actually sampled. TRL ``GRPOConfig``/``RLOOConfig`` default 1.0 (MOSS-RLHF "
        "samples at 0.8 with top-p 0.9 but scores the samples under the untempered full "
        "distribution, an off-policy mismatch we avoid; top-p/top-k are not offered for that "
        "reason)."},
    )

    # -- optimisation ----------------------------------------------------------------------------------------
    learning_rate: float = field(
        default=1e-6,
        metadata={"help": "Policy AdamW learning rate (TRL ``GRPOConfig``/``RLOOConfig`` 1e-6; MOSS-RLHF uses 5e-7 "
        "for 7B models). Small models and short runs want far larger rates."},
    )
    lr_schedule: str = field(
        default="constant",
        metadata={"help": "Learning-rate schedule over the run's optimiser steps: ``\"constant\"``, or "
        "``\"linear\"`` decay to 0, TRL's default (``transformers.TrainingArguments.lr_scheduler_type="
        "\"linear\"``, ``get_linear_schedule_with_warmup`` with no warm-up): step ``n`` of ``N`` runs at "
        "``learning_rate * (1 - n / N)`` in every parameter group. ``N`` comes from "
        "``lr_decay_iterations``, else from the first ``train(iterations)`` / ``learn(total_timesteps)`` "
        "call (see :mod:`agents.lm.schedule`); checkpoints keep it. MOSS-RLHF and the constant default: "
        "no schedule."},
    )
    lr_decay_iterations: int | None = field(
        default=None,
        metadata={"help": "Length of the linear decay in iterations (``update_epochs * num_minibatches`` steps "
        "each); ``None``: the planned length of the run. Needed for ``\"linear\"`` with a wall-time "
        "budget alone (``train(max_seconds=...)``)."},
    )
    adam_betas: tuple[float, float] = field(
        default=(0.9, 0.95),
        metadata={"help": "AdamW betas (MOSS-RLHF ``--beta1 0.9 --beta2 0.95``)."},
    )
    adam_eps: float = field(
        default=1e-6,
        metadata={"help": "AdamW epsilon of the policy (MOSS-RLHF ``--eps 1e-6``)."},
    )
    weight_decay: float = field(
        default=0.0,
        metadata={"help": "AdamW weight decay (MOSS-RLHF sets 0.0 for every parameter group)."},
    )
    max_grad_norm: float | None = field(
        default=1.0,
        metadata={"help": "Global gradient-norm clipping, per trained model (MOSS-RLHF ``gradient_clipping: 1.0``). "
        "``None`` turns it off. MOSS clips policy and critic together; we clip each model's "
        "global norm on its own, so an early, large value loss gradient cannot shrink the policy "
        "step."},
    )
    update_epochs: int = field(
        default=1,
        metadata={"help": "Passes over each iteration's rollouts (MOSS-RLHF trains one pass over its replay buffer; "
        "TRL ``num_iterations`` 1)."},
    )
    num_minibatches: int = field(
        default=1,
        metadata={"help": "Optimiser steps per epoch; the rollouts of a process are split into this many "
        "minibatches."},
    )
    trainable_blocks: int | None = field(
        default=None,
        metadata={"help": "Train only the policy's top N transformer blocks and its final norm; its input embeddings, "
        "the blocks below and its LM head stay frozen (LM-PPO's value model, when it is a copy of the policy, "
        "trains the same blocks and its value head). The trainer then runs the frozen blocks once per rollout "
        "instead of in every forward (the execution plan it logs at the start of training says so). ``None``: "
        "every parameter of the model as passed trains (a model passed in with parameters frozen keeps them "
        "frozen): full fine-tuning, as TRL and MOSS-RLHF train. With ``lora``: the adapter goes into the top N blocks only "
        "(unless ``lora.blocks`` says so)."},
    )

    lora: LoRASettings | None = field(
        default=None,
        metadata={"help": "Train a LoRA adapter instead of the policy's weights (:mod:`agents.lm.lora`; needs "
        "``pip install 'textenv[lora]'``): ``true`` for the defaults, or the fields of "
        ":class:`~agents.lm.lora.LoRASettings` (``r``, ``alpha``, ``dropout``, ``target_modules``, ``blocks``). "
        "The optimiser holds the adapter only, the reference is the policy with its adapter switched off (no "
        "second copy), LM-PPO's value model gets its own adapter on the same base weights, and checkpoints hold "
        "the adapters (``textenv export`` merges one into a plain model). ``None``: no adapter."},
    )

    # -- logging and checkpoints -----------------------------------------------------------------------------
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where the CSV log (``progress.csv``), TensorBoard events (``tensorboard/``) and "
        "checkpoints (``checkpoint/``) go. ``None`` writes nothing."},
    )
    save_every: int = field(
        default=0,
        metadata={"help": "Write a checkpoint every this many iterations (0: only when :meth:`train` returns)."},
    )
    progress_bar: bool = field(
        default=True,
        metadata={"help": "Show a tqdm progress bar (main process only)."},
    )
    reference_metrics: bool = field(
        default=True,
        metadata={"help": "Run the frozen reference model every iteration even when no loss term needs it, to log "
        "the KL to the reference and the completions' perplexity under it. Turn off to save one "
        "forward pass per iteration when the KL coefficient is 0."},
    )
    reference_fluency_weight: float = field(
        default=0.0,
        metadata={"help": "Add this weight times each completion's mean log-probability per token under the frozen "
        "reference (untempered, whole vocabulary, over the tokens the policy wrote less the EOS that "
        "ended a completion; 0 for an empty completion) to its score, before any shaping or advantage. "
        "It is the ``fluency`` reward "
        "plugin, read from the reference forward the trainer runs anyway (the reference is the "
        "untuned policy) instead of from a second copy of the model run over the re-tokenised text: "
        "one whole-model forward per iteration less. Logged as ``reward_reference_fluency_mean``. "
        "0 (default): off."},
    )
    save_every_minutes: float = field(
        default=0.0,
        metadata={
            "help": "Also write a checkpoint once this many minutes of training have passed since the last one "
            "(0: no clock schedule). Needs output_dir."
        },
    )
    save_at_end: bool = field(
        default=True,
        metadata={
            "help": "Write a checkpoint when train()/learn() returns (unless the last iteration was just saved). "
            "Needs output_dir."
        },
    )

    # -- asynchronous actor-learner (agents/lm/async_rollouts.py) ---------------------------------------------
    async_rollouts: bool = field(
        default=False,
        metadata={"help": "Sample in an actor process while the learner updates: round n+1 is sampled with the "
        "weights the learner held at the start of round n (one round stale; the first round of a run is on-policy), "
        "the learner syncs its trained weights to the actor every round, and the loss reweights each token by the "
        "truncated importance weight ``min(pi_old / pi_behaviour, importance_sampling_cap)`` of the learner's "
        "policy before the update over the actor's (TRL's and NeMo-RL's truncated importance sampling). Two "
        "processes of one thread each (the learner is set to one thread while training); CPU only, one learner "
        "process (not under ``accelerate launch`` with several), on a platform that can fork. Deterministic given "
        "the seed: the round each sample comes from and the weights it is drawn with are fixed by the round "
        "number, never by timing."},
    )
    importance_sampling_cap: float = field(
        default=2.0,
        metadata={"help": "Upper bound C of the per-token importance weights under ``async_rollouts``: a token's "
        "weight is ``min(exp(log pi_old - log pi_behaviour), C)`` (TRL ``vllm_importance_sampling_cap``, "
        "``token_truncate``; NeMo-RL ``truncated_importance_sampling_ratio``; both default to 2.0). Must be >= 1."},
    )

    # -- study switches --------------------------------------------------------------------------------------
    experimental: ExperimentalSettings = field(
        default_factory=ExperimentalSettings,
        metadata={"help": "Study switches, no stability promise (:class:`agents.lm.experimental.ExperimentalSettings`"
        "; a dict of its fields is read as one): loss variants a study under ``experiments/`` compared with the "
        "default without changing it, and switches that turn off an exact speed path so that a benchmark can time "
        "it. Training needs none of them."},
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a ``ValueError`` naming the first bad field."""
        _check_int(self, "seed", minimum=0)
        _check_int(self, "num_envs", minimum=1)
        _check_positive(self, "temperature")
        _check_positive(self, "learning_rate")
        _check_choice(self, "lr_schedule", LR_SCHEDULES)
        if self.lr_decay_iterations is not None:
            _check_int(self, "lr_decay_iterations", minimum=1)
        _check_nonneg(self, "weight_decay")
        _check_positive(self, "adam_eps")
        betas = tuple(self.adam_betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"adam_betas={self.adam_betas!r}; expected two floats in [0, 1)")
        self.adam_betas = (float(betas[0]), float(betas[1]))
        if self.max_grad_norm is not None:
            _check_positive(self, "max_grad_norm")
        _check_int(self, "update_epochs", minimum=1)
        _check_int(self, "num_minibatches", minimum=1)
        _check_int(self, "save_every", minimum=0)
        if self.output_dir is not None and not isinstance(self.output_dir, str):
            self.output_dir = str(self.output_dir)
        _check_nonneg(self, "save_every_minutes")
        _check_nonneg(self, "reference_fluency_weight")
        if not isinstance(self.save_at_end, bool):
            raise ValueError(f"{type(self).__name__}.save_at_end={self.save_at_end!r}; expected True or False")
        if not isinstance(self.async_rollouts, bool):
            raise ValueError(f"{type(self).__name__}.async_rollouts={self.async_rollouts!r}; expected True or False")
        value = self.importance_sampling_cap
        if not _is_number(value) or value < 1:
            raise ValueError(f"{type(self).__name__}.importance_sampling_cap={value!r}; expected a finite number >= 1")
        if self.trainable_blocks is not None:
            _check_int(self, "trainable_blocks", minimum=0)
        owner = f"{type(self).__name__}.experimental"
        self.experimental = ExperimentalSettings.coerce(self.experimental, owner)
        self.experimental.validate(owner, tuple(c.__name__ for c in type(self).__mro__))
        self.lora = LoRASettings.coerce(self.lora, f"{type(self).__name__}.lora")
        if self.lora is not None and self.lora.dropout:
            raise ValueError(f"{type(self).__name__}.lora.dropout={self.lora.dropout!r}; the LM agents keep the "
                             "policy in eval mode (sampling and the loss must see the same function): expected 0")
        if (self.lora is not None and self.lora.blocks is not None and self.trainable_blocks is not None
                and self.lora.blocks != self.trainable_blocks):
            raise ValueError(f"{type(self).__name__}: lora.blocks={self.lora.blocks} and trainable_blocks="
                             f"{self.trainable_blocks} disagree; with lora, trainable_blocks says which top blocks get "
                             "the adapter: set one of them")

    def adapter_blocks(self) -> int | None:
        """The top blocks that get the LoRA adapter: ``lora.blocks``, else ``trainable_blocks`` (``None``: every
        block)."""
        if self.lora is None or self.lora.blocks is None:
            return self.trainable_blocks
        return self.lora.blocks

    def to_dict(self) -> dict[str, Any]:
        return {"config_class": type(self).__name__, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LMAgentConfig:
        values = dict(values)
        name = values.pop("config_class", cls.__name__)
        if name != cls.__name__:
            raise ValueError(f"config is a {name}, not a {cls.__name__}")
        move_study_fields(values, cls.__name__)  # a config saved when the study switches were top-level fields
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}")
        if "adam_betas" in values:
            values["adam_betas"] = tuple(values["adam_betas"])
        return cls(**values)


@dataclass
class LMPPOConfig(LMAgentConfig):
    """LM-PPO with the MOSS-RLHF "PPO-max" details; each detail can be switched off here."""

    num_envs: int = field(
        default=128,
        metadata={"help": "Episodes per iteration and process (MOSS-RLHF's replay buffer, ``--num_rollouts 128``, "
        "which it fills in rollout batches of 32; here they are decoded in one lockstep batch). "
        "Lower it on CPU."},
    )
    learning_rate: float = field(
        default=5e-7,
        metadata={"help": "Policy AdamW learning rate (MOSS-RLHF ``--lr 5e-7``, for 7B models: small models and toy "
        "tasks want far more)."},
    )
    num_minibatches: int = field(
        default=4,
        metadata={"help": "MOSS-RLHF: the 128-rollout buffer is trained in minibatches of ``--batch_size 32``, i.e. "
        "4."},
    )
    critic_learning_rate: float = field(
        default=1.5e-6,
        metadata={"help": "Value-model AdamW learning rate (MOSS-RLHF ``--critic_lr 15e-7``, 3x the policy's 5e-7)."},
    )
    critic_adam_eps: float = field(
        default=1e-8,
        metadata={"help": "AdamW epsilon of the value model (MOSS-RLHF builds the critic's parameter group with "
        "``eps=1e-8``)."},
    )

    # -- returns ---------------------------------------------------------------------------------------------
    gamma: float = field(
        default=1.0,
        metadata={"help": "Discount (MOSS-RLHF ``--gamma 1.``)."},
    )
    lam: float = field(
        default=0.95,
        metadata={"help": "GAE lambda (MOSS-RLHF ``--lam 0.95``)."},
    )

    # -- KL penalty to the frozen reference ------------------------------------------------------------------
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "Token-level KL penalty ``-kl_coef * (log pi - log pi_ref)`` added to every token's "
        "reward. 0.05 is the value the paper's KL-penalty study settles on for PPO-max; "
        "MOSS-RLHF's code defaults to 0.02 and its English script to 0.01. With ``adaptive_kl`` "
        "this is the initial coefficient. 0 turns the penalty off."},
    )
    adaptive_kl: bool = field(
        default=False,
        metadata={"help": "Adapt ``kl_coef`` towards ``kl_target`` with the proportional controller of Ziegler et "
        "al. (as in TRL). PPO-max uses a fixed coefficient."},
    )
    kl_target: float = field(
        default=6.0,
        metadata={"help": "Target KL (nats per completion) of the adaptive controller (Ziegler et al.; TRL "
        "``target=6``)."},
    )
    kl_horizon: int = field(
        default=10000,
        metadata={"help": "Horizon of the adaptive controller, in episodes (Ziegler et al.; TRL ``horizon=10000``)."},
    )

    # -- reward shaping --------------------------------------------------------------------------------------
    reward_normalization: str = field(
        default="normalize",
        metadata={"help": "Running-statistics treatment of the env's scores: ``\"normalize\"`` = ``(r - mean) / std`` "
        "(PPO-max, MOSS-RLHF ``--use_reward_norm``), ``\"scale\"`` = ``r / std`` (MOSS-RLHF "
        "``--use_reward_scaling`` alone, its English script), ``\"none\"``. Statistics run over "
        "every score seen so far, across processes."},
    )
    reward_clip: float | None = field(
        default=10.0,
        metadata={"help": "Clip the (normalised) score to ``[-reward_clip, reward_clip]`` (MOSS-RLHF "
        "``--reward_clip 10.``); ``None`` turns clipping off."},
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtracted from the score of a completion the env truncated (it never emitted EOS within "
        "``max_new_tokens``), before normalisation (TRL's ``missing_eos_penalty``). ``None``: no "
        "penalty. A truncated episode is otherwise treated as finished: textenv scores the "
        "truncated completion, so its return is complete and bootstrapping from the value at "
        "truncation would count the future twice."},
    )

    # -- advantages and losses -------------------------------------------------------------------------------
    whiten_advantages: bool = field(
        default=True,
        metadata={"help": "Normalise advantages to mean 0, std 1 over each minibatch's completion tokens, across "
        "processes (PPO-max; MOSS-RLHF ``--use_advantage_norm``)."},
    )
    advantage_clip: float | None = field(
        default=None,
        metadata={"help": "Clip the (whitened) advantages to ``[-advantage_clip, advantage_clip]``. MOSS-RLHF's "
        "value is 0.5 but its runs leave ``--use_advantage_clip`` off, so ``None`` (off)."},
    )
    clip_range: float = field(
        default=0.2,
        metadata={"help": "PPO ratio clip epsilon (MOSS-RLHF ``--pg_clip 0.2``)."},
    )
    clip_policy_loss: bool = field(
        default=True,
        metadata={"help": "Use the clipped surrogate; ``False`` gives the plain importance-weighted policy gradient "
        "(MOSS-RLHF ``--use_policy_loss_clip``)."},
    )
    clip_range_value: float = field(
        default=0.2,
        metadata={"help": "Value clip around the rollout's values (MOSS-RLHF ``--value_clip 0.2``)."},
    )
    clip_value_loss: bool = field(
        default=True,
        metadata={"help": "Use the clipped value loss ``max((V - R)^2, (V_clip - R)^2)`` (PPO-max; MOSS-RLHF "
        "``--use_critic_loss_clip``)."},
    )
    vf_coef: float = field(
        default=1.0,
        metadata={"help": "Value-loss weight; the loss is ``vf_coef * 0.5 * mean(...)`` (MOSS-RLHF "
        "``--vf_loss_weight 1.``)."},
    )
    entropy_coef: float = field(
        default=0.0,
        metadata={"help": "Entropy bonus weight: the loss subtracts ``entropy_coef * mean token entropy`` "
        "(MOSS-RLHF ``--entropy_loss_weight 0.``; MOSS's own form pulls the entropy towards 35 "
        "nats, we use the standard bonus)."},
    )
    critic_warmup_iterations: int = field(
        default=0,
        metadata={"help": "Iterations at the start of a run that train only the value model (the paper's critic "
        "pre-training; the released code has none, hence 0)."},
    )
    value_model_init: str = field(
        default="policy",
        metadata={"help": "Where the value model comes from when none is passed: ``\"policy\"`` = a copy of the "
        "policy's backbone with a zero-initialised scalar head; a path = a "
        "sequence-``classifier`` reward-model directory (PPO-max initialises the critic from the "
        "reward model)."},
    )

    # -- PPO-ptx ---------------------------------------------------------------------------------------------
    ptx_coef: float = field(
        default=0.0,
        metadata={"help": "Weight of the language-modelling loss on a pretraining corpus mixed into every policy "
        "step (PPO-ptx, Ouyang et al. 2022; MOSS-RLHF ``--ppo_pretrain_loss_weight 0.``). Needs "
        "``pretrain_corpus`` on the trainer."},
    )
    ptx_batch_size: int = field(
        default=4,
        metadata={"help": "Corpus sequences per minibatch when ``ptx_coef > 0`` (MOSS-RLHF "
        "``--ppo_pretrain_batch_size_ratio 1`` per rollout; we use a fixed count)."},
    )
    ptx_block_size: int = field(
        default=64,
        metadata={"help": "Tokens per pretraining sequence (the corpus is tokenised once and cut into blocks of "
        "this length)."},
    )

    def validate(self) -> None:
        super().validate()
        _check_positive(self, "critic_learning_rate")
        _check_positive(self, "critic_adam_eps")
        _check_unit(self, "gamma")
        _check_unit(self, "lam")
        _check_nonneg(self, "kl_coef")
        _check_positive(self, "kl_target")
        _check_int(self, "kl_horizon", minimum=1)
        _check_choice(self, "reward_normalization", REWARD_NORMALIZATIONS)
        if self.reward_clip is not None:
            _check_positive(self, "reward_clip")
        if self.missing_eos_penalty is not None:
            _check_nonneg(self, "missing_eos_penalty")
        if self.advantage_clip is not None:
            _check_positive(self, "advantage_clip")
        _check_positive(self, "clip_range")
        _check_positive(self, "clip_range_value")
        _check_nonneg(self, "vf_coef")
        _check_nonneg(self, "entropy_coef")
        _check_int(self, "critic_warmup_iterations", minimum=0)
        if not isinstance(self.value_model_init, str) or not self.value_model_init:
            raise ValueError(f"value_model_init={self.value_model_init!r}; expected 'policy' or a classifier directory")
        _check_nonneg(self, "ptx_coef")
        _check_int(self, "ptx_batch_size", minimum=1)
        _check_int(self, "ptx_block_size", minimum=2)


@dataclass
class GroupConfig(LMAgentConfig):
    """Settings GRPO and RLOO share: k completions per prompt, TRL's optimiser defaults, the ratio clip."""

    num_generations: int = field(
        default=2,
        metadata={"help": "Completions per prompt, k; ``num_envs`` must be a multiple of it."},
    )
    adam_betas: tuple[float, float] = field(
        default=(0.9, 0.999),
        metadata={"help": "AdamW betas (TRL trainers use ``transformers.TrainingArguments``' defaults)."},
    )
    adam_eps: float = field(
        default=1e-8,
        metadata={"help": "AdamW epsilon (``TrainingArguments`` default)."},
    )
    epsilon: float = field(
        default=0.2,
        metadata={"help": "Ratio clip epsilon (TRL ``epsilon=0.2``)."},
    )

    def validate(self) -> None:
        super().validate()
        _check_int(self, "num_generations", minimum=2)
        _check_positive(self, "epsilon")


@dataclass
class GRPOConfig(GroupConfig):
    """GRPO (Shao et al. 2024, DeepSeekMath): k completions per prompt, group-normalised rewards as the advantage of
    every token, no value model. Names and defaults follow TRL's ``GRPOConfig``."""

    num_generations: int = field(
        default=8,
        metadata={"help": "Completions per prompt, k (TRL ``num_generations=8``); ``num_envs`` must be a multiple "
        "of it."},
    )
    beta: float = field(
        default=0.0,
        metadata={"help": "Weight of the per-token KL estimate (k3) to the reference in the loss (TRL "
        "default 0.0; DeepSeekMath used 0.04)."},
    )
    epsilon_high: float | None = field(
        default=None,
        metadata={"help": "Upper clip epsilon (DAPO's 0.28); ``None`` = ``epsilon`` (TRL)."},
    )
    scale_rewards: str = field(
        default="group",
        metadata={"help": "Divide the centred rewards by the group's std (``\"group\"``, TRL default), the batch's "
        "(``\"batch\"``), or not at all (``\"none\"``, Dr. GRPO)."},
    )
    loss_type: str = field(
        default="dapo",
        metadata={"help": "Token-loss aggregation: ``\"dapo\"`` = sum over all completion tokens / their count (TRL "
        "default), ``\"grpo\"`` = per-sequence mean then batch mean, ``\"dr_grpo\"`` = sum / "
        "(sequences * max_new_tokens)."},
    )
    mask_truncated_completions: bool = field(
        default=False,
        metadata={"help": "Leave completions that never emitted EOS out of the loss (DAPO; TRL default False)."},
    )

    def validate(self) -> None:
        super().validate()
        _check_nonneg(self, "beta")
        if self.epsilon_high is not None:
            _check_positive(self, "epsilon_high")
        _check_choice(self, "scale_rewards", GRPO_SCALE_REWARDS)
        _check_choice(self, "loss_type", GRPO_LOSS_TYPES)


@dataclass
class RLOOConfig(GroupConfig):
    """RLOO (Ahmadian et al. 2024, "Back to Basics"): k completions per prompt, each baselined by the mean reward of
    the other k-1; the KL to the reference enters the reward at sequence level. Names and defaults follow TRL's
    ``RLOOConfig``."""

    num_generations: int = field(
        default=2,
        metadata={"help": "Completions per prompt, k (TRL ``num_generations=2``); ``num_envs`` must be a multiple "
        "of it."},
    )
    beta: float = field(
        default=0.05,
        metadata={"help": "Sequence-level KL coefficient: ``reward - beta * sum_t (log pi - log pi_ref)`` (TRL "
        "``beta=0.05``)."},
    )
    normalize_advantages: bool = field(
        default=False,
        metadata={"help": "Normalise the leave-one-out advantages over the batch (TRL default False)."},
    )
    reward_clip_range: tuple[float, float] | None = field(
        default=None,
        metadata={"help": "Clip scores to ``(min, max)`` before the baseline (TRL ``reward_clip_range``, default "
        "off)."},
    )

    def validate(self) -> None:
        super().validate()
        _check_nonneg(self, "beta")
        if self.reward_clip_range is not None:
            low, high = tuple(self.reward_clip_range)
            if not low < high:
                raise ValueError(f"reward_clip_range={self.reward_clip_range!r}; expected (min, max) with min < max")
            self.reward_clip_range = (float(low), float(high))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RLOOConfig:
        values = dict(values)
        if values.get("reward_clip_range") is not None:
            values["reward_clip_range"] = tuple(values["reward_clip_range"])
        return super().from_dict(values)  # type: ignore[return-value]


# -- field checks ----------------------------------------------------------------------------------------------
def _value(config: Any, name: str) -> Any:
    return getattr(config, name)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(config: Any, name: str, minimum: int) -> None:
    value = _value(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{type(config).__name__}.{name}={value!r}; expected an int >= {minimum}")


def _check_positive(config: Any, name: str) -> None:
    value = _value(config, name)
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{type(config).__name__}.{name}={value!r}; expected a finite number > 0")


def _check_nonneg(config: Any, name: str) -> None:
    value = _value(config, name)
    if not _is_number(value) or value < 0:
        raise ValueError(f"{type(config).__name__}.{name}={value!r}; expected a finite number >= 0")


def _check_unit(config: Any, name: str) -> None:
    value = _value(config, name)
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"{type(config).__name__}.{name}={value!r}; expected a number in [0, 1]")


def _check_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    value = _value(config, name)
    if value not in choices:
        raise ValueError(f"{type(config).__name__}.{name}={value!r}; expected one of {choices}")


__all__ = ["GRPOConfig", "GroupConfig", "LMAgentConfig", "LMPPOConfig", "RLOOConfig"]
