"""Environment throughput, measured side by side in one run: textenv against the baselines that matter.

* P1 -- one ``MossText-v0`` env (``keyword`` reward, random actions) against ``CartPole-v1`` in the same
  process, both from ``gym.make`` with their default wrappers. Target: >= 0.5x CartPole's steps/s.
* P2 -- the native vector env (``vectorization_mode="vector_entry_point"``) at 64 envs against
  ``SyncVectorEnv`` of 64 single envs (``vectorization_mode="sync"``), env-steps/s, ``keyword`` reward.
  Target: >= 10x.
* P3 -- P2 with the real ``sentiment`` reward (VADER), where batching the reward call matters.
* the observation buffer's bytes per env, and the per-step cost as ``max_new_tokens`` grows (32, 128, 512).

Random actions over SmolLM2's 49152 tokens almost never hit EOS, so every episode runs to ``max_new_tokens``
and all 64 rows end in the same step. Each comparison is therefore also run with ``eos``-frequent actions
(EOS with probability 1/8: episodes of ~8 tokens, ending at different steps), which exercises early
termination, autoreset and reward batching over fewer rows per call.

Each pair is timed interleaved (A, B, A, B, ...) and the ratio is taken of the medians, so both sides see the
same machine load; times are the process's CPU time (``time.process_time``; tokenizers and torch run
single-threaded here), so other jobs on a shared machine disturb them less. Run it with::

    .venv/bin/python benchmarks/env_throughput.py            # full run (~1-2 min on 2 cores)
    .venv/bin/python benchmarks/env_throughput.py --quick    # fewer, shorter repeats
    .venv/bin/python benchmarks/env_throughput.py --profile  # pyinstrument profiles of the hot loops
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import textenv  # noqa: E402,F401  (registers MossText-v0)

# CPU seconds of this (single-threaded) process: on a shared machine, time other jobs hold the core is not counted.
# On an idle machine it equals wall-clock time.
clock = time.process_time

ENV_ID = "MossText-v0"
NUM_ENVS = 64
EOS_PROBABILITY = 1 / 8
LENGTHS = (32, 128, 512)


@dataclass
class Settings:
    """How long and how often each side of a comparison is timed."""

    repeats: int = 5  # interleaved timings per side; the median is reported
    single_steps: int = 20_000  # steps per timing of a single env
    vector_steps: int = 600  # vector steps per timing (x 64 env-steps)


# -- action streams ----------------------------------------------------------------------------------------
def token_actions(rng: np.random.Generator, shape: tuple[int, ...], vocab: int, eos: int, eos_frequent: bool):
    """Uniform random token ids; with ``eos_frequent``, EOS with probability 1/8."""
    actions = rng.integers(0, vocab, size=shape)
    if eos_frequent:
        actions[rng.random(shape) < EOS_PROBABILITY] = eos
    return actions


# -- timed loops -------------------------------------------------------------------------------------------
def single_env_loop(env: gym.Env, actions: list[int]) -> float:
    """Seconds for ``len(actions)`` steps of one env, resetting when an episode ends."""
    env.reset(seed=0)
    step, reset = env.step, env.reset
    start = clock()
    for action in actions:
        _, _, terminated, truncated, _ = step(action)
        if terminated or truncated:
            reset()
    return clock() - start


def vector_env_loop(env: gym.vector.VectorEnv, actions: np.ndarray) -> float:
    """Seconds for ``len(actions)`` steps of a vector env (it resets finished rows itself)."""
    env.reset(seed=0)
    step = env.step
    start = clock()
    for batch in actions:
        step(batch)
    return clock() - start


def stepping_loop(env: gym.vector.VectorEnv, actions: np.ndarray) -> float:
    """Seconds for the steps of ``actions`` (episodes, steps, envs) that end no episode: each block of
    ``steps < max_new_tokens`` EOS-free steps starts from an untimed reset. The env's per-step overhead alone."""
    total = 0.0
    step = env.step
    for episode, block in enumerate(actions):
        env.reset(seed=episode)
        start = clock()
        for batch in block:
            step(batch)
        total += clock() - start
    return total


def interleaved(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, timed alternately after one warm-up call each."""
    a(), b()
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(a())
        times_b.append(b())
    return statistics.median(times_a), statistics.median(times_b)


# -- the comparisons ---------------------------------------------------------------------------------------
def p1_single_vs_cartpole(settings: Settings, eos_frequent: bool) -> dict[str, float]:
    text_env = gym.make(ENV_ID, reward="keyword")
    cartpole = gym.make("CartPole-v1")
    rng = np.random.default_rng(0)
    n = settings.single_steps
    vocab, eos = text_env.action_space.n, text_env.unwrapped.task.eos_token_ids[0]
    text_actions = token_actions(rng, (n,), vocab, eos, eos_frequent).tolist()
    cart_actions = rng.integers(0, 2, size=n).tolist()
    t_text, t_cart = interleaved(
        lambda: single_env_loop(text_env, text_actions),
        lambda: single_env_loop(cartpole, cart_actions),
        settings.repeats,
    )
    return {"textenv": n / t_text, "baseline": n / t_cart}


def make_pair(reward: str, num_envs: int, **kwargs) -> tuple[gym.vector.VectorEnv, gym.vector.VectorEnv]:
    native = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", reward=reward, **kwargs)
    sync = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="sync", reward=reward, **kwargs)
    return native, sync


def p2_native_vs_sync(settings: Settings, reward: str, eos_frequent: bool) -> dict[str, float]:
    native, sync = make_pair(reward, NUM_ENVS)
    task = native.task
    rng = np.random.default_rng(0)
    n = settings.vector_steps
    actions = token_actions(rng, (n, NUM_ENVS), task.vocab_size, task.eos_token_ids[0], eos_frequent)
    # SyncVectorEnv is ~50x slower per step: time it on fewer steps (still many whole episodes)
    sync_actions = actions[: max(n // 8, 3 * task.max_new_tokens)]
    t_native, t_sync = interleaved(
        lambda: vector_env_loop(native, actions), lambda: vector_env_loop(sync, sync_actions), settings.repeats
    )
    return {"textenv": n * NUM_ENVS / t_native, "baseline": len(sync_actions) * NUM_ENVS / t_sync}


def p2_stepping_only(settings: Settings) -> dict[str, float]:
    """P2 without episode ends: what the native env saves per step, with no decode or reward in the window."""
    native, sync = make_pair("keyword", NUM_ENVS)
    task = native.task
    steps = task.max_new_tokens - 1
    rng = np.random.default_rng(0)
    episodes = max(settings.vector_steps // steps, 4)
    actions = rng.integers(3, task.vocab_size, size=(episodes, steps, NUM_ENVS))  # ids >= 3: never EOS (2)
    sync_actions = actions[: max(episodes // 8, 2)]
    t_native, t_sync = interleaved(
        lambda: stepping_loop(native, actions), lambda: stepping_loop(sync, sync_actions), settings.repeats
    )
    return {
        "textenv": actions[..., 0].size * NUM_ENVS / t_native,
        "baseline": sync_actions[..., 0].size * NUM_ENVS / t_sync,
    }


def per_episode_costs(repeats: int = 200) -> dict[str, float]:
    """Microseconds per finished episode of the work both sides do alike: decode, reward (1 call per completion
    as N single envs do, or 1 call for 64 as the native env does)."""
    env = gym.make(ENV_ID, reward="keyword").unwrapped
    task = env.task
    rng = np.random.default_rng(0)
    completions_ids = [rng.integers(3, task.vocab_size, task.max_new_tokens).tolist() for _ in range(NUM_ENVS)]
    completions = [task.decode(ids) for ids in completions_ids]
    prompts = [p.text for p in task.prompts[:NUM_ENVS]]

    def per_item(fn: Callable[[], object], items: int) -> float:
        fn()
        start = clock()
        for _ in range(repeats):
            fn()
        return 1e6 * (clock() - start) / (repeats * items)

    costs = {"decode": per_item(lambda: [task.decode(ids) for ids in completions_ids], NUM_ENVS)}
    import rewards

    for name in ("keyword", "sentiment"):
        model = rewards.make(name)
        costs[f"{name} x1"] = per_item(
            lambda: [model.score([p], [c], completion_ids=[i], references=[None])
                     for p, c, i in zip(prompts, completions, completions_ids)],
            NUM_ENVS,
        )
        costs[f"{name} x64"] = per_item(
            lambda: model.score(prompts, completions, completion_ids=completions_ids, references=[None] * NUM_ENVS),
            NUM_ENVS,
        )
    return costs


def length_scaling(settings: Settings) -> list[dict[str, float]]:
    """Microseconds per step as ``max_new_tokens`` grows: with episode ends amortised, without them (the step
    alone), the observation copy's share, and the single env."""
    rows = []
    rng = np.random.default_rng(0)
    for length in LENGTHS:
        native = gym.make_vec(
            ENV_ID, num_envs=NUM_ENVS, vectorization_mode="vector_entry_point", reward="keyword", max_new_tokens=length
        )
        single = gym.make(ENV_ID, reward="keyword", max_new_tokens=length)
        task = native.task
        eos = task.eos_token_ids[0]
        n_vec = max(settings.vector_steps, 2 * length)  # at least two whole episodes per timing
        vec_actions = token_actions(rng, (n_vec, NUM_ENVS), task.vocab_size, eos, False)
        single_actions = token_actions(rng, (settings.single_steps,), task.vocab_size, eos, False).tolist()
        steps = min(length - 1, 64)  # EOS-free steps after a reset: no episode ends
        episodes = max(settings.vector_steps // steps, 4)
        stepping_actions = rng.integers(3, task.vocab_size, size=(episodes, steps, NUM_ENVS))
        t_vec, t_single = interleaved(
            lambda: vector_env_loop(native, vec_actions),
            lambda: single_env_loop(single, single_actions),
            settings.repeats,
        )
        t_stepping = statistics.median(stepping_loop(native, stepping_actions) for _ in range(settings.repeats))
        native.reset(seed=0)
        copies = 2000
        start = clock()
        for _ in range(copies):
            native._observation()
        t_copy = (clock() - start) / copies
        rows.append(
            {
                "max_new_tokens": length,
                "vector_us": 1e6 * t_vec / n_vec,
                "stepping_us": 1e6 * t_stepping / (episodes * steps),
                "copy_us": 1e6 * t_copy,
                "single_us": 1e6 * t_single / len(single_actions),
                "bytes_per_env": (native._input_ids.nbytes + native._attention_mask.nbytes) / NUM_ENVS,
            }
        )
    return rows


# -- profiling ---------------------------------------------------------------------------------------------
def profile(settings: Settings) -> None:
    from pyinstrument import Profiler

    rng = np.random.default_rng(0)
    single = gym.make(ENV_ID, reward="keyword")
    task = single.unwrapped.task
    single_actions = token_actions(rng, (settings.single_steps,), task.vocab_size, task.eos_token_ids[0], True).tolist()
    native = gym.make_vec(ENV_ID, num_envs=NUM_ENVS, vectorization_mode="vector_entry_point", reward="sentiment")
    vec_actions = token_actions(rng, (settings.vector_steps, NUM_ENVS), task.vocab_size, task.eos_token_ids[0], True)
    for title, run in (
        ("single env, keyword reward, EOS-frequent actions", lambda: single_env_loop(single, single_actions)),
        (f"native vector env x{NUM_ENVS}, sentiment, EOS-frequent", lambda: vector_env_loop(native, vec_actions)),
    ):
        run()  # warm up: prompts tokenised once, reward models built
        profiler = Profiler(interval=0.0002)
        profiler.start()
        run()
        profiler.stop()
        print(f"\n### profile: {title}")
        print(profiler.output_text(unicode=False, color=False, show_all=False))


# -- report ------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 shorter repeats per side")
    parser.add_argument("--profile", action="store_true", help="print pyinstrument profiles instead")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    settings = Settings(repeats=3, single_steps=8_000, vector_steps=300) if args.quick else Settings()
    if args.profile:
        profile(settings)
        return

    print(f"# textenv environment throughput ({'quick' if args.quick else 'full'} run, median of {settings.repeats})\n")
    print("| comparison | actions | textenv | baseline | ratio | target |")
    print("|---|---|---:|---:|---:|---:|")
    for eos_frequent in (False, True):
        r = p1_single_vs_cartpole(settings, eos_frequent)
        print(
            f"| P1 MossText-v0 (keyword) vs CartPole-v1, steps/s | {'EOS 1/8' if eos_frequent else 'uniform'} "
            f"| {r['textenv']:,.0f} | {r['baseline']:,.0f} | {r['textenv'] / r['baseline']:.2f}x | >= 0.5x |"
        )
    for label, reward in (("P2", "keyword"), ("P3", "sentiment")):
        for eos_frequent in (False, True):
            r = p2_native_vs_sync(settings, reward, eos_frequent)
            print(
                f"| {label} native x{NUM_ENVS} vs SyncVectorEnv x{NUM_ENVS} ({reward}), env-steps/s "
                f"| {'EOS 1/8' if eos_frequent else 'uniform'} "
                f"| {r['textenv']:,.0f} | {r['baseline']:,.0f} | {r['textenv'] / r['baseline']:.1f}x | >= 10x |"
            )

    r = p2_stepping_only(settings)
    print(
        f"| P2 stepping only: steps that end no episode (keyword) | no EOS | {r['textenv']:,.0f} "
        f"| {r['baseline']:,.0f} | {r['textenv'] / r['baseline']:.1f}x | - |"
    )

    costs = per_episode_costs()
    print("\n## work per finished episode that both sides do alike (us per completion, 24 random tokens)\n")
    print("| decode | keyword reward, 1 call each | keyword, 1 call for 64 | sentiment (VADER), 1 call each "
          "| sentiment, 1 call for 64 |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {costs['decode']:.1f} | {costs['keyword x1']:.1f} | {costs['keyword x64']:.1f} "
        f"| {costs['sentiment x1']:.1f} | {costs['sentiment x64']:.1f} |"
    )

    print(f"\n## per-step cost vs max_new_tokens (keyword reward, uniform actions, native x{NUM_ENVS})\n")
    print("| max_new_tokens | obs bytes/env | native step, episode ends amortised (us) | native step, no episode end "
          "(us) | of which obs copy (us) | single env step (us) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in length_scaling(settings):
        print(
            f"| {row['max_new_tokens']} | {row['bytes_per_env']:,.0f} | {row['vector_us']:.1f} "
            f"| {row['stepping_us']:.1f} | {row['copy_us']:.1f} | {row['single_us']:.2f} |"
        )


if __name__ == "__main__":
    main()
