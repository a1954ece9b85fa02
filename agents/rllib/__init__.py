"""Ray RLlib (new API stack) on textenv: textenv ids trained by RLlib's PPO on many EnvRunners, one machine or a
cluster (docs/rllib.md).

* :func:`textenv_ppo_config` -- a ready ``PPOConfig`` for a textenv id (:mod:`~agents.rllib.config`).
* :class:`TokenRLModule` -- the token-embedding ``RLModule`` it trains (:mod:`~agents.rllib.module`).
* :class:`MaskedAdvantagePPOLearner` -- RLlib's PPO learner with SB3's advantage normalisation
  (:mod:`~agents.rllib.learner`).
* :func:`register_textenv` / :func:`make_textenv` -- a textenv id as an RLlib env on every worker
  (:mod:`~agents.rllib.env`).
* :func:`init_local_ray` -- ``ray.init`` for one machine, no dashboard, no usage statistics
  (:mod:`~agents.rllib.local_ray`).

Names are imported on first use: ``import agents.rllib`` does not import Ray. Without Ray, using a name fails with
one line naming the extra to install (``pip install 'textenv[rllib]'``).
"""

from __future__ import annotations

from agents._lazy import lazy_exports

_EXPORTS = {
    "textenv_ppo_config": "agents.rllib.config",
    "token_model_config": "agents.rllib.config",
    "PPO_TRAINING": "agents.rllib.config",
    "ROLLOUT_STEPS_PER_ENV": "agents.rllib.config",
    "TokenRLModule": "agents.rllib.module",
    "DEFAULT_MODEL_CONFIG": "agents.rllib.module",
    "MaskedAdvantagePPOLearner": "agents.rllib.learner",
    "register_textenv": "agents.rllib.env",
    "make_textenv": "agents.rllib.env",
    "init_local_ray": "agents.rllib.local_ray",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("agents.rllib", _EXPORTS, requires=("ray.rllib", "rllib"))
