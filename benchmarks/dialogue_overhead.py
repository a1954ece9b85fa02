"""The multi-turn env's cost per step beside the agent's own decoding, measured side by side in one run.

An LM agent (the rollout engine of ``agents.lm``) plays ``MossChat-v0`` against the simulated user for a few batches.
Each batch's wall time splits into:

* agent decoding: the policy's prefill, KV-cached decoding of its tokens and of the inserted tokens, sampling;
* simulated user: the responder's batched ``generate`` calls (one per step in which any row's turn ended);
* env bookkeeping: everything else inside ``env.step`` (token checks, inserting replies, rewards, infos).

Printed: seconds of each, and their ratios to the agent's decoding. The user generates about as many tokens per
turn as the agent writes, so its share is the price of a real LM on the other side; the bookkeeping is the env's own
overhead.

    python benchmarks/dialogue_overhead.py                    # SmolLM2-135M-Instruct as agent and user
    python benchmarks/dialogue_overhead.py --model tiny-random-smollm2 --batches 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import torch

import textenv
from agents.lm.rollout import RolloutEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=textenv.DEFAULT_MODEL, help="agent and simulated user model")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    env = gym.make_vec(
        "MossChat-v0", num_envs=args.num_envs, vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED, responder_kwargs={"model": args.model, "max_new_tokens": 24},
    )
    user = env.unwrapped.task.responder
    respond_seconds = [0.0]
    real_respond = user.respond

    def timed_respond(conversations, rngs):
        started = time.perf_counter()
        try:
            return real_respond(conversations, rngs)
        finally:
            respond_seconds[0] += time.perf_counter() - started

    user.respond = timed_respond
    engine = RolloutEngine(env, textenv.load_causal_lm(args.model).eval(), temperature=1.0)
    engine.collect(torch.Generator().manual_seed(0), seed=0)  # warm-up: loads the user model, first allocations
    respond_seconds[0] = 0.0
    calls_before = user.generate_calls

    agent = env_total = agent_tokens = conversation_slots = steps = 0.0
    for batch in range(args.batches):
        rollout = engine.collect(torch.Generator().manual_seed(batch + 1), seed=batch + 1)
        agent += rollout.generation_seconds
        env_total += rollout.env_seconds
        agent_tokens += rollout.num_tokens
        steps += float(rollout.lengths.max())  # env steps of the batch: its longest agent side
        conversation_slots += float(rollout.attention_mask[:, rollout.prompt_slots :].sum())
    user_seconds = respond_seconds[0]
    bookkeeping = env_total - user_seconds
    result = {
        "model": args.model,
        "num_envs": args.num_envs,
        "batches": args.batches,
        "agent_tokens": agent_tokens,
        "inserted_tokens": conversation_slots - agent_tokens,
        "user_generate_calls": user.generate_calls - calls_before,
        "agent_decoding_seconds": round(agent, 3),
        "simulated_user_seconds": round(user_seconds, 3),
        "env_bookkeeping_seconds": round(bookkeeping, 3),
        "simulated_user_over_agent_decoding": round(user_seconds / agent, 3),
        "env_bookkeeping_over_agent_decoding": round(bookkeeping / agent, 4),
        "env_total_over_agent_decoding": round(env_total / agent, 3),
        "env_steps": steps,
        "env_bookkeeping_ms_per_step": round(1000 * bookkeeping / steps, 3),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
