"""The main demo: real SmolLM2-135M-Instruct continuations of MossText-v0 prompts, scored by VADER.

The LM acts in the Gymnasium env one token per step (prefill once, then its KV cache), exactly as an RL
agent would. Run with ``make demo`` (does all set-up) or ``python examples/demo.py --episodes 4``.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym

import textenv
from agents.modeling.lm_policy import CausalLMPolicy, run_episode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args()

    env = gym.make("MossText-v0")
    model = textenv.load_causal_lm(textenv.DEFAULT_MODEL)
    policy = CausalLMPolicy(model, env.unwrapped.task.max_prompt_tokens, temperature=args.temperature, seed=args.seed)
    started = time.perf_counter()
    rewards = []
    for episode in range(args.episodes):
        result = run_episode(env, policy, seed=args.seed + episode)
        rewards.append(result["reward"])
        end = "EOS" if result["terminated"] else "token budget"
        print(f"--- episode {episode} ({len(result['completion_ids'])} tokens, ended by {end})")
        print(f"prompt:     {result['prompt']}")
        print(f"completion: {result['completion'].strip()}")
        print(f"reward:     {result['reward']:+.3f}  components: {result['reward_components']}")
    elapsed = time.perf_counter() - started
    print(f"\nmean reward {sum(rewards) / len(rewards):+.3f} over {args.episodes} episodes in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
