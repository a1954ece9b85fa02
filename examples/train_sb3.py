"""Train a stable-baselines3 / sb3-contrib agent on a textenv env, save it, and show what it writes.

    python examples/train_sb3.py                                      # PPO on MossWords-v0, ~30 s on one core
    python examples/train_sb3.py --algo dqn --steps 25000
    python examples/train_sb3.py --env MossText-v0 --top-k 8 --steps 12000    # PPO over SmolLM2's top 8
    python examples/train_sb3.py --vec-env sb3                        # SB3's make_vec_env instead of the native env

With ``--top-k K`` the env's ``Discrete(vocab)`` becomes ``Discrete(K)``: action ``i`` writes the ``i``-th most
likely next token under ``--reference-lm`` (one batched, KV-cached LM call per step for all ``--n-envs``
envs, :class:`agents.sb3.TopKVecEnvWrapper`), and the policy's token embeddings start from that LM's and stay
frozen. This is how PPO learns MossText-v0 (SmolLM2's 49152-token vocabulary, VADER sentiment reward).

Measured (torch 1 thread, the other core busy with another job), ``--env MossText-v0 --top-k 8 --steps 60000
--random-episodes 480 --episodes 400``: a random policy over the top 8 scores 0.218 (+- 0.018 s.e.); PPO's mean
VADER reward goes from 0.204 (first 400 episodes) to 0.420 (last 400) in 681 s, 2,520 episodes; curve per tenth
of training 0.21 0.20 0.18 0.22 0.29 0.29 0.37 0.39 0.42 0.41 (tests/test_sb3_moss_text.py, slow, reruns it).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import textenv  # noqa: E402,F401  (registers the ids)
from agents.sb3 import VEC_ENVS, make_sb3, make_sb3_env, make_top_k_sb3  # noqa: E402
from agents.sb3.evaluation import EpisodeRewardRecorder, random_vec_policy_rewards  # noqa: E402
from agents.sb3.factory import ALGORITHMS, algorithm_class  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="ppo", choices=list(ALGORITHMS))
    parser.add_argument("--env", default="MossWords-v0")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-envs", type=int, default=None, help="envs (default 4; 32 with --top-k)")
    parser.add_argument("--vec-env", default="native", choices=VEC_ENVS,
                        help="textenv's native vector env, or SB3's make_vec_env of single envs")
    parser.add_argument("--top-k", type=int, default=0, help="act over the reference LM's top K tokens (0: off)")
    parser.add_argument("--reference-lm", default="smollm2-135m-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="override the env's completion budget")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--episodes", type=int, default=200, help="episodes averaged for the first/last means")
    parser.add_argument("--random-episodes", type=int, default=0,
                        help="first measure a uniformly random policy on the same (wrapped) env for this many episodes")
    parser.add_argument("--save", type=Path, default=None, help="where to save the agent (default runs/sb3/...)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    env_kwargs = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    n_envs = args.n_envs or (32 if args.top_k else 4)
    venv = make_sb3_env(args.env, n_envs, seed=args.seed, env_kwargs=env_kwargs, vec_env=args.vec_env)
    if args.top_k:
        model = make_top_k_sb3(args.algo, venv, args.reference_lm, k=args.top_k, seed=args.seed)
        venv = model.get_env()  # the top-k wrapper around venv
    else:
        model = make_sb3(args.algo, venv, seed=args.seed)
    print(f"{args.algo} on {args.env} ({venv.num_envs} envs, {args.vec_env} vec env, "
          f"action space {venv.action_space}), {args.steps} steps")

    if args.random_episodes:
        random_rewards = random_vec_policy_rewards(venv, args.random_episodes, seed=args.seed + 10_000)
        print(f"random policy on the same env: mean reward {random_rewards.mean():.3f} "
              f"(± {random_rewards.std() / np.sqrt(len(random_rewards)):.3f} s.e., {len(random_rewards)} episodes)")

    recorder = EpisodeRewardRecorder()
    start = time.perf_counter()
    model.learn(args.steps, callback=recorder)
    seconds = time.perf_counter() - start
    first = float(np.mean(recorder.rewards[: args.episodes]))
    last = recorder.last_mean(args.episodes)
    ends, curve = recorder.curve(10, args.steps)
    print(f"trained in {seconds:.0f} s ({args.steps / seconds:.0f} steps/s), {len(recorder.rewards)} episodes")
    print(f"mean reward: first {args.episodes} episodes {first:.3f} -> last {args.episodes} {last:.3f}")
    print("learning curve (mean reward per tenth of training):", np.round(curve, 3).tolist())

    save = args.save or Path("runs/sb3") / f"{args.algo}_{args.env}_seed{args.seed}"
    save.parent.mkdir(parents=True, exist_ok=True)
    model.save(save)
    reloaded = algorithm_class(args.algo).load(save, device="cpu")
    print(f"saved to {save}.zip")
    show_samples(reloaded, venv, n=min(n_envs, 8))


def show_samples(model, venv, n: int) -> None:
    """One episode per env with the reloaded agent (sampling, as in training); print prompt -> completion."""
    obs = venv.reset()
    done_info: list[dict | None] = [None] * venv.num_envs
    state, starts = None, np.ones(venv.num_envs, dtype=bool)
    while any(info is None for info in done_info):
        kwargs = {"state": state, "episode_start": starts} if hasattr(model.policy, "lstm_actor") else {}
        actions, state = model.predict(obs, deterministic=False, **kwargs)
        obs, _, dones, infos = venv.step(actions)
        starts = dones
        for row, (done, info) in enumerate(zip(dones, infos)):
            if done and done_info[row] is None:
                done_info[row] = info
    for info in done_info[:n]:
        print(f"  {info['prompt']!r} -> {info['completion']!r}  reward {info['episode']['r']:.2f}")


if __name__ == "__main__":
    main()
