"""render_mode="rgb_array": frames of the episode's text, for stock SB3 calls and Gymnasium's video wrappers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import textenv  # noqa: F401  (registers the env ids)
from textenv.render import FRAME_HEIGHT, FRAME_WIDTH, TextFrames, wrap

FRAME = (FRAME_HEIGHT, FRAME_WIDTH, 3)


def ink(frame: np.ndarray) -> int:
    """How many pixels are not background (white)."""
    return int((frame != 255).any(axis=2).sum())


def test_rgb_array_frames_have_one_shape_and_grow_with_the_text():
    env = gym.make("MossWords-v0", render_mode="rgb_array")
    env.reset(seed=0, options={"prompt_index": 0})
    frames = [env.render()]
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(10)
        frames.append(env.render())
    assert all(frame.shape == FRAME and frame.dtype == np.uint8 for frame in frames)
    assert len(frames) == 5  # the prompt, then one frame per completion word
    amounts = [ink(frame) for frame in frames]
    assert amounts[0] > 0 and all(later > earlier for earlier, later in zip(amounts, amounts[1:])), amounts


def test_long_and_non_latin_text_stays_in_the_frame_and_shows_its_end():
    frames = TextFrames()
    long = frames.draw("word " * 2000 + "END")
    assert long.shape == FRAME and ink(long) > 0
    assert np.array_equal(long, frames.draw("word " * 1999 + "word END"))  # the same last lines: the same frame
    assert frames.draw("ünïcødé → 映画 " * 30).shape == FRAME
    lines = wrap("a " * 100 + "x" * 400, 200, lambda text: 6 * len(text))
    assert all(6 * len(line) <= 200 for line in lines) and "".join(lines).endswith("x" * 400)


def test_render_collection_and_the_vector_env_render_frames():
    env = gym.wrappers.RenderCollection(gym.make("MossWords-v0", render_mode="rgb_array"))
    env.reset(seed=1)
    env.step(10)
    env.step(11)
    frames = env.render()
    assert len(frames) == 3 and all(frame.shape == FRAME for frame in frames)
    assert not np.array_equal(frames[1], frames[2])
    vec = gym.make_vec("MossWords-v0", num_envs=3, vectorization_mode="vector_entry_point", render_mode="rgb_array")
    vec.reset(seed=0, options={"prompt_index": [0, 1, 0]})
    rendered = vec.render()
    assert len(rendered) == 3 and all(frame.shape == FRAME and frame.dtype == np.uint8 for frame in rendered)
    assert np.array_equal(rendered[0], rendered[2]) and not np.array_equal(rendered[0], rendered[1])
    with pytest.raises(ValueError, match=r"render_mode='human'; expected None or one of \['ansi', 'rgb_array'\]"):
        gym.make_vec("MossWords-v0", num_envs=2, vectorization_mode="vector_entry_point", render_mode="human")


def test_record_video_writes_a_video(tmp_path):
    pytest.importorskip("moviepy")  # RecordVideo writes files with moviepy, an optional dependency
    env = gym.wrappers.RecordVideo(gym.make("MossWords-v0", render_mode="rgb_array"), str(tmp_path))
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(10)
        done = terminated or truncated
    env.close()
    assert list(tmp_path.glob("*.mp4"))


def test_the_first_thing_an_sb3_user_types_works():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    model = PPO("MultiInputPolicy", "MossWords-v0").learn(128)  # SB3 makes the env with render_mode="rgb_array"
    assert model.num_timesteps >= 128
    venv = make_vec_env("MossWords-v0", 2)
    obs = venv.reset()
    assert obs["input_ids"].shape == (2, 12)
    assert [image.shape for image in venv.get_images()] == [FRAME, FRAME]


def test_dialogue_envs_render_frames_and_stock_sb3_takes_them():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("MossGuessWords-v0", 2)  # SB3 asks for render_mode="rgb_array"
    venv.reset()
    before = venv.get_images()
    assert [image.shape for image in before] == [FRAME, FRAME]
    venv.step(np.array([5, 5]))
    after = venv.get_images()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # the agent's word is drawn

    vector = gym.make_vec(
        "MossGuessWords-v0", num_envs=2, vectorization_mode="vector_entry_point", render_mode="rgb_array"
    )
    vector.reset(seed=0)
    frames = vector.render()
    assert len(frames) == 2 and all(frame.shape == FRAME and frame.dtype == np.uint8 for frame in frames)
