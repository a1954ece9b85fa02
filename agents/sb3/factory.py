"""``make_sb3``: a ready stable-baselines3 / sb3-contrib agent for a textenv env in one call.

Every algorithm gets :class:`agents.sb3.features.TokenFeaturesExtractor` through explicit ``policy_kwargs``
and the policy class for the env's observation space: ``MultiInputPolicy`` (``MultiInputLstmPolicy`` for
RecurrentPPO) for textenv's ``Dict`` observation, ``MlpPolicy`` (``MlpLstmPolicy``) for the flat ``Box`` of
:class:`agents.sb3.wrappers.FlattenTokenObservation`.

An env id is built into a monitored SB3 ``VecEnv`` by :func:`make_sb3_env`: by default (``vec_env="native"``)
textenv's batched :class:`textenv.vector_env.TextGenerationVectorEnv` through the
:class:`agents.sb3.native_vec_env.SB3TextVecEnv` adapter, one numpy step and one reward call for all envs; with
``vec_env="sb3"``, SB3's ``make_vec_env`` (``n_envs`` single envs in a ``DummyVecEnv``, each in a ``Monitor``).
Both give the same episodes for the same seed; ``benchmarks/sb3_throughput.py`` measures both.

Which combinations SB3 itself cannot do (checked against stable-baselines3 / sb3-contrib 2.9): all seven
algorithms here accept ``Dict`` observations (each has a ``MultiInput*`` policy). What does not work with a
``Dict`` is listed in :data:`DICT_LIMITATIONS`; :func:`make_sb3` flattens the observation for those settings
(:class:`agents.sb3.wrappers.FlattenTokenObservation` for a ``gym.Env``,
:class:`agents.sb3.vec_wrappers.FlattenTokenVecObservation` for a ``VecEnv``).
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from agents.sb3.features import TokenFeaturesExtractor
from agents.sb3.ppo_settings import PPO_HYPERPARAMS
from agents.sb3.wrappers import FlattenTokenObservation

#: how :func:`make_sb3_env` vectorises an env id: textenv's native vector env, or SB3's ``make_vec_env``
VEC_ENVS = ("native", "sb3")

ALGORITHMS: dict[str, tuple[str, str]] = {
    # name -> (module, class)
    "ppo": ("stable_baselines3", "PPO"),
    "a2c": ("stable_baselines3", "A2C"),
    "dqn": ("stable_baselines3", "DQN"),
    "qrdqn": ("sb3_contrib", "QRDQN"),
    "trpo": ("sb3_contrib", "TRPO"),
    "maskable_ppo": ("sb3_contrib", "MaskablePPO"),
    "recurrent_ppo": ("sb3_contrib", "RecurrentPPO"),
}

#: Settings SB3 cannot run with a ``Dict`` observation, and why. ``make_sb3`` flattens for these.
DICT_LIMITATIONS: dict[str, str] = {
    "dqn": "optimize_memory_usage=True: DictReplayBuffer asserts it is off (SB3 2.9 buffers.py)",
    "qrdqn": "optimize_memory_usage=True: QR-DQN uses SB3's DictReplayBuffer, which asserts it is off",
}

#: Hyperparameters for textenv's short, sparse-reward episodes (every one can be overridden in ``make_sb3``).
#: Chosen on MossWords-v0 (4-token completions, reward only at the end): short rollouts so updates come
#: often, gamma 1 (the episode is a few steps and only the last reward matters), and an entropy bonus for
#: the policy-gradient methods so they keep exploring a vocabulary of hundreds of actions.
_PPO = PPO_HYPERPARAMS  # agents/sb3/ppo_settings.py, shared with agents.rllib
_DQN = dict(
    learning_rate=1e-3,
    buffer_size=20_000,
    learning_starts=500,
    batch_size=64,
    gamma=0.9,
    train_freq=1,
    target_update_interval=500,
    exploration_fraction=0.1,
    exploration_final_eps=0.05,
    # The observation shows how many completion slots are filled, so the token budget is part of the state and
    # its end is a real end (Pardo et al., 2018, "Time Limits in RL"): do not bootstrap past it. With
    # bootstrapping, the max over hundreds of untrained Q-values at the never-acted-in final observation
    # swamps the reward and DQN does not learn MossWords-v0 at all.
    replay_buffer_kwargs=dict(handle_timeout_termination=False),
)
DEFAULT_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": _PPO,
    "maskable_ppo": _PPO,
    "recurrent_ppo": _PPO,
    # A2C's RMSprop steps are large: 5e-3 learns on all of seeds 0-4; larger rates can collapse a seed onto
    # <eos> (1-step episodes, reward 0) for good.
    "a2c": dict(n_steps=32, learning_rate=5e-3, gamma=1.0, gae_lambda=0.95, ent_coef=0.01),
    # TRPO's step is bounded by target_kl: the default 0.01 moves a 398-way policy too little per update here.
    "trpo": dict(
        n_steps=64, batch_size=256, n_critic_updates=5, learning_rate=3e-3, gamma=1.0, gae_lambda=0.95, target_kl=0.15
    ),
    "dqn": _DQN,
    # QR-DQN's output layer is n_quantiles times wider than DQN's: one gradient step per 4 vector steps
    # learns as much per second.
    "qrdqn": {**_DQN, "train_freq": 4},
}


#: PPO on MossText-v0 through :class:`agents.sb3.TopKVecEnvWrapper` (top 8 of SmolLM2-135M-Instruct, 32 envs):
#: one scalar reward per 24-token episode, so no GAE discounting of the credit (gae_lambda 1), large batches,
#: and a candidate scorer shared by the 8 ranks on top of SmolLM2's frozen input embeddings.
#: Measured in examples/train_sb3.py and tests/test_sb3_moss_text.py (slow).
TOP_K_PPO_HYPERPARAMS: dict[str, Any] = dict(
    n_steps=32, batch_size=256, n_epochs=4, learning_rate=1e-3, gamma=1.0, gae_lambda=1.0, ent_coef=0.01
)
TOP_K_FEATURES: dict[str, Any] = dict(freeze_embeddings=True, candidate_scores=4)


def algorithm_class(algo: str) -> type[BaseAlgorithm]:
    """The SB3 / sb3-contrib class behind an algorithm name of :data:`ALGORITHMS`."""
    import importlib

    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r}; expected one of {sorted(ALGORITHMS)}")
    module, name = ALGORITHMS[algo]
    return getattr(importlib.import_module(module), name)


def needs_flat_observations(algo: str, algo_kwargs: dict[str, Any]) -> bool:
    """Whether ``algo`` with these keyword arguments cannot take a ``Dict`` observation (see DICT_LIMITATIONS)."""
    return algo in DICT_LIMITATIONS and bool(algo_kwargs.get("optimize_memory_usage", False))


def default_policy_kwargs(algo: str, env: gym.Env | VecEnv, **extractor_kwargs: Any) -> dict[str, Any]:
    """Explicit ``policy_kwargs``: the token features extractor (mean pooling, prompt and completion pooled
    apart) and small heads. ``extractor_kwargs`` override :class:`TokenFeaturesExtractor`'s arguments."""
    features = {"embed_dim": 64, "pooling": "mean", "max_prompt_tokens": _max_prompt_tokens(env)}
    layout = _token_layout(env)
    if layout is not None:
        features["layout"] = layout
    features.update(extractor_kwargs)
    kwargs: dict[str, Any] = {"features_extractor_class": TokenFeaturesExtractor, "features_extractor_kwargs": features}
    if algo in ("dqn", "qrdqn"):
        kwargs["net_arch"] = [128]
    else:
        kwargs["net_arch"] = dict(pi=[128], vf=[128])
    if algo == "qrdqn":
        kwargs["n_quantiles"] = 8  # the default 200 makes a 200 * vocab output layer: 25x slower, no better here
    if algo == "recurrent_ppo":
        kwargs["lstm_hidden_size"] = 64
    return kwargs


def make_sb3_env(
    env_id: str,
    n_envs: int = 1,
    *,
    seed: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    vec_env: str = "native",
    flatten: bool = False,
) -> VecEnv:
    """A monitored SB3 ``VecEnv`` of ``n_envs`` episodes of ``env_id`` at a time.

    Every finished episode's info carries SB3's ``info["episode"]`` (``r``, ``l``, ``t``), which fills the
    algorithm's ``ep_info_buffer`` (``rollout/ep_rew_mean``) and the training-run curve.

    Args:
        env_id: a textenv id (``gym.make_vec`` / ``gym.make`` builds it with ``env_kwargs``).
        n_envs: episodes stepped together.
        seed: env ``i`` draws its prompts from ``seed + i`` (either path), from the first ``reset()``.
        env_kwargs: the env's keyword arguments.
        vec_env: ``"native"``: :class:`textenv.vector_env.TextGenerationVectorEnv` (``SAME_STEP`` autoreset)
            through :class:`agents.sb3.native_vec_env.SB3TextVecEnv`, in ``VecMonitor``. ``"sb3"``: SB3's
            ``make_vec_env`` (a ``DummyVecEnv`` of single envs, each in ``Monitor``).
        flatten: observations as one flat ``Box`` (:class:`agents.sb3.vec_wrappers.FlattenTokenVecObservation`
            on the native env, :class:`agents.sb3.wrappers.FlattenTokenObservation` on each single env).
    """
    if vec_env == "sb3":
        # SB3's make_vec_env asks an env id for render_mode="rgb_array" unless told otherwise; training renders nothing.
        return make_vec_env(
            env_id,
            n_envs=n_envs,
            seed=seed,
            env_kwargs={"render_mode": None, **(env_kwargs or {})},
            wrapper_class=FlattenTokenObservation if flatten else None,
        )
    if vec_env != "native":
        raise ValueError(f"vec_env={vec_env!r}; expected one of {list(VEC_ENVS)}")
    from agents.sb3.native_vec_env import make_sb3_vec_env

    venv: VecEnv = VecMonitor(make_sb3_vec_env(env_id, num_envs=n_envs, seed=seed, **(env_kwargs or {})))
    if flatten:
        from agents.sb3.vec_wrappers import FlattenTokenVecObservation

        venv = FlattenTokenVecObservation(venv)
    return venv


def make_sb3(
    algo: str,
    env: str | gym.Env | VecEnv,
    *,
    policy_kwargs: dict[str, Any] | None = None,
    features_extractor_kwargs: dict[str, Any] | None = None,
    n_envs: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    vec_env: str = "native",
    flatten: bool | None = None,
    seed: int | None = None,
    verbose: int = 0,
    **algo_kwargs: Any,
) -> BaseAlgorithm:
    """Build an SB3 / sb3-contrib agent for a textenv env.

    Args:
        algo: ``"ppo"``, ``"a2c"``, ``"dqn"``, ``"qrdqn"``, ``"trpo"``, ``"maskable_ppo"`` or ``"recurrent_ppo"``.
        env: an env id (built by :func:`make_sb3_env` with ``n_envs``, ``env_kwargs``, ``vec_env``), a
            ``gym.Env`` or an SB3 ``VecEnv``, with textenv's observations (optionally wrapped, e.g. by
            ``TopKActionWrapper``).
        policy_kwargs: the policy's keyword arguments; default :func:`default_policy_kwargs`. Given
            explicitly, they are used as they are.
        features_extractor_kwargs: overrides for the default features extractor's arguments (ignored when
            ``policy_kwargs`` is given).
        n_envs, env_kwargs: how to build an env given by id.
        vec_env: how to vectorise an env given by id: ``"native"`` (default, textenv's batched vector env) or
            ``"sb3"`` (SB3's ``make_vec_env``); see :func:`make_sb3_env`.
        flatten: flatten the ``Dict`` observation into a ``Box``. ``None`` (default): only when the setting
            cannot take a ``Dict`` (:data:`DICT_LIMITATIONS`).
        seed, verbose: passed to the algorithm (and, for an env id, to the env).
        **algo_kwargs: the algorithm's arguments; they override :data:`DEFAULT_HYPERPARAMS`.
    """
    cls = algorithm_class(algo)
    hyperparams = {**copy.deepcopy(DEFAULT_HYPERPARAMS[algo]), **algo_kwargs}
    if flatten is None:
        flatten = needs_flat_observations(algo, hyperparams) and _is_dict_env(env)
    if isinstance(env, str):
        env = make_sb3_env(env, n_envs, seed=seed, env_kwargs=env_kwargs, vec_env=vec_env, flatten=flatten)
    elif flatten and _is_dict_env(env):
        if isinstance(env, VecEnv):
            from agents.sb3.vec_wrappers import FlattenTokenVecObservation

            env = FlattenTokenVecObservation(env)
        else:
            env = FlattenTokenObservation(env)
    if isinstance(env.observation_space, spaces.Dict):
        policy = "MultiInputLstmPolicy" if algo == "recurrent_ppo" else "MultiInputPolicy"
    else:
        policy = "MlpLstmPolicy" if algo == "recurrent_ppo" else "MlpPolicy"
    if policy_kwargs is None:
        policy_kwargs = default_policy_kwargs(algo, env, **(features_extractor_kwargs or {}))
    return cls(policy, env, policy_kwargs=policy_kwargs, seed=seed, verbose=verbose, **hyperparams)


#: the algorithms :func:`make_top_k_sb3` gives :data:`TOP_K_PPO_HYPERPARAMS`
PPO_FAMILY = ("ppo", "maskable_ppo", "recurrent_ppo")


def make_top_k_sb3(
    algo: str,
    env: str | VecEnv,
    reference_lm: str,
    *,
    k: int = 8,
    n_envs: int = 32,
    env_kwargs: dict[str, Any] | None = None,
    vec_env: str = "native",
    seed: int | None = None,
    **algo_kwargs: Any,
) -> BaseAlgorithm:
    """The measured MossText-v0 recipe: the env wrapped in :class:`agents.sb3.TopKVecEnvWrapper` (action ``i`` =
    the ``i``-th most likely next token under ``reference_lm``), a features extractor whose token embeddings start
    from ``reference_lm``'s and stay frozen (:data:`TOP_K_FEATURES`), and, for the PPO family,
    :data:`TOP_K_PPO_HYPERPARAMS`. ``algo_kwargs`` override those hyperparameters.

    Args:
        algo: a name of :data:`ALGORITHMS`.
        env: an env id (built by :func:`make_sb3_env` with ``n_envs``, ``env_kwargs``, ``vec_env`` and ``seed``),
            or an SB3 ``VecEnv`` of a textenv env, not yet wrapped (e.g. ``make_sb3_env("MossText-v0", 32)``).
        reference_lm: the reference LM's name or directory (its tokenizer must be the env's).
        k: candidates per step.
        n_envs, env_kwargs, vec_env: how to build an env given by id.
        seed: the agent's seed (and the env's, for an env id).
    """
    from agents.sb3.vec_wrappers import TopKVecEnvWrapper

    if isinstance(env, str):
        env = make_sb3_env(env, n_envs, seed=seed, env_kwargs=env_kwargs, vec_env=vec_env)
    wrapped = TopKVecEnvWrapper(env, reference_lm, k=k)
    hyperparams = {**(TOP_K_PPO_HYPERPARAMS if algo in PPO_FAMILY else {}), **algo_kwargs}
    features = {"embedding_init": reference_lm, **TOP_K_FEATURES}
    return make_sb3(algo, wrapped, seed=seed, features_extractor_kwargs=features, **hyperparams)


def _is_dict_env(env: Any) -> bool:
    if isinstance(env, str):
        return True  # a textenv id
    return isinstance(env.observation_space, spaces.Dict)


def _max_prompt_tokens(env: Any) -> int | None:
    try:
        task = env.get_attr("task", indices=[0])[0] if isinstance(env, VecEnv) else env.unwrapped.task
        return int(task.max_prompt_tokens)
    except (AttributeError, IndexError, TypeError):
        return None


def _token_layout(env: Any) -> dict[str, int] | None:
    if isinstance(env.observation_space, spaces.Dict):
        return None
    try:
        if isinstance(env, VecEnv):
            # a VecEnvWrapper (FlattenTokenVecObservation) holds it, else the single envs of a DummyVecEnv do
            layout = getattr(env, "token_layout", None)
            return layout if layout is not None else env.get_attr("token_layout", indices=[0])[0]
        return env.get_wrapper_attr("token_layout")
    except AttributeError:
        raise ValueError(
            f"a flat observation space ({env.observation_space}) needs agents.sb3.FlattenTokenObservation's "
            "token_layout to split it; wrap the textenv env in FlattenTokenObservation"
        ) from None
