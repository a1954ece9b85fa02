"""Reward-model overoptimization on a CPU (Gao, Schulman, Hilton 2022): proxy reward models trained on N
gold-labelled pairs, best-of-n and RL (GRPO, LM-PPO) against each, gold and proxy against sqrt(KL), with fits.

    python examples/overoptimization.py --out runs/overoptimization          # the default run (~1 h, 2 cores)
    python examples/overoptimization.py --smoke --out /tmp/overopt_smoke     # tiny model, seconds
    textenv overoptimization ...                                             # the same from the CLI

See agents/reward_model/overoptimization.py for the parts and experiments/overoptimization/REPORT.md for measured
runs.
"""

from agents.reward_model.overoptimization import main

if __name__ == "__main__":
    main()
