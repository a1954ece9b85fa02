"""Ray RLlib's PPO (new API stack) learns MossWords-v0 on two local EnvRunner actors (``agents.rllib``).

The tests marked ``rllib`` need the ``rllib`` extra and start Ray (a few seconds); they are outside the default suite:
``make test-rllib`` installs the extra in its own venv and runs them. The unmarked test checks the message without
the extra.

MossWords-v0: a uniformly random policy scores 0.031 (tests/test_sb3_learning.py checks it). The learning test runs
``ITERATIONS`` PPO updates of 512 steps (2 runners x 2 envs x 128 steps, ``textenv_ppo_config``'s defaults, the
settings SB3's PPO gets from ``make_sb3``) and asserts that the first update's episodes score like random play and
the last update's beat random by ``MARGIN``. The budget and margin come from the ``rllib-2`` curves of
experiments/rllib_vs_sb3 (seeds 0-2): at 8192 steps the 100-episode mean was 0.09-0.13 there.
"""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch

import textenv  # noqa: F401

RANDOM_MEAN = 0.031
ITERATIONS = 16
MARGIN = 0.04
HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.mark.skipif(HAS_RAY, reason="the rllib extra is installed")
def test_without_the_extra_a_name_says_what_to_install():
    import agents.rllib

    with pytest.raises(ImportError, match=r"pip install 'textenv\[rllib\]'"):
        agents.rllib.textenv_ppo_config  # noqa: B018


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    from agents.rllib import init_local_ray

    init_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.mark.rllib
def test_ppo_learns_moss_words_on_two_env_runners(local_ray):
    from agents.rllib import textenv_ppo_config

    algo = textenv_ppo_config("MossWords-v0", num_env_runners=2, num_envs_per_env_runner=2, seed=0).build_algo()
    try:
        runners = algo.env_runner_group
        # the two EnvRunner actors hold the envs (2 each); the driver's own runner, if any, has none to sample from
        assert runners.num_healthy_remote_workers() == 2
        assert runners.foreach_env_runner(lambda runner: runner.num_envs, local_env_runner=False) == [2, 2]
        assert runners.local_env_runner is None or runners.local_env_runner.env is None
        returns, steps = [], 0
        for _ in range(ITERATIONS):
            result = algo.train()["env_runners"]
            returns.append(result["episode_return_mean"])
            steps = result["num_env_steps_sampled_lifetime"]
    finally:
        algo.stop()
    assert steps >= ITERATIONS * 512
    assert returns[0] < RANDOM_MEAN + 0.03, returns  # it starts out no better than random ...
    assert returns[-1] > RANDOM_MEAN + MARGIN, np.round(returns, 3).tolist()  # ... and learns


@pytest.mark.rllib
def test_module_reads_tokens_not_padding():
    """The module's logits and value depend on the valid tokens only: rewriting the padded slots changes nothing,
    changing a prompt token changes the logits."""
    pytest.importorskip("ray")
    from agents.rllib import TokenRLModule, token_model_config

    env = gym.make("MossWords-v0")
    module = TokenRLModule(
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config=token_model_config("MossWords-v0"),
    )
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(int(env.action_space.sample()))
    batch = {key: torch.as_tensor(value)[None] for key, value in obs.items()}
    padded = batch["attention_mask"] == 0
    assert padded.any()
    repadded = {**batch, "input_ids": batch["input_ids"].masked_fill(padded, 7)}
    out, out_repadded = (module.forward_train({"obs": b}) for b in (batch, repadded))
    torch.testing.assert_close(out["action_dist_inputs"], out_repadded["action_dist_inputs"])
    torch.testing.assert_close(module.compute_values({"obs": batch}), module.compute_values({"obs": repadded}))
    first_valid = int(torch.nonzero(~padded[0])[0])
    changed = batch["input_ids"].clone()
    changed[0, first_valid] = (changed[0, first_valid] + 1) % env.action_space.n
    out_changed = module.forward_train({"obs": {**batch, "input_ids": changed}})
    assert not torch.allclose(out_changed["action_dist_inputs"], out["action_dist_inputs"])


@pytest.mark.rllib
def test_register_textenv_refuses_an_unknown_id():
    pytest.importorskip("ray")
    from agents.rllib import register_textenv

    with pytest.raises(ValueError, match=r"env_id='CartPole-v1' is not a textenv id"):
        register_textenv("CartPole-v1")


@pytest.mark.rllib
def test_learner_standardises_advantages_over_the_rows_the_loss_counts(monkeypatch):
    """RLlib's loss gets each minibatch's advantages with mean 0 and std 1 over the unmasked rows, whatever the
    masked bootstrap rows hold."""
    pytest.importorskip("ray")
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
    from ray.rllib.core.columns import Columns
    from ray.rllib.evaluation.postprocessing import Postprocessing

    from agents.rllib import MaskedAdvantagePPOLearner

    seen = {}
    monkeypatch.setattr(PPOTorchLearner, "compute_loss_for_module", lambda self, **kwargs: seen.update(kwargs))
    mask = torch.tensor([True, True, True, True, False] * 4)
    advantages = torch.where(mask, torch.arange(20.0) / 10, torch.full((20,), -50.0))
    batch = {Postprocessing.ADVANTAGES: advantages, Columns.LOSS_MASK: mask}
    learner = object.__new__(MaskedAdvantagePPOLearner)  # the method reads only its arguments
    learner.compute_loss_for_module(module_id="default_policy", config=None, batch=batch, fwd_out={})
    real = seen["batch"][Postprocessing.ADVANTAGES][mask]
    torch.testing.assert_close(real.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(real.std(), torch.tensor(1.0), atol=1e-6, rtol=0)
    # the real rows keep their order and spacing: an affine map of the originals
    torch.testing.assert_close(real, (advantages[mask] - advantages[mask].mean()) / advantages[mask].std())
