"""``textenv_ppo_config``: an RLlib ``PPOConfig`` (new API stack) for a textenv id in one call.

It registers the id with RLlib (:func:`agents.rllib.env.register_textenv`), plugs in
:class:`agents.rllib.module.TokenRLModule` with the env's prompt width, samples with textenv's batched vector env on
each EnvRunner, and sets :data:`PPO_TRAINING`: the hyperparameters :func:`agents.sb3.make_sb3` gives SB3's PPO,
in RLlib's names, with SB3's advantage normalisation (:class:`agents.rllib.learner.MaskedAdvantagePPOLearner`).
The result is a plain ``PPOConfig``: change anything with its own methods before ``build_algo()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from agents.rllib.env import register_textenv
from agents.rllib.learner import MaskedAdvantagePPOLearner
from agents.rllib.module import TokenRLModule
from agents.sb3.ppo_settings import PPO_HYPERPARAMS as SB3_PPO

#: SB3 PPO's settings in ``make_sb3`` (:data:`agents.sb3.ppo_settings.PPO_HYPERPARAMS`) in RLlib's names, and SB3's
#: own PPO defaults where RLlib's differ: clip 0.2, value-loss weight 0.5, gradient norm 0.5, no KL penalty.
PPO_TRAINING: dict[str, Any] = dict(
    lr=SB3_PPO["learning_rate"],
    gamma=SB3_PPO["gamma"],
    lambda_=SB3_PPO["gae_lambda"],
    entropy_coeff=SB3_PPO["ent_coef"],
    num_epochs=SB3_PPO["n_epochs"],
    minibatch_size=SB3_PPO["batch_size"],
    clip_param=0.2,
    vf_loss_coeff=0.5,
    grad_clip=0.5,
    use_kl_loss=False,
)
#: steps each env runs between updates (SB3's ``n_steps``): one update per ``ROLLOUT_STEPS_PER_ENV`` x all envs
ROLLOUT_STEPS_PER_ENV: int = SB3_PPO["n_steps"]


def token_model_config(env_id: str, env_kwargs: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """``TokenRLModule``'s ``model_config`` for ``env_id``: its ``max_prompt_tokens`` (read from one env built with
    ``env_kwargs``, so the prompt and the completion are pooled apart), then ``overrides`` (``embed_dim``,
    ``hidden``)."""
    env = gym.make(env_id, **dict(env_kwargs or {}))
    try:
        task = getattr(env.unwrapped, "task", None)
        max_prompt_tokens = getattr(task, "max_prompt_tokens", None)
    finally:
        env.close()
    return {"max_prompt_tokens": max_prompt_tokens, **overrides}


def textenv_ppo_config(
    env_id: str,
    *,
    num_env_runners: int = 2,
    num_envs_per_env_runner: int = 2,
    env_kwargs: Mapping[str, Any] | None = None,
    model_config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    **training: Any,
) -> PPOConfig:
    """An RLlib ``PPOConfig`` that trains :class:`~agents.rllib.module.TokenRLModule` on ``env_id``.

    Args:
        env_id: a textenv id (``textenv.ENV_IDS``), e.g. ``"MossWords-v0"``.
        num_env_runners: EnvRunner actors sampling in parallel (Ray processes, on any node of the cluster; 0 samples
            in the driver).
        num_envs_per_env_runner: episodes each EnvRunner steps together, in one textenv vector env.
        env_kwargs: the env's keyword arguments (RLlib's ``env_config``), as in ``gym.make(env_id, **env_kwargs)``.
        model_config: ``TokenRLModule`` settings over :func:`token_model_config`'s (``embed_dim``, ``hidden``,
            ``max_prompt_tokens``).
        seed: seeds the learner's torch and every EnvRunner (RLlib adds the runner's index), hence the envs'
            first reset.
        **training: ``PPOConfig.training`` arguments over :data:`PPO_TRAINING`. ``train_batch_size_per_learner``
            defaults to :data:`ROLLOUT_STEPS_PER_ENV` x all envs.

    The learner is :class:`~agents.rllib.learner.MaskedAdvantagePPOLearner`; ``.learners(learner_class=
    PPOTorchLearner)`` on the result gives RLlib's own advantage standardisation back.
    """
    if num_env_runners < 0 or num_envs_per_env_runner < 1:
        raise ValueError(
            f"num_env_runners={num_env_runners!r}, num_envs_per_env_runner={num_envs_per_env_runner!r}: expected "
            "num_env_runners >= 0 and num_envs_per_env_runner >= 1"
        )
    register_textenv(env_id)
    env_config = dict(env_kwargs or {})
    module = token_model_config(env_id, env_config, **dict(model_config or {}))
    all_envs = max(num_env_runners, 1) * num_envs_per_env_runner
    settings = {"train_batch_size_per_learner": ROLLOUT_STEPS_PER_ENV * all_envs, **PPO_TRAINING, **training}
    return (
        PPOConfig()
        .environment(env_id, env_config=env_config)
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=num_envs_per_env_runner,
            gym_env_vectorize_mode="vector_entry_point",
        )
        .rl_module(rl_module_spec=RLModuleSpec(module_class=TokenRLModule, model_config=module))
        .learners(learner_class=MaskedAdvantagePPOLearner)
        .training(**settings)
        .debugging(seed=seed)
    )
