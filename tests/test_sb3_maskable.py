"""MaskablePPO never takes a masked action: with the nucleus masks (single envs, and the batched VecEnv
wrapper on the native vector env and on make_vec_env's) and with the top-k wrapper's top-p masks, in training
and in deterministic prediction."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("sb3_contrib")

from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper  # noqa: E402

import textenv  # noqa: E402,F401
from agents.sb3 import (  # noqa: E402
    NucleusMaskVecEnvWrapper,
    NucleusMaskWrapper,
    TopKActionWrapper,
    make_sb3,
    make_sb3_env,
)
from textenv.models import load_causal_lm  # noqa: E402

PPO_KWARGS = dict(n_steps=32, batch_size=32, n_epochs=1)
EXTRACTOR = dict(embed_dim=16)


@pytest.fixture(scope="module")
def lm():
    return load_causal_lm("tiny-random-smollm2", seed=0).eval()


class MaskAudit(gym.Wrapper):
    """Checks every action against the masks the env offers at that moment."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps = self.violations = self.restricted = 0

    def step(self, action):
        mask = self.env.get_wrapper_attr("action_masks")()
        self.steps += 1
        self.restricted += int(not mask.all())
        self.violations += int(not mask[int(action)])
        return self.env.step(action)


class VecMaskAudit(VecEnvWrapper):
    def __init__(self, venv) -> None:
        super().__init__(venv)
        self.steps = self.violations = self.restricted = 0

    def step_async(self, actions):
        masks = np.stack(self.venv.env_method("action_masks"))
        self.steps += len(actions)
        self.restricted += int((~masks.all(axis=1)).sum())
        self.violations += int((~masks[np.arange(len(actions)), actions]).sum())
        self.venv.step_async(actions)

    def step_wait(self):
        return self.venv.step_wait()

    def reset(self):
        return self.venv.reset()


def moss():
    return gym.make("MossText-v0", max_new_tokens=4)


def test_maskable_ppo_never_takes_a_masked_action_nucleus(lm):
    audits = []

    def make():
        audits.append(MaskAudit(NucleusMaskWrapper(moss(), lm, top_p=0.3)))
        return audits[-1]

    model = make_sb3(
        "maskable_ppo", DummyVecEnv([make, make]), seed=0, features_extractor_kwargs=EXTRACTOR, **PPO_KWARGS
    )
    model.learn(128)
    steps = sum(a.steps for a in audits)
    assert steps >= 128
    assert sum(a.restricted for a in audits) == steps  # every step had masked actions to avoid ...
    assert sum(a.violations for a in audits) == 0  # ... and none was taken

    env = audits[0]
    obs, _ = env.reset(seed=1)
    for _ in range(4):
        mask = env.get_wrapper_attr("action_masks")()
        action, _ = model.predict(obs, action_masks=mask, deterministic=True)
        assert mask[int(action)]
        obs, *_ = env.step(action)


@pytest.mark.parametrize("vec_env", ["native", "sb3"])
def test_maskable_ppo_with_batched_nucleus_masks(lm, vec_env):
    envs = make_sb3_env("MossText-v0", 3, seed=0, env_kwargs={"max_new_tokens": 4}, vec_env=vec_env)
    venv = VecMaskAudit(NucleusMaskVecEnvWrapper(envs, lm, top_p=0.3))
    model = make_sb3("maskable_ppo", venv, seed=0, features_extractor_kwargs=EXTRACTOR, **PPO_KWARGS)
    model.learn(96)
    assert venv.steps >= 96 and venv.restricted == venv.steps and venv.violations == 0


def test_maskable_ppo_with_top_k_top_p_masks(lm):
    audits = []

    def make():
        # a near-random LM spreads its mass over all 49152 tokens: a 1e-4 nucleus is ~5 of them
        audits.append(MaskAudit(TopKActionWrapper(moss(), lm, k=8, top_p=1e-4)))
        return audits[-1]

    model = make_sb3("maskable_ppo", DummyVecEnv([make]), seed=0, features_extractor_kwargs=EXTRACTOR, **PPO_KWARGS)
    model.learn(64)
    audit = audits[0]
    assert audit.steps >= 64 and audit.restricted > audit.steps // 2 and audit.violations == 0
