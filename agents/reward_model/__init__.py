"""Reward models learned from preference pairs (Bradley-Terry), the way MOSS-RLHF and TRL train them.

* :class:`RewardModelConfig` -- every setting, with its source and default.
* :class:`RewardModelTrainer` / :func:`train_reward_model` -- training with a held-out split by prompt, early
  stopping on held-out pairwise accuracy, the shared-prompt forward; writes a directory that
  ``AutoModelForSequenceClassification.from_pretrained``, the ``reward_model`` reward plugin, LM-PPO's
  ``value_model_init`` and TRL's ``GRPOTrainer(reward_funcs=DIR)`` load.
* :func:`bradley_terry_loss` -- the loss (margin, label smoothing, reward centring).
* :func:`value_model_from_reward_model` -- the critic-from-RM initialisation.
"""

from agents.reward_model.config import DEFAULT_RM_MODEL, RewardModelConfig
from agents.reward_model.loss import bradley_terry_loss, pairwise_accuracy
from agents.reward_model.scoring import PairScorer, collate_pairs, encode_pair, load_reward_model
from agents.reward_model.trainer import RewardModelResult, RewardModelTrainer, train_reward_model
from agents.reward_model.value_init import value_model_from_reward_model

__all__ = [
    "DEFAULT_RM_MODEL",
    "PairScorer",
    "RewardModelConfig",
    "RewardModelResult",
    "RewardModelTrainer",
    "bradley_terry_loss",
    "collate_pairs",
    "encode_pair",
    "load_reward_model",
    "pairwise_accuracy",
    "train_reward_model",
    "value_model_from_reward_model",
]
