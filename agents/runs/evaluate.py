"""Held-out evaluation of a trained run: reward statistics, cross-sample diversity of the completions
(:mod:`agents.runs.diversity`: does the policy write one template for every prompt?), and for LM agents KL and
perplexity.

LM agents (``lm-ppo``, ``grpo``, ``rloo``): the checkpoint's policy samples one completion per prompt and
sample through the run's env (with the held-out prompts); the KL to the reference (the run's initial model)
is ``sum_t [log pi(y_t) - log ref(y_t)]`` over each sampled completion, a Monte-Carlo estimate of
``KL(pi || ref)`` per sequence; perplexity is ``exp(-mean log ref(y_t))`` over all completion tokens.
SB3 agents act through the same env; KL is not defined for them (their policy is not an LM).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from agents.runs.diversity import diversity_metrics
from agents.runs.runner import LM_AGENTS, load_spec

#: ``prompts="split:test"``: the held-out split of an env that has one (its own questions or game seeds)
SPLIT_PREFIX = "split:"


def _stats(values: list[float]) -> dict[str, float]:
    x = np.asarray(values, dtype=float)
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}


def evaluate(
    run_dir: str | os.PathLike,
    prompts: Any,
    samples_per_prompt: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    *,
    reward: Any = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Evaluate the latest checkpoint of ``run_dir`` on ``prompts``: any textenv prompt source, or ``"split:test"``
    (``split:NAME``) for an env with its own splits (``textenv/ReasoningGym-v0``, ``textenv/TextArena-v0``): every
    prompt of that split once per sample, with its reference (the verifiable reward reads its entry from it).

    ``run_dir`` is data: ``reward`` replaces its reward and ``trust_remote_code`` allows remote code it asks for
    (:func:`agents.runs.untrusted.check_untrusted_spec`). A damaged latest checkpoint raises
    :class:`agents.checkpoint.DamagedCheckpointError` naming the file.
    """
    from agents.checkpoint import check_checkpoint, latest_checkpoint
    from agents.runs.untrusted import check_untrusted_spec
    from textenv.prompts import load_prompts

    run_dir = Path(run_dir)
    if latest_checkpoint(run_dir) is None and latest_checkpoint(run_dir.parent) is not None:
        run_dir = run_dir.parent  # given the checkpoint directory itself
    spec = check_untrusted_spec(
        load_spec(run_dir), f"{str(run_dir / 'run.json')!r}", reward=reward, trust_remote_code=trust_remote_code
    )
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint in {str(run_dir)!r}")
    check_checkpoint(checkpoint)
    if isinstance(prompts, str) and prompts.startswith(SPLIT_PREFIX):
        env_kwargs = {**spec.full_env_kwargs(), "split": _split_name(spec.env, prompts)}
        episodes = _split_size(spec.env, env_kwargs) * samples_per_prompt
    else:
        texts = [p.text for p in load_prompts(prompts)] * samples_per_prompt
        env_kwargs, episodes = {**spec.full_env_kwargs(), "prompts": texts}, len(texts)
    if spec.agent in LM_AGENTS:
        result = _evaluate_lm(spec, checkpoint, env_kwargs, episodes, seed, batch_size, trust_remote_code)
    else:
        result = _evaluate_sb3(spec, checkpoint, env_kwargs, episodes, seed)
    return {"agent": spec.agent, "env": spec.env, "checkpoint": str(checkpoint), "episodes": episodes, **result}


def _split_name(env_id: str, prompts: str) -> str:
    """The split ``split:NAME`` names, checked against the env's settings."""
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    entry_point = gym.spec(env_id).entry_point
    env_class = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    if not hasattr(getattr(env_class, "settings_class", None), "split"):
        raise ValueError(
            f"{prompts!r}: env {env_id!r} has no splits; give a prompt file, or use an env with a train/test split "
            "(textenv/ReasoningGym-v0, textenv/TextArena-v0)"
        )
    return prompts[len(SPLIT_PREFIX):]


def _split_size(env_id: str, env_kwargs: dict[str, Any]) -> int:
    """How many prompts (questions, game seeds) the env's split holds: the held-out episodes, one each."""
    import gymnasium as gym

    env = gym.make(env_id, **env_kwargs)
    try:
        return len(env.unwrapped.task.prompts)
    finally:
        env.close()


def _evaluate_lm(
    spec: Any,
    checkpoint: Path,
    env_kwargs: dict[str, Any],
    episodes: int,
    seed: int,
    batch_size: int,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    import gymnasium as gym
    import torch
    from transformers import AutoModelForCausalLM

    from agents.lm.rollout import RolloutEngine, sequence_logprobs
    from textenv.models import from_pretrained, load_causal_lm
    from textenv.registration import ENV_IDS

    policy = from_pretrained(
        AutoModelForCausalLM, checkpoint / "policy", use_safetensors=True, trust_remote_code=trust_remote_code
    ).eval()
    base_model = spec.model or env_kwargs.get("tokenizer") or ENV_IDS[spec.env][0]["tokenizer"]
    reference = load_causal_lm(base_model, seed=spec.seed, trust_remote_code=trust_remote_code).eval()
    generator = torch.Generator().manual_seed(seed)
    rewards, kls, completions, ref_logprob_sum, tokens = [], [], [], 0.0, 0
    components: dict[str, list[float]] = {}
    for start in range(0, episodes, batch_size):
        rows = min(batch_size, episodes - start)
        env = gym.make_vec(
            spec.env, num_envs=rows, vectorization_mode="vector_entry_point",
            autoreset_mode=gym.vector.AutoresetMode.DISABLED, **env_kwargs,
        )
        indices = np.arange(start, start + rows) % len(env.unwrapped.task.prompts)  # samples repeat the prompts
        rollout = RolloutEngine(env, policy).collect(generator, prompt_indices=indices)
        with torch.no_grad():
            policy_lp = sequence_logprobs(policy, rollout)
            reference_lp = sequence_logprobs(reference, rollout)
        rewards += rollout.scores.tolist()
        for name, values in rollout.reward_components.items():
            components.setdefault(name, []).extend(values.tolist())
        completions += rollout.completions
        kls += ((policy_lp - reference_lp) * rollout.mask).sum(1).tolist()
        ref_logprob_sum += float((reference_lp * rollout.mask).sum())
        tokens += rollout.num_tokens
        env.close()
    return {
        "reward": _stats(rewards),
        "reward_components": {name: float(np.mean(values)) for name, values in components.items()},
        "kl_to_reference": _stats(kls),
        "perplexity_under_reference": math.exp(-ref_logprob_sum / max(tokens, 1)),
        "diversity": diversity_metrics(completions),
    }


def _evaluate_sb3(spec: Any, checkpoint: Path, env_kwargs: dict[str, Any], episodes: int, seed: int) -> dict[str, Any]:
    from safetensors.torch import load_model

    from agents.runs.runner import _SB3Run, build_sb3

    model = build_sb3(spec, seed, env_kwargs)
    load_model(model.policy, checkpoint / _SB3Run.WEIGHTS)
    env = model.get_env()
    rewards: list[float] = []
    completions: list[str] = []
    obs = env.reset()
    state, starts = None, np.ones(env.num_envs, dtype=bool)
    masked = spec.agent == "maskable_ppo"
    while len(rewards) < episodes:
        extra = {"action_masks": np.stack(env.env_method("action_masks"))} if masked else {}
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=False, **extra)
        obs, reward, dones, infos = env.step(action)
        starts = dones
        rewards += [float(r) for r, d in zip(reward, dones) if d]
        completions += [str(info.get("completion", "")) for info, d in zip(infos, dones) if d]
    return {
        "reward": _stats(rewards[:episodes]),
        "kl_to_reference": None,
        "perplexity_under_reference": None,
        "diversity": diversity_metrics(completions[:episodes]),
    }
