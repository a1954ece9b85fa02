"""LM agents that fine-tune a causal LM by acting in a textenv vector env, one token per step.

* :class:`LMPPOTrainer` / :class:`LMPPOConfig` -- LM-PPO with the MOSS-RLHF "PPO-max" details.
* :class:`GRPOTrainer` / :class:`GRPOConfig` and :class:`RLOOTrainer` / :class:`RLOOConfig` -- group-baseline agents
  (k completions per prompt, no value model) on the same rollout engine.

Every trainer takes an env id (or a textenv vector env with ``autoreset_mode=DISABLED``), a policy model (name,
directory or transformers causal LM) and its config, and offers ``train(iterations, max_seconds=..., callbacks=...)``,
``learn(total_timesteps)``, ``save_checkpoint()`` and ``load_checkpoint()``; :class:`Callback` subclasses run after
every iteration and can stop the run. Runs data-parallel under ``accelerate launch``. ``config.lora``
(:class:`LoRASettings`) trains a LoRA adapter instead of the policy's weights (:mod:`agents.lm.lora`).
"""

from agents.lm.base import LMTrainer
from agents.lm.callbacks import Callback, CheckpointSchedule
from agents.lm.config import GRPOConfig, LMAgentConfig, LMPPOConfig, RLOOConfig
from agents.lm.group import GRPOTrainer, RLOOTrainer
from agents.lm.lora import LoRASettings
from agents.lm.ppo import LMPPOTrainer
from agents.lm.rollout import Rollout, RolloutEngine, sequence_logprobs
from agents.lm.value_model import ValueModel

__all__ = [
    "Callback",
    "CheckpointSchedule",
    "GRPOConfig",
    "GRPOTrainer",
    "LMAgentConfig",
    "LMPPOConfig",
    "LMPPOTrainer",
    "LMTrainer",
    "LoRASettings",
    "RLOOConfig",
    "RLOOTrainer",
    "Rollout",
    "RolloutEngine",
    "ValueModel",
    "sequence_logprobs",
]
