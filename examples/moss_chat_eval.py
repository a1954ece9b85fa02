"""Evaluate a policy on MossChat-v0 against the SmolLM2 simulated user: uniformly random tokens, or a causal LM
(untuned SmolLM2-135M-Instruct by default) decoding through the LM agents' rollout engine.

    python examples/moss_chat_eval.py --policy random --episodes 16
    python examples/moss_chat_eval.py --policy smollm2-135m-instruct --episodes 16

Prints one JSON object: the episode reward (user's last-reply sentiment minus the length cost), its parts, and a few
conversations. The openings are the last ``--held-out`` of the shipped list (a training run would use the others).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import textenv
from agents.lm.rollout import RolloutEngine

OPENINGS = Path(textenv.__file__).with_name("data") / "moss_chat" / "openings.txt"


def held_out_openings(count: int) -> list[str]:
    return [line for line in OPENINGS.read_text(encoding="utf-8").splitlines() if line.strip()][-count:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="random", help="'random' or a model name/directory")
    parser.add_argument("--episodes", type=int, default=16, help="a multiple of --num-envs")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--held-out", type=int, default=8, help="evaluate on the last N openings")
    parser.add_argument("--user-model", default=textenv.DEFAULT_MODEL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=2, help="conversations to print")
    args = parser.parse_args()
    torch.set_num_threads(1)

    env = gym.make_vec(
        "MossChat-v0", num_envs=args.num_envs, vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED, prompts=held_out_openings(args.held_out),
        responder_kwargs={"model": args.user_model, "max_new_tokens": 24},
    )
    engine = None
    if args.policy != "random":
        engine = RolloutEngine(env, textenv.load_causal_lm(args.policy).eval(), temperature=0.7)
    rng = np.random.default_rng(args.seed)
    allowed = np.flatnonzero(env.unwrapped.task.allowed)
    rewards, parts, conversations = [], {}, []
    started = time.perf_counter()
    for batch in range(args.episodes // args.num_envs):
        seed = args.seed + 1000 * batch
        indices = np.arange(batch * args.num_envs, (batch + 1) * args.num_envs) % args.held_out
        if engine is not None:
            rollout = engine.collect(torch.Generator().manual_seed(seed), seed=seed, prompt_indices=indices)
            rewards += rollout.scores.tolist()
            for name, values in rollout.reward_components.items():
                parts.setdefault(name, []).extend(values.tolist())
            conversations += [f"user: {p}\n{c}" for p, c in zip(rollout.prompts, rollout.completions)]
            continue
        env.reset(seed=seed, options={"prompt_index": indices})
        done = np.zeros(args.num_envs, dtype=bool)
        totals = np.zeros(args.num_envs)
        while not done.all():
            _, step_rewards, terminated, truncated, info = env.step(rng.choice(allowed, size=args.num_envs))
            newly = (terminated | truncated) & ~done
            totals += np.where(done, 0.0, step_rewards)
            for row in np.flatnonzero(newly):
                for name, values in info["reward_components"].items():
                    if not name.startswith("_"):
                        parts.setdefault(name, []).append(float(values[row]))
                c = info["conversation"][row]
                conversations.append("\n".join(f"{m['role']}: {m['content']}" for m in c.messages))
            done |= newly
        rewards += totals.tolist()
    result = {
        "policy": args.policy,
        "episodes": len(rewards),
        "reward_mean": float(np.mean(rewards)),
        "reward_stderr": float(np.std(rewards, ddof=1) / np.sqrt(len(rewards))),
        **{f"{name}_mean": float(np.mean(values)) for name, values in parts.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "conversations": conversations[: args.show],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
