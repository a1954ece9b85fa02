"""The reference-LM wrappers: top-k actions and nucleus masks match a plain full forward of the reference LM.

The reference LM is ``tiny-random-smollm2`` (SmolLM2's tokenizer, so it fits MossText-v0). The wrappers keep
its KV cache across steps; the expected values here come from a fresh, uncached forward over each context.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

import textenv  # noqa: E402,F401  (registers the ids)
from agents.sb3 import (  # noqa: E402
    FlattenTokenObservation,
    NucleusMaskVecEnvWrapper,
    NucleusMaskWrapper,
    TopKActionWrapper,
    TopKVecEnvWrapper,
)
from textenv.models import load_causal_lm  # noqa: E402

K = 6


@pytest.fixture(scope="module")
def lm():
    return load_causal_lm("tiny-random-smollm2", seed=0).eval()


def moss(**kwargs) -> gym.Env:
    return gym.make("MossText-v0", **{"max_new_tokens": 5, **kwargs})


@torch.no_grad()
def full_logits(lm, input_ids: np.ndarray, attention_mask: np.ndarray) -> torch.Tensor:
    """Next-token logits of one context by a plain forward over its real tokens: no padding, no cache."""
    context = torch.as_tensor(input_ids[attention_mask.astype(bool)])[None]
    return lm(input_ids=context).logits[0, -1].float()


def assert_ranked_candidates(lm, obs: dict) -> None:
    """candidate_ids[i] is the reference LM's i-th most likely next token (ties within float noise allowed)."""
    logits = full_logits(lm, obs["input_ids"], obs["attention_mask"])
    top = torch.topk(logits, K)
    candidates = torch.as_tensor(obs["candidate_ids"])
    torch.testing.assert_close(logits[candidates], top.values, rtol=0, atol=1e-4)
    assert (candidates == top.indices).float().mean() >= 0.8  # exact ids, bar near-ties


def test_top_k_action_i_writes_the_reference_lms_ith_token(lm):
    env = TopKActionWrapper(moss(), lm, k=K)
    assert env.action_space == gym.spaces.Discrete(K)
    for seed, actions in [(0, [0, 1, 2, 3, 4]), (1, [5, 5, 0, 3, 1])]:
        obs, _ = env.reset(seed=seed)
        for step, action in enumerate(actions):
            assert obs in env.observation_space
            assert_ranked_candidates(lm, obs)
            expected_token = int(obs["candidate_ids"][action])
            obs, _, terminated, truncated, info = env.step(action)
            assert info["token_id"] == expected_token
            assert obs["input_ids"][32 + step] == expected_token  # written at completion slot `step`
        assert truncated and not terminated
        assert info["completion_ids"] == [int(t) for t in obs["input_ids"][32:37]]
        assert_ranked_candidates(lm, obs)  # the terminal observation's candidates are real too


def test_top_k_vec_wrapper_batches_and_survives_resets(lm):
    """Two envs whose episodes end at different steps (env 1 ends on any even token): every row's candidates,
    and every terminal observation's, equal those of a full forward over that row's context."""
    envs = DummyVecEnv(
        [lambda: moss(), lambda: moss(eos_token_ids=list(range(0, 49152, 2)))]
    )
    venv = TopKVecEnvWrapper(envs, lm, k=K)
    venv.seed(0)
    obs = venv.reset()
    rng = np.random.default_rng(0)
    ends = [0, 0]
    for _ in range(14):
        for row in range(2):
            assert_ranked_candidates(lm, {key: value[row] for key, value in obs.items()})
        actions = rng.integers(0, K, 2)
        chosen = obs["candidate_ids"][np.arange(2), actions]
        filled = obs["attention_mask"][:, 32:].sum(axis=1)
        obs, _, dones, infos = venv.step(actions)
        for row in range(2):
            written = infos[row]["terminal_observation"] if dones[row] else {k: v[row] for k, v in obs.items()}
            assert written["input_ids"][32 + filled[row]] == chosen[row]
            if dones[row]:
                ends[row] += 1
                assert_ranked_candidates(lm, infos[row]["terminal_observation"])
    assert ends[0] >= 2 and ends[1] > ends[0], ends  # rows did end, and out of step


def test_top_k_vec_wrapper_on_the_native_vector_env(lm):
    """The same check on the native vector env (make_sb3's default), whose rows end out of step when the env
    ends an episode on any even token."""
    from agents.sb3 import make_sb3_env

    env_kwargs = {"max_new_tokens": 5, "eos_token_ids": list(range(0, 49152, 2))}
    venv = TopKVecEnvWrapper(make_sb3_env("MossText-v0", 3, seed=0, env_kwargs=env_kwargs), lm, k=K)
    obs = venv.reset()
    rng = np.random.default_rng(1)
    out_of_step = 0
    for _ in range(10):
        for row in range(3):
            assert_ranked_candidates(lm, {key: value[row] for key, value in obs.items()})
        obs, _, dones, infos = venv.step(rng.integers(0, K, 3))
        out_of_step += int(0 < dones.sum() < 3)
        for row in np.flatnonzero(dones):
            assert_ranked_candidates(lm, infos[row]["terminal_observation"])
            assert "episode" in infos[row]  # VecMonitor's statistics pass through the wrapper
    assert out_of_step >= 2


def test_make_top_k_sb3_from_an_env_id_gives_the_same_episodes_on_either_vec_env():
    from agents.sb3 import make_top_k_sb3

    rewards = {}
    for vec_env in ("native", "sb3"):
        model = make_top_k_sb3(
            "ppo", "MossText-v0", "tiny-random-smollm2", k=K, n_envs=2, env_kwargs={"max_new_tokens": 4},
            vec_env=vec_env, seed=0, n_steps=16, batch_size=16,
        )  # fmt: skip
        model.learn(64)
        rewards[vec_env] = [ep["r"] for ep in model.ep_info_buffer]
    assert len(rewards["native"]) == 64 // 4 and rewards["native"] == rewards["sb3"]


def test_nucleus_mask_is_the_reference_lms_top_p_set(lm):
    env = NucleusMaskWrapper(moss(), lm, top_p=0.3)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        mask = env.action_masks()
        probs = full_logits(lm, obs["input_ids"], obs["attention_mask"]).softmax(-1).numpy()
        order = np.argsort(-probs, kind="stable")
        assert mask.shape == (49152,) and mask[order[0]]
        inside = np.sort(probs[mask])[::-1]
        # the nucleus is a prefix of the ranking whose mass first reaches top_p
        assert probs[~mask].max() <= inside.min() + 1e-6
        assert inside.sum() >= 0.3 - 1e-5 and inside[:-1].sum() < 0.3 + 1e-5
        obs, *_ = env.step(int(np.flatnonzero(mask)[-1]))


def test_top_p_masks_candidates_and_respects_allowed_tokens(lm):
    allowed = list(range(100, 400))
    env = TopKActionWrapper(moss(allowed_token_ids=allowed), lm, k=K, top_p=0.01)
    obs, _ = env.reset(seed=0)
    assert set(obs["candidate_ids"]) <= set(allowed)  # candidates only ever hold tokens the env accepts
    mask = env.action_masks()
    assert mask.shape == (K,) and mask[0]
    assert not mask.all()  # a 1% nucleus of a near-uniform LM is its single most likely token
    assert TopKActionWrapper(moss(), lm, k=K).action_masks().all()


def test_wrapped_envs_pass_both_env_checkers(lm):
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for make in (
            lambda: TopKActionWrapper(moss(), lm, k=K),
            lambda: NucleusMaskWrapper(moss(), lm, top_p=0.9),
            lambda: FlattenTokenObservation(TopKActionWrapper(moss(), lm, k=K)),
        ):
            gym_check_env(make())
            sb3_check_env(make())
    # Gymnasium's checker always says that a wrapped env is wrapped; checking the wrapper is the point here.
    unexpected = [str(w.message) for w in caught if "has a wrapper applied to it" not in str(w.message)]
    assert unexpected == []


def test_bad_arguments_and_actions(lm):
    with pytest.raises(ValueError, match="k=0; expected a positive int"):
        TopKActionWrapper(moss(), lm, k=0)
    with pytest.raises(ValueError, match="k=8 is more than the 3 tokens the env allows"):
        TopKActionWrapper(moss(allowed_token_ids=[5, 6, 7]), lm, k=8)
    with pytest.raises(ValueError, match=r"top_p=1.5; expected a float in \(0, 1\]"):
        NucleusMaskWrapper(moss(), lm, top_p=1.5)
    with pytest.raises(TypeError, match="wraps a textenv env"):
        TopKActionWrapper(gym.make("CartPole-v1"), lm)
    env = TopKActionWrapper(moss(), lm, k=K)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 6 is out of range; expected an int in \[0, 6\)"):
        env.step(K)
    with pytest.raises(TypeError, match="action must be an int"):
        env.step(1.0)
    obs, *_ = env.step(np.int64(2))  # still usable after the bad actions
    assert obs["attention_mask"][32] == 1 and obs["attention_mask"][33] == 0
    venv = TopKVecEnvWrapper(DummyVecEnv([moss]), lm, k=K)
    venv.reset()
    with pytest.raises(ValueError, match=r"actions must be ints in \[0, 6\)"):
        venv.step(np.array([7]))


def test_nucleus_vec_wrapper_answers_env_method(lm):
    venv = NucleusMaskVecEnvWrapper(DummyVecEnv([moss, moss]), lm, top_p=0.3)
    obs = venv.reset()
    masks = np.stack(venv.env_method("action_masks"))
    for row in range(2):
        probs = full_logits(lm, obs["input_ids"][row], obs["attention_mask"][row]).softmax(-1).numpy()
        assert probs[masks[row]].sum() >= 0.3 - 1e-5 and probs[~masks[row]].max() <= probs[masks[row]].min() + 1e-6
    assert venv.has_attr("action_masks")
    assert venv.env_method("action_masks", indices=[1])[0].shape == (49152,)


def test_make_top_k_sb3_builds_the_measured_recipe():
    """``make_top_k_sb3`` wraps the env, starts the frozen embeddings from the reference LM, gives the PPO family
    TOP_K_PPO_HYPERPARAMS (overridable), and the agent trains through the wrapper."""
    from agents.sb3 import make_top_k_sb3
    from agents.sb3.factory import DEFAULT_HYPERPARAMS, TOP_K_PPO_HYPERPARAMS

    name = "tiny-random-smollm2"
    venv = DummyVecEnv([lambda: moss(), lambda: moss()])
    model = make_top_k_sb3("ppo", venv, name, k=K, seed=0, n_steps=8, batch_size=16)
    assert isinstance(model.get_env(), TopKVecEnvWrapper) and model.action_space.n == K
    assert (model.n_steps, model.batch_size) == (8, 16)  # the overrides win ...
    assert model.n_epochs == TOP_K_PPO_HYPERPARAMS["n_epochs"] and model.gamma == TOP_K_PPO_HYPERPARAMS["gamma"]
    extractor = model.policy.features_extractor
    reference = load_causal_lm(name, seed=0).get_input_embeddings().weight
    embeddings = [m for m in extractor.modules() if isinstance(m, torch.nn.Embedding)]
    assert any(e.weight.shape == reference.shape and torch.equal(e.weight, reference) for e in embeddings)
    assert not any(e.weight.requires_grad for e in embeddings if e.weight.shape == reference.shape)  # frozen
    model.learn(32)
    dqn = make_top_k_sb3("dqn", DummyVecEnv([lambda: moss()]), name, k=K, seed=0)
    dqn_defaults = DEFAULT_HYPERPARAMS["dqn"]
    assert (dqn.gamma, dqn.batch_size) == (dqn_defaults["gamma"], dqn_defaults["batch_size"])
    assert dqn.batch_size != TOP_K_PPO_HYPERPARAMS["batch_size"]  # DQN keeps its own defaults, not the PPO recipe
