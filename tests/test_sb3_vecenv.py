"""SB3's VecEnv API over the native vector env: terminal observations, resets, masks, PPO and MaskablePPO; and
``make_sb3`` training on it by default, with the same episodes as on SB3's ``make_vec_env``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import textenv  # noqa: F401  (registers MossText-v0)
from agents.sb3.native_vec_env import SB3TextVecEnv, make_sb3_vec_env
from textenv import TextGenerationEnv
from textenv.vector_env import TextGenerationVectorEnv

PROMPTS = ["The movie was", "I walked into the theater and", "Halfway through the second act,"]
TASK = dict(
    prompts=PROMPTS, reward="keyword", reward_kwargs={"keywords": ["great"]}, max_new_tokens=3, max_prompt_tokens=12
)


def test_import_agents_does_not_import_sb3():
    code = "import agents, sys; print('stable_baselines3' in sys.modules, 'agents.sb3.native_vec_env' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_step_matches_single_envs_with_terminal_observation_and_reset(tokenizer, eos_id):
    great = tokenizer(" great")["input_ids"][0]
    venv = SB3TextVecEnv(TextGenerationVectorEnv(3, autoreset_mode=AutoresetMode.SAME_STEP, **TASK))
    singles = [TextGenerationEnv(**TASK) for _ in range(3)]
    assert venv.seed(11) == [11, 12, 13]
    obs = venv.reset()
    single_resets = [env.reset(seed=11 + i) for i, env in enumerate(singles)]
    np.testing.assert_array_equal(obs["input_ids"], np.stack([o["input_ids"] for o, _ in single_resets]))
    assert [info["prompt"] for info in venv.reset_infos] == [info["prompt"] for _, info in single_resets]

    plan = [[eos_id, great, great], [great, great, great], [great, great, great]]
    for step, actions in enumerate(plan):
        obs, rewards, dones, infos = venv.step(np.array(actions))
        assert rewards.dtype == np.float32 and dones.dtype == bool and len(infos) == 3
        for i, env in enumerate(singles):
            o, r, term, trunc, info = env.step(actions[i])
            assert (rewards[i], dones[i], infos[i]["TimeLimit.truncated"]) == (r, term or trunc, trunc and not term)
            if term or trunc:  # SB3: the real last observation is in the info, obs is the next episode's first
                np.testing.assert_array_equal(infos[i]["terminal_observation"]["input_ids"], o["input_ids"])
                np.testing.assert_array_equal(infos[i]["terminal_observation"]["attention_mask"], o["attention_mask"])
                assert infos[i]["completion"] == info["completion"]
                o, reset_info = env.reset()
                assert venv.reset_infos[i]["prompt"] == reset_info["prompt"]
            else:
                assert "terminal_observation" not in infos[i]
            np.testing.assert_array_equal(obs["input_ids"][i], o["input_ids"], err_msg=f"step {step} row {i}")
    assert dones.tolist() == [False, True, True]  # rows 1, 2 truncated at max_new_tokens=3
    assert infos[1]["TimeLimit.truncated"] is True and infos[1]["reward_components"] == {"keyword": 1.0}


def test_attributes_methods_masks_and_options(tokenizer):
    venv = SB3TextVecEnv(
        TextGenerationVectorEnv(3, autoreset_mode="SameStep", **TASK, allowed_token_ids=[5, 6, 7])
    )
    masks = venv.env_method("action_masks")
    assert len(masks) == 3 and masks[0].shape == (len(tokenizer),) and masks[0].sum() == 3
    assert len(venv.env_method("action_masks", indices=[2])) == 1
    assert venv.has_attr("action_masks") and venv.get_attr("task", indices=[0, 1])[0] is venv.venv.task
    assert venv.get_attr("action_space")[0] == venv.action_space == venv.venv.single_action_space
    assert venv.env_is_wrapped(TextGenerationEnv) == [False] * 3
    venv.set_attr("render_mode", "ansi")
    assert venv.venv.render_mode == "ansi"
    with pytest.raises(ValueError, match="only be set for all rows"):
        venv.set_attr("render_mode", None, indices=[1])
    with pytest.raises(IndexError, match=r"\[5\]"):
        venv.get_attr("task", indices=[5])
    venv.set_options({"prompt_index": 2})
    venv.reset()
    assert [info["prompt"] for info in venv.reset_infos] == [PROMPTS[2]] * 3
    venv.set_options([{"prompt": "alpha"}, {"prompt": "beta"}, {"prompt": "gamma"}])
    venv.reset()
    assert [info["prompt"] for info in venv.reset_infos] == ["alpha", "beta", "gamma"]
    venv.set_options([{"prompt_index": 0}, {}, {}])
    with pytest.raises(ValueError, match=r"not for \[1, 2\]"):
        venv.reset()
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3TextVecEnv(TextGenerationVectorEnv(2, **TASK))


def test_ppo_runs_a_few_hundred_steps_on_the_adapter():
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    venv = VecMonitor(make_sb3_vec_env("MossText-v0", num_envs=4, seed=0, max_new_tokens=4))
    model = PPO("MultiInputPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    assert model.num_timesteps == 256
    # VecMonitor saw 4-token episodes finish (32 steps x 4 rows / 4 tokens = 32 episodes per rollout)
    assert len(model.ep_info_buffer) >= 30 and {ep["l"] for ep in model.ep_info_buffer} <= {1, 2, 3, 4}


def test_maskable_ppo_gets_masks_through_env_method():
    from sb3_contrib import MaskablePPO

    allowed = [2, 5, 6, 7]  # EOS (2) and three tokens: an action outside them would make the env raise
    venv = make_sb3_vec_env("MossText-v0", num_envs=4, seed=0, max_new_tokens=4, allowed_token_ids=allowed)
    model = MaskablePPO("MultiInputPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    assert model.num_timesteps == 128


class RewardLog:
    """Every finished episode's (timestep, reward, length) as SB3's Monitor / VecMonitor report them."""

    def __new__(cls):
        from stable_baselines3.common.callbacks import BaseCallback

        class _Log(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.episodes: list[tuple[int, float, int]] = []

            def _on_step(self) -> bool:
                for info in self.locals["infos"]:
                    if "episode" in info:
                        self.episodes.append((self.num_timesteps, info["episode"]["r"], info["episode"]["l"]))
                return True

        return _Log()


@pytest.mark.parametrize(
    "algo, kwargs",
    [
        ("ppo", dict(n_steps=64)),
        ("maskable_ppo", dict(n_steps=64)),
        ("recurrent_ppo", dict(n_steps=64)),
        ("qrdqn", dict(learning_starts=64)),
    ],
)
def test_make_sb3_trains_on_the_native_env_with_the_same_episodes_as_make_vec_env(algo, kwargs):
    """The default path is the native vector env in VecMonitor; seeded alike, it gives every algorithm exactly
    the episodes (rewards, lengths, order) that SB3's make_vec_env of single envs gives, and fills the same
    Monitor statistics (ep_info_buffer, info["episode"])."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    from agents.sb3 import make_sb3

    logs, models = {}, {}
    for vec_env in ("native", "sb3"):
        models[vec_env] = make_sb3(algo, "MossWords-v0", n_envs=4, seed=3, vec_env=vec_env, **kwargs)
        logs[vec_env] = RewardLog()
        models[vec_env].learn(384, callback=logs[vec_env])
    native, sb3 = models["native"].get_env(), models["sb3"].get_env()
    assert isinstance(native, VecMonitor) and isinstance(native.venv, SB3TextVecEnv)
    assert isinstance(sb3, DummyVecEnv)
    assert len(logs["native"].episodes) >= 384 // 4 - 4  # 4-token episodes, some end early on <eos>
    assert logs["native"].episodes == logs["sb3"].episodes
    native_buffer = [(ep["r"], ep["l"]) for ep in models["native"].ep_info_buffer]
    assert native_buffer == [(ep["r"], ep["l"]) for ep in models["sb3"].ep_info_buffer]
    assert len(native_buffer) == min(100, len(logs["native"].episodes))  # SB3's buffer keeps the last 100


def test_make_sb3_flattens_the_native_env_for_dqn_memory_optimisation():
    """DQN's optimize_memory_usage cannot take a Dict observation: make_sb3 flattens the native vector env
    (terminal observations included) and the token features extractor splits it back."""
    from agents.sb3 import FlattenTokenVecObservation, make_sb3, make_sb3_env

    model = make_sb3("dqn", "MossWords-v0", n_envs=4, seed=0, optimize_memory_usage=True, learning_starts=64)
    env = model.get_env()
    assert isinstance(env, FlattenTokenVecObservation) and env.token_layout == {"input_ids": 12, "attention_mask": 12}
    model.learn(256)
    assert model.num_timesteps == 256 and len(model.ep_info_buffer) > 0

    venv = make_sb3_env("MossWords-v0", 2, seed=0, flatten=True)
    obs = venv.reset()
    assert obs.shape == (2, 24) and obs.dtype == np.int64
    for _ in range(4):
        obs, _, dones, infos = venv.step(np.array([5, 6]))
    assert dones.all() and all(info["terminal_observation"].shape == (24,) for info in infos)
    assert (infos[0]["terminal_observation"][8:12] == 5).all()  # the 4 written tokens, after 8 prompt slots


def test_make_sb3_env_rejects_an_unknown_vec_env():
    from agents.sb3 import make_sb3_env

    with pytest.raises(ValueError, match=r"vec_env='subproc'; expected one of \['native', 'sb3'\]"):
        make_sb3_env("MossWords-v0", 2, vec_env="subproc")
