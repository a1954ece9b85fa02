"""Property-based tests of the multi-turn contract (hypothesis), the way tests/test_env_properties.py fuzzes the
single-turn envs: the vector envs of MossGuessWords-v0, MossGuess-v0 and MossChat-v0 (its real simulated user, on
the tiny random model) and the single MossChat-v0 env.

Random sequences of valid and invalid actions, resets, reset options and responder faults run against an env and
a twin that only receives the calls the env accepted, with a responder that never fails. Checked after every call:

* an accepted call returns an observation in ``observation_space``, never both ``terminated`` and ``truncated``, a
  reward of 0 except on an episode's last step (finite there), and exactly what the twin returns (so the same seed
  and the same actions give the same conversation, the simulated user's replies included);
* ``inserted_mask`` lies inside ``attention_mask``, covers the whole opening, and the tokens it leaves out (the
  agent's) are exactly the actions sent to that row since its reset, in order;
* a rejected call (a bad action, seed or option; a responder that raises, is interrupted or returns junk) raises a
  documented error and changes nothing: buffers, conversations, and every generator (the per-row ones included).
"""

from __future__ import annotations

import functools
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
import textenv
from env_state import assert_equal, assert_same_state, snapshot
from rewards.conversation import Conversation
from textenv.responders import Reply, Responder, SimulatedUser, make_responder

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NUM_ENVS = 3
FAULTS = ("raise", "interrupt", "short", "not a reply")
EXPECTED_ERRORS = (ValueError, TypeError, ResetNeeded, gym.error.Error, RuntimeError, KeyboardInterrupt)


@functools.cache
def tiny_user() -> tuple[Any, Any]:
    """The simulated user's model and tokenizer: the tiny random model, shared by every env of this module."""
    return textenv.load_causal_lm(textenv.TINY_MODEL).eval(), textenv.load_tokenizer(textenv.TINY_MODEL)


@functools.cache
def sizes(env_id: str) -> tuple[int, int]:
    """``(vocab_size, number of openings)`` of ``env_id`` (building it loads no responder model)."""
    task = gym.make(env_id).unwrapped.task
    return task.vocab_size, len(task.prompts)


@functools.cache
def tokens(env_id: str) -> tuple[int, ...]:
    """A few token ids an agent of ``env_id`` would write: its end-of-turn token and words of its game."""
    tokenizer = textenv.load_tokenizer(textenv.registration.DIALOGUE_ENV_IDS[env_id][0]["tokenizer"])
    words = " cat dog small pet is it ? sorry great" if env_id != "MossGuessWords-v0" else "cat dog small pet mouse"
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    return tuple(dict.fromkeys([tokenizer.eos_token_id, *ids]))


class FaultyResponder(Responder):
    """Answers as ``inner`` does; the call after :attr:`fault` is set does that fault instead, once (after the
    inner responder drew from the rows' generators, so a rollback must undo those draws)."""

    def __init__(self, inner: Responder) -> None:
        self.inner, self.fault = inner, None

    def respond(self, conversations: Any, rngs: Any) -> list[Reply]:
        fault, self.fault = self.fault, None
        replies = self.inner.respond(conversations, rngs)
        if fault is None or not conversations:
            return replies
        if fault == "raise":
            raise RuntimeError("responder down")
        if fault == "interrupt":
            raise KeyboardInterrupt
        if fault == "short":
            return replies[:-1]
        return ["a plain string", *replies[1:]]


def responder(env_id: str) -> Responder:
    kwargs = textenv.registration.DIALOGUE_ENV_IDS[env_id][0]
    if kwargs["responder"] == "simulated_user":
        return SimulatedUser(tiny_user(), max_new_tokens=3)
    return make_responder(kwargs["responder"], **kwargs.get("responder_kwargs", {}))


def make_pair(env_id: str, vector: bool, mode: AutoresetMode) -> tuple[Any, Any, FaultyResponder]:
    faulty = FaultyResponder(responder(env_id))
    made = []
    for answer in (faulty, FaultyResponder(responder(env_id))):
        kwargs: dict[str, Any] = {"responder": answer, "responder_kwargs": None}
        if env_id == "MossChat-v0":  # a short opening budget keeps the tiny user's forward cheap
            kwargs.update(max_turn_tokens=4, max_total_tokens=40)
        if vector:
            made.append(gym.make_vec(env_id, NUM_ENVS, vectorization_mode="vector_entry_point",
                                     autoreset_mode=mode, **kwargs))
        else:
            made.append(gym.make(env_id, **kwargs).unwrapped)
    return made[0], made[1], faulty


def dialogue_snapshot(env: Any) -> dict[str, Any]:
    """Everything a call may change: the vector core's state, and a single env's own generator and flags."""
    if hasattr(env, "core"):
        state = snapshot(env.core)
        state.update(snapshot_of_single(env))
        return state
    return snapshot(env)


def snapshot_of_single(env: Any) -> dict[str, Any]:
    rng = env._np_random
    return {"single._np_random": None if rng is None else rng.bit_generator.state,
            "single._np_random_seed": env._np_random_seed, "single._needs_reset": env._needs_reset}


def call(env: Any, op: tuple) -> tuple[Any, BaseException | None]:
    kind, *args = op
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "step":
                return env.step(args[0]), None
            return env.reset(seed=args[0], options=args[1]), None
    except EXPECTED_ERRORS as err:
        return None, err


def check_agent_tokens(env: Any, obs: dict[str, np.ndarray], info: dict[str, Any], sent: list[list[int]]) -> None:
    """``inserted_mask`` inside the attention mask, the opening all inserted, the rest exactly the agent's tokens."""
    p = env.unwrapped.task.max_prompt_tokens if hasattr(env.unwrapped, "task") else None
    ids, attention, inserted = (np.atleast_2d(a) for a in (obs["input_ids"], obs["attention_mask"],
                                                            info["inserted_mask"]))
    assert inserted.dtype == bool and inserted.shape == ids.shape
    assert not (inserted & (attention == 0)).any(), "inserted_mask marks a padding slot"
    assert (inserted[:, :p] == (attention[:, :p] > 0)).all(), "the opening is not all inserted"
    for row, expected in enumerate(sent):
        agent = ids[row][(attention[row] > 0) & ~inserted[row]].tolist()
        assert agent == expected, f"row {row}: agent tokens {agent} != the actions sent {expected}"


def check_step(env: Any, result: tuple, already_ended: np.ndarray) -> None:
    obs, reward, terminated, truncated, info = result
    assert obs in env.observation_space
    assert not np.any(np.logical_and(terminated, truncated)), "terminated and truncated at once"
    reward = np.atleast_1d(np.asarray(reward, dtype=float))
    assert np.isfinite(reward).all()
    ended_now = np.atleast_1d(np.logical_or(terminated, truncated)) & ~already_ended
    assert (reward[~ended_now] == 0).all(), f"a reward {reward} before an episode's last step"


def ops_strategy(env_id: str, vector: bool) -> st.SearchStrategy:
    ids = tokens(env_id)
    vocab, num_prompts = sizes(env_id)
    if vector:
        good_actions = hnp.arrays(np.int64, (NUM_ENVS,), elements=st.sampled_from(ids))
        bad_actions = st.one_of(
            hnp.arrays(np.int64, (NUM_ENVS,), elements=st.sampled_from([-1, vocab, *ids])).filter(
                lambda a: ((a < 0) | (a >= vocab)).any()),
            hnp.arrays(np.int64, st.sampled_from([(), (NUM_ENVS + 1,)]), elements=st.sampled_from(ids)),
            hnp.arrays(np.float64, (NUM_ENVS,)), st.none(),
        )
        good_seeds = st.none() | st.integers(0, 2**32) | st.lists(st.integers(0, 99) | st.none(), min_size=NUM_ENVS,
                                                                  max_size=NUM_ENVS)
        bad_seeds = st.just([1, -2, 3]) | st.just(True) | st.text(max_size=2)
        all_rows = st.none() | st.fixed_dictionaries(
            {"prompt_index": st.lists(st.integers(0, num_prompts - 1), min_size=NUM_ENVS, max_size=NUM_ENVS)}
        )
        good_options = all_rows | hnp.arrays(np.bool_, (NUM_ENVS,)).filter(np.any).map(lambda m: {"reset_mask": m})
        bad_options = st.one_of(
            st.fixed_dictionaries({"prompt_index": st.lists(st.integers(num_prompts, 99), min_size=NUM_ENVS,
                                                            max_size=NUM_ENVS)}),
            st.fixed_dictionaries({"prompt_index": st.just([0])}),
            st.just({"reset_mask": np.zeros(NUM_ENVS, bool)}), st.just({"prompt": "x"}), st.text(max_size=2),
        )
    else:
        good_actions = st.sampled_from(ids) | st.sampled_from(ids).map(np.int64)
        bad_actions = st.sampled_from([-1, vocab, 1.5, True, None, "a"])
        good_seeds = st.none() | st.integers(0, 2**32)
        bad_seeds = st.sampled_from([-1, 1.5, "x"])
        good_options = st.none() | st.fixed_dictionaries({"prompt_index": st.integers(0, num_prompts - 1)})
        all_rows = good_options
        bad_options = st.one_of(
            st.fixed_dictionaries({"prompt_index": st.integers(num_prompts, 99) | st.integers(max_value=-1)}),
            st.just({"prompt_index": "0"}), st.just({"reset_mask": [True]}), st.text(max_size=2),
        )
    return st.lists(
        st.one_of(
            st.tuples(st.just("step"), good_actions, st.just(True)),
            st.tuples(st.just("step"), good_actions, st.just(True)),
            st.tuples(st.just("step"), bad_actions, st.just(False)),
            st.tuples(st.just("reset"), good_seeds, good_options, st.just(True)),
            st.tuples(st.just("reset"), bad_seeds, all_rows, st.just(False)),
            st.tuples(st.just("reset"), good_seeds, bad_options, st.just(False)),
            st.tuples(st.just("fault"), st.sampled_from(FAULTS)),
        ),
        min_size=1,
        max_size=20,
    )


CASES = [("MossGuessWords-v0", True), ("MossGuess-v0", True), ("MossChat-v0", True), ("MossChat-v0", False)]


@pytest.mark.parametrize("env_id, vector", CASES, ids=[f"{e}-{'vector' if v else 'single'}" for e, v in CASES])
def test_dialogue_contract_under_random_calls_and_responder_faults(env_id, vector):
    @SETTINGS
    @given(ops=ops_strategy(env_id, vector), seed=st.integers(0, 2**32),
           mode=st.sampled_from([AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED] if vector else [AutoresetMode.DISABLED]))
    def run(ops, seed, mode):
        env, twin, faulty = make_pair(env_id, vector, mode)
        rows = NUM_ENVS if vector else 1
        result = env.reset(seed=seed)
        assert_equal(result, twin.reset(seed=seed))
        sent: list[list[int]] = [[] for _ in range(rows)]
        check_agent_tokens(env, *result, sent)
        ended = np.zeros(rows, dtype=bool)
        for op in ops:
            if op[0] == "fault":
                faulty.fault = op[1]
                continue
            *call_op, valid = op
            fault = faulty.fault
            before = dialogue_snapshot(env)
            result, error = call(env, tuple(call_op))
            if error is not None:
                assert_same_state(before, dialogue_snapshot(env))
                if valid:  # a valid call fails only when the responder fault hit, or a single env needs a reset
                    assert call_op[0] == "step" and (fault is not None or before.get("single._needs_reset")), (
                        f"{op} was refused: {error!r}")
                continue
            assert valid, f"{op} was accepted"
            twin_result, twin_error = call(twin, tuple(call_op))
            assert twin_error is None, twin_error
            assert_equal(result, twin_result)
            if call_op[0] == "reset":
                mask = (call_op[2] or {}).get("reset_mask", np.ones(rows, bool)) if vector else np.ones(1, bool)
                for row in np.flatnonzero(mask):
                    sent[row], ended[row] = [], False
                check_agent_tokens(env, *result, sent)
                continue
            actions = np.atleast_1d(np.asarray(call_op[1]).reshape(-1))
            for row in range(rows):
                if not ended[row]:
                    sent[row].append(int(actions[row]))
                elif mode is AutoresetMode.NEXT_STEP:
                    sent[row], ended[row] = [], False  # this step reset the row; its action was ignored
            check_step(env, result, ended & (mode is AutoresetMode.DISABLED))
            obs, _, terminated, truncated, info = result
            check_agent_tokens(env, obs, info, sent)
            ended |= np.atleast_1d(np.logical_or(terminated, truncated))

    run()


def test_a_rejected_reset_keeps_the_seed_it_was_given():
    """``DialogueEnv.reset(seed=S, options=<bad>)`` raised but kept seed S: the next openings changed."""
    env = gym.make("MossGuessWords-v0").unwrapped
    twin = gym.make("MossGuessWords-v0").unwrapped
    for e in (env, twin):
        e.reset(seed=1)
    before = dialogue_snapshot(env)
    with pytest.raises(ValueError, match="prompt_index"):
        env.reset(seed=12345, options={"prompt_index": 99})
    assert_same_state(before, dialogue_snapshot(env))
    openings = [env.reset()[1]["prompt_index"] for _ in range(8)]
    assert openings == [twin.reset()[1]["prompt_index"] for _ in range(8)]


# -- MossGuess-v0: listing every animal is one guess, the first named ------------------------------------------
ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "pig", "lion", "tiger", "bear", "wolf", "mouse", "rabbit", "eagle",
           "duck", "shark", "frog"]


def test_naming_every_animal_in_one_turn_does_not_win_moss_guess():
    env = gym.make("MossGuess-v0").unwrapped
    tokenizer = env.tokenizer
    listing = tokenizer(" " + " ".join(ANIMALS), add_special_tokens=False)["input_ids"]
    assert len(listing) <= env.task.max_turn_tokens  # the whole list fits in one turn
    rewards_by_secret = {}
    for index, prompt in enumerate(env.task.prompts):
        env.reset(seed=0, options={"prompt_index": index})
        total, ended, step = 0.0, False, 0
        while not ended:  # every turn lists all 16 animals
            obs, reward, terminated, truncated, info = env.step(listing[step % len(listing)])
            total, ended, step = total + reward, terminated or truncated, step + 1
        rewards_by_secret[prompt.reference] = total
    # only the secret named first in the list ("cat") is found, in the first turn
    assert rewards_by_secret.pop("cat") == 1.0
    assert set(rewards_by_secret.values()) == {0.0}


def test_the_game_master_and_the_reward_take_the_first_animal_named():
    master = make_responder("word_game")
    reward = rewards.make("guessed_word", turn_cost=0.1,
                          candidates=textenv.registration.DIALOGUE_ENV_IDS["MossGuess-v0"][0]["reward_kwargs"][
                              "candidates"])

    def turns(*texts, secret="lion"):
        messages = [{"role": "user", "content": "guess"}]
        for text in texts:
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "no"}]
        return Conversation(tuple(messages), tuple((1,) for _ in texts), secret)

    rng = [np.random.default_rng(0)]
    assert master.respond([turns("a tiger, or a lion?")], rng)[0].solved is False
    assert master.respond([turns("Is it a LION? not a tiger")], rng)[0].solved is True
    assert master.respond([turns("is it a big wild cat?")], rng)[0].text == "yes"  # an attribute of the lion
    scores = reward([""] * 3, [""] * 3, conversations=[
        turns("tiger lion bear"),  # one guess: tiger
        turns("is it big?", "lion, then tiger"),  # the second turn guesses lion
        turns("cat", "dog", "wolf"),
    ]).tolist()
    assert scores == pytest.approx([0.0, 0.9, 0.0])
    with pytest.raises(ValueError, match="candidates"):
        rewards.make("guessed_word", candidates=["two words"])
