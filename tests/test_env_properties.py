"""Property-based tests of the env contract (hypothesis), on MossWords-v0 and its vector env.

Random sequences of valid and invalid actions, resets, reset options and reward-plugin faults run against an env
and a twin that only receives the calls the env accepted, with a plugin that never fails. Checked after every call:

* an accepted call returns an observation in ``observation_space``, never both ``terminated`` and ``truncated``,
  a reward of 0 except on an episode's last step, where it is finite, and exactly what the twin returns;
* a rejected call raises a documented error (ValueError, TypeError, ResetNeeded, RewardPluginError, gymnasium's
  seed error, or the KeyboardInterrupt the plugin raised) and changes no state, ``np_random``, the per-row
  generators and the observation buffer included;
* calls that are valid by the contract are accepted.

Constructor arguments are drawn too: valid ones build an env that works, invalid ones raise an error naming the
argument.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import rewards
import textenv  # noqa: F401  (registers MossWords-v0)

from env_state import assert_equal, assert_same_state, snapshot

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VOCAB, EOS, NUM_PROMPTS, NUM_ENVS = 398, 1, 36, 3
EXPECTED_ERRORS = (ValueError, TypeError, ResetNeeded, rewards.RewardPluginError, gym.error.Error, KeyboardInterrupt)
FAULTS = ("raise", "interrupt", "nan", "inf", "short", "long", "generator", "text", "huge int")


@functools.cache
def tokenizer() -> Any:
    return gym.make("MossWords-v0").unwrapped.tokenizer


class FaultyReward:
    """Scores each completion by its ids; the call after :attr:`fault` is set does that fault instead, once."""

    def __init__(self) -> None:
        self.fault: str | None = None

    def __call__(self, prompts: list[str], completions: list[str], completion_ids: list[list[int]], **info: Any) -> Any:
        fault, self.fault = self.fault, None
        scores = [float(len(ids)) + 0.01 * sum(ids) for ids in completion_ids]
        if fault is None:
            return scores
        if fault == "raise":
            raise RuntimeError("reward server down")
        if fault == "interrupt":
            raise KeyboardInterrupt
        if fault == "generator":
            return (score if i == 0 else {}["missing"] for i, score in enumerate(scores + [0.0]))
        return {
            "nan": [math.nan] * len(scores),
            "inf": scores[:-1] + [math.inf],
            "short": scores[:-1],
            "long": scores + [1.0],
            "text": "high",
            "huge int": [10**400] * len(scores),
        }[fault]


def make_pair(vector: bool, **kwargs: Any) -> tuple[Any, Any, FaultyReward]:
    """An env with a :class:`FaultyReward` and its twin with a plugin that never fails (same name and scores)."""
    plugin = FaultyReward()
    made = []
    for reward in (plugin, FaultyReward()):
        model = rewards.RewardModel(reward, "faulty")
        if vector:
            made.append(gym.make_vec("MossWords-v0", NUM_ENVS, vectorization_mode="vector_entry_point",
                                     tokenizer=tokenizer(), reward=model, **kwargs))
        else:
            made.append(gym.make("MossWords-v0", tokenizer=tokenizer(), reward=model, **kwargs).unwrapped)
    return made[0], made[1], plugin


def call(env: Any, op: tuple) -> tuple[Any, BaseException | None]:
    """Run one operation; return its result or the error it raised."""
    kind, *args = op
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a long text prompt is truncated with a warning
            if kind == "step":
                return env.step(args[0]), None
            return env.reset(seed=args[0], options=args[1]), None
    except EXPECTED_ERRORS as err:
        return None, err


# -- single env ------------------------------------------------------------------------------------------------
valid_actions = st.one_of(
    st.integers(0, VOCAB - 1),
    st.just(EOS),
    st.integers(0, VOCAB - 1).map(np.int64),
    hnp.arrays(st.sampled_from([np.int64, np.int32, np.uint16]), st.sampled_from([(), (1,), (1, 1)]),
               elements=st.integers(0, VOCAB - 1)),
)
invalid_actions = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=VOCAB),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    hnp.arrays(np.int64, st.sampled_from([(0,), (2,), (3,), (2, 2)]), elements=st.integers(0, VOCAB - 1)),
    hnp.arrays(np.float64, st.sampled_from([(), (1,)]), elements=st.floats(0, VOCAB - 1)),
)
valid_seeds = st.one_of(st.none(), st.integers(0, 2**64))
invalid_seeds = st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=3))
valid_options = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries({"prompt_index": st.integers(0, NUM_PROMPTS - 1)}),
    st.fixed_dictionaries({"prompt": st.text("abc xyz", max_size=30).filter(str.strip)},
                          optional={"reference": st.none() | st.text(max_size=5)}),
)
invalid_options = st.one_of(
    st.fixed_dictionaries({"prompt_index": st.integers(max_value=-1) | st.integers(min_value=NUM_PROMPTS)}),
    st.fixed_dictionaries({"prompt_index": st.floats() | st.booleans() | st.text(max_size=2)}),
    st.fixed_dictionaries({"prompt": st.just("") | st.just("   ") | st.integers()}),
    st.fixed_dictionaries({"prompt": st.just("a"), "prompt_index": st.just(0)}),
    st.fixed_dictionaries({"reference": st.integers()}),
    st.dictionaries(st.text(min_size=1, max_size=5).filter(lambda k: k not in ("prompt", "prompt_index", "reference")),
                    st.integers(), min_size=1, max_size=2),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
)
single_ops = st.lists(
    st.one_of(
        st.tuples(st.just("step"), valid_actions, st.just(True)),
        st.tuples(st.just("step"), st.just(EOS), st.just(True)),
        st.tuples(st.just("step"), invalid_actions, st.just(False)),
        st.tuples(st.just("reset"), valid_seeds, valid_options, st.just(True)),
        st.tuples(st.just("reset"), invalid_seeds, valid_options, st.just(False)),
        st.tuples(st.just("reset"), valid_seeds, invalid_options, st.just(False)),
        st.tuples(st.just("fault"), st.sampled_from(FAULTS)),
    ),
    min_size=1,
    max_size=25,
)


def check_step_result(env: Any, result: tuple, already_ended: np.ndarray | bool = False) -> None:
    obs, reward, terminated, truncated, info = result
    assert obs in env.observation_space
    both = np.logical_and(terminated, truncated)
    assert not np.any(both), "terminated and truncated at once"
    reward = np.asarray(reward)
    assert np.isfinite(reward).all()
    ended_now = np.logical_or(terminated, truncated) & ~np.asarray(already_ended)
    assert (reward[~ended_now] == 0).all(), f"a reward {reward} before the last step"


@SETTINGS
@given(ops=single_ops, seed=st.integers(0, 2**32))
def test_single_env_contract_under_random_calls_and_plugin_faults(ops, seed):
    env, twin, plugin = make_pair(vector=False)
    assert_equal(env.reset(seed=seed), twin.reset(seed=seed))
    for op in ops:
        if op[0] == "fault":
            plugin.fault = op[1]
            continue
        *call_op, valid = op
        ending = call_op[0] == "step" and not env._needs_reset and env._length + 1 >= env.task.max_new_tokens
        fault = plugin.fault
        before = snapshot(env)
        result, error = call(env, tuple(call_op))
        if error is not None:
            assert_same_state(before, snapshot(env))
            will_end = ending or (valid and _token(call_op[1]) == EOS)
            plugin_failed = call_op[0] == "step" and fault is not None and will_end and not env._needs_reset
            assert not valid or before["_needs_reset"] or plugin_failed, f"{op} was refused: {error!r}"
            if plugin_failed and valid:
                expected = KeyboardInterrupt if fault == "interrupt" else rewards.RewardPluginError
                assert isinstance(error, expected), (fault, error)
            continue
        assert valid, f"{op} was accepted"
        assert_equal(result, call(twin, tuple(call_op))[0])
        if call_op[0] == "step":
            check_step_result(env, result)
            assert not (result[2] or result[3]) or env._needs_reset
        else:
            assert result[0] in env.observation_space
            assert result[0]["attention_mask"][env.task.max_prompt_tokens :].sum() == 0


def _token(action: Any) -> int | None:
    try:
        return int(np.asarray(action).reshape(()))
    except (TypeError, ValueError):
        return None


# -- vector env ------------------------------------------------------------------------------------------------
valid_vector_actions = hnp.arrays(
    st.sampled_from([np.int64, np.int32, np.uint16]),
    (NUM_ENVS,),
    elements=st.sampled_from([EOS, 5, 10, 200, VOCAB - 1]),
)
invalid_vector_actions = st.one_of(
    hnp.arrays(np.int64, (NUM_ENVS,), elements=st.integers(-3, VOCAB + 3)).filter(
        lambda a: ((a < 0) | (a >= VOCAB)).any()
    ),
    hnp.arrays(np.int64, st.sampled_from([(), (1,), (NUM_ENVS + 1,), (1, NUM_ENVS)]), elements=st.integers(0, 9)),
    hnp.arrays(st.sampled_from([np.float64, np.bool_]), (NUM_ENVS,)),
    st.lists(st.text(max_size=2), min_size=NUM_ENVS, max_size=NUM_ENVS),
    st.none(),
)
row_masks = hnp.arrays(np.bool_, (NUM_ENVS,))
valid_vector_options = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"prompt_index": hnp.arrays(np.int64, (NUM_ENVS,), elements=st.integers(0, NUM_PROMPTS - 1))}
    ),
    st.fixed_dictionaries({"prompts": st.lists(st.sampled_from(["tell me words about animals :", "x y", "colors"]),
                                               min_size=NUM_ENVS, max_size=NUM_ENVS)}),
)
invalid_vector_options = st.one_of(
    st.fixed_dictionaries({"prompt_index": st.lists(st.integers(0, NUM_PROMPTS + 5), min_size=NUM_ENVS,
                                                    max_size=NUM_ENVS).filter(lambda v: max(v) >= NUM_PROMPTS)}),
    st.fixed_dictionaries({"prompt_index": st.lists(st.integers(0, 3), max_size=NUM_ENVS - 1)}),
    st.fixed_dictionaries({"prompts": st.just("one string") | st.just(["a", "b", ""])}),
    st.fixed_dictionaries({"reset_mask": st.just(np.zeros(NUM_ENVS, bool)) | st.just([1, 0, 1])}),
    st.fixed_dictionaries({"prompt": st.just("a single-env option")}),
    st.text(max_size=3),
)
valid_vector_seeds = st.one_of(st.none(), st.integers(0, 2**32), st.lists(st.integers(0, 2**32) | st.none(),
                                                                          min_size=NUM_ENVS, max_size=NUM_ENVS))
invalid_vector_seeds = st.one_of(st.lists(st.integers(0, 9), max_size=NUM_ENVS - 1), st.just([1, -2, 3]),
                                 st.text(max_size=2), st.just(True))
vector_ops = st.lists(
    st.one_of(
        st.tuples(st.just("step"), valid_vector_actions, st.just(True)),
        st.tuples(st.just("step"), invalid_vector_actions, st.just(False)),
        st.tuples(st.just("reset"), valid_vector_seeds, valid_vector_options, st.just(True)),
        st.tuples(st.just("reset"), valid_vector_seeds, row_masks.filter(np.any).map(lambda m: {"reset_mask": m}),
                  st.just(True)),
        st.tuples(st.just("reset"), invalid_vector_seeds, valid_vector_options, st.just(False)),
        st.tuples(st.just("reset"), valid_vector_seeds, invalid_vector_options, st.just(False)),
        st.tuples(st.just("fault"), st.sampled_from(FAULTS)),
    ),
    min_size=1,
    max_size=25,
)


@SETTINGS
@given(ops=vector_ops, seed=st.integers(0, 2**32), mode=st.sampled_from(list(AutoresetMode)))
def test_vector_env_contract_under_random_calls_and_plugin_faults(ops, seed, mode):
    env, twin, plugin = make_pair(vector=True, autoreset_mode=mode)
    assert_equal(env.reset(seed=seed), twin.reset(seed=seed))
    for op in ops:
        if op[0] == "fault":
            plugin.fault = op[1]
            continue
        *call_op, valid = op
        fault = plugin.fault
        before = snapshot(env)
        result, error = call(env, tuple(call_op))
        if error is not None:
            assert_same_state(before, snapshot(env))
            # a valid call fails only when a plugin fault hit a step that ended an episode
            assert not valid or (call_op[0] == "step" and fault is not None), f"{op} was refused: {error!r}"
            continue
        assert valid, f"{op} was accepted"
        assert_equal(result, call(twin, tuple(call_op))[0])
        if call_op[0] == "step":
            already = before["_ended"] if mode is AutoresetMode.DISABLED else False
            check_step_result(env, result, already)
        else:
            assert result[0] in env.observation_space


# -- constructor arguments -------------------------------------------------------------------------------------
def argument(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
    """``(value, is_valid)`` pairs."""
    return st.one_of(valid.map(lambda v: (v, True)), invalid.map(lambda v: (v, False)))


MAX_VOCAB = 1000  # the largest valid vocab_size drawn: token ids from it up are out of range whatever is drawn
sizes = argument(st.integers(1, 12), st.integers(max_value=0) | st.sampled_from([10**12, 2**63, 1_000_001])
                 | st.floats(1, 5) | st.booleans())
ARGUMENTS = {
    "max_new_tokens": sizes,
    "max_prompt_tokens": sizes,
    "prompt_truncation": argument(st.sampled_from(["left", "error"]), st.sampled_from(["right", "", None])),
    "eos_token_ids": argument(st.none() | st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=3),
                              st.lists(st.integers(MAX_VOCAB, 10**6) | st.integers(max_value=-1), min_size=1, max_size=2)),
    "allowed_token_ids": argument(st.none() | st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=5),
                                  st.lists(st.integers(MAX_VOCAB, 10**6) | st.text(max_size=1), min_size=1, max_size=2)),
    "vocab_size": argument(st.none() | st.integers(VOCAB, MAX_VOCAB),
                           st.integers(max_value=0) | st.just(2**24 + 1) | st.just(2**63) | st.just(1.5)),
    "reward_timeout": argument(
        st.none() | st.floats(0.5, 60), st.sampled_from([0, -1.0, math.inf, math.nan, True, "1"])
    ),
    "render_mode": argument(st.sampled_from([None, "ansi", "rgb_array"]), st.sampled_from(["rgb", "video", ""])),
}


@SETTINGS
@given(
    arguments=st.fixed_dictionaries({}, optional=ARGUMENTS),
    num_envs=argument(st.integers(1, 3), st.integers(max_value=0) | st.just(2**40) | st.just(2.0)),
    vector=st.booleans(),
)
def test_constructor_arguments_build_a_working_env_or_name_the_bad_one(arguments, num_envs, vector):
    kwargs = {name: value for name, (value, _) in arguments.items()}
    bad = [name for name, (_, ok) in arguments.items() if not ok]
    if vector and not num_envs[1]:
        bad.append("num_envs")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if vector:
                env = gym.make_vec("MossWords-v0", num_envs[0], vectorization_mode="vector_entry_point",
                                   tokenizer=tokenizer(), **kwargs)
            else:
                env = gym.make("MossWords-v0", tokenizer=tokenizer(), **kwargs)
    except (ValueError, TypeError) as err:
        assert bad, f"valid arguments {kwargs} refused: {err!r}"
        assert any(name in str(err) for name in bad), f"{err!r} names none of {bad}"
        return
    assert not bad, f"{bad} accepted"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs, _ = env.reset(seed=0)
    except ValueError as err:  # prompt_truncation="error" refuses prompts longer than max_prompt_tokens
        assert kwargs.get("prompt_truncation") == "error" and "max_prompt_tokens" in str(err)
        return
    assert obs in env.observation_space
    mask = env.unwrapped.task.allowed
    token = int(np.flatnonzero(mask)[0])
    result = env.step(np.full(num_envs[0], token) if vector else token)
    check_step_result(env, result)
    if kwargs.get("render_mode") is not None:
        assert env.render() is not None


@pytest.mark.parametrize("fault", FAULTS)
def test_each_plugin_fault_is_refused_and_the_env_goes_on(fault):
    """Every fault the property tests draw, once each, so none depends on the draw."""
    env, twin, plugin = make_pair(vector=False, max_new_tokens=2)
    env.reset(seed=1)
    twin.reset(seed=1)
    env.step(5)
    twin.step(5)
    plugin.fault = fault
    before = snapshot(env)
    with pytest.raises(KeyboardInterrupt if fault == "interrupt" else rewards.RewardPluginError):
        env.step(6)
    assert_same_state(before, snapshot(env))
    assert_equal(env.step(6), twin.step(6))
