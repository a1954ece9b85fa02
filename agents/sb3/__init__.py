"""stable-baselines3 and sb3-contrib agents on textenv.

* :func:`make_sb3` -- a ready agent (``ppo``, ``a2c``, ``dqn``, ``qrdqn``, ``trpo``, ``maskable_ppo``,
  ``recurrent_ppo``) with the token features extractor; :func:`make_top_k_sb3` -- the same on the top-k
  action wrapper, with the measured MossText-v0 recipe; :func:`make_sb3_env` -- the monitored ``VecEnv``
  they train on (textenv's native vector env by default, SB3's ``make_vec_env`` with ``vec_env="sb3"``).
* :class:`SB3TextVecEnv` / :func:`make_sb3_vec_env` -- the native vector env under SB3's ``VecEnv`` API.
* :class:`TokenFeaturesExtractor` -- embeds token ids and pools them over the attention mask.
* :class:`TopKActionWrapper` / :class:`TopKVecEnvWrapper` -- action ``i`` = the ``i``-th most likely next
  token under a reference LM; :class:`NucleusMaskWrapper` / :class:`NucleusMaskVecEnvWrapper` -- top-p
  action masks for MaskablePPO; :class:`FlattenTokenObservation` / :class:`FlattenTokenVecObservation` -- the
  ``Dict`` observation as a flat ``Box``.

Names are imported on first use: ``import agents.sb3`` does not import stable-baselines3.
"""

from __future__ import annotations

from agents._lazy import lazy_exports

_EXPORTS = {
    "make_sb3": "agents.sb3.factory",
    "make_top_k_sb3": "agents.sb3.factory",
    "make_sb3_env": "agents.sb3.factory",
    "VEC_ENVS": "agents.sb3.factory",
    "SB3TextVecEnv": "agents.sb3.native_vec_env",
    "make_sb3_vec_env": "agents.sb3.native_vec_env",
    "default_policy_kwargs": "agents.sb3.factory",
    "ALGORITHMS": "agents.sb3.factory",
    "DEFAULT_HYPERPARAMS": "agents.sb3.factory",
    "DICT_LIMITATIONS": "agents.sb3.factory",
    "TokenFeaturesExtractor": "agents.sb3.features",
    "TopKActionWrapper": "agents.sb3.wrappers",
    "NucleusMaskWrapper": "agents.sb3.wrappers",
    "FlattenTokenObservation": "agents.sb3.wrappers",
    "TopKVecEnvWrapper": "agents.sb3.vec_wrappers",
    "NucleusMaskVecEnvWrapper": "agents.sb3.vec_wrappers",
    "FlattenTokenVecObservation": "agents.sb3.vec_wrappers",
    "ReferenceLM": "agents.sb3.reference_lm",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("agents.sb3", _EXPORTS)
