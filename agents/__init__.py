"""Agents for textenv environments, by purpose:

* :mod:`agents.sb3` -- stable-baselines3 / sb3-contrib agents: :func:`agents.make_sb3` builds one.
* :mod:`agents.rllib` -- Ray RLlib's PPO on textenv ids, on many EnvRunners (the ``rllib`` extra).
* :mod:`agents.lm` -- LM-PPO, GRPO and RLOO trainers that fine-tune a causal LM.
* :mod:`agents.reward_model` -- reward models trained from preference pairs, and the overoptimization experiment.
* :mod:`agents.preferences` -- preference pairs sampled from an env, and human labelling in a terminal.
* :mod:`agents.modeling` -- KV-cached decoding, a causal LM acting in an env, running a model block by block.
* :mod:`agents.runs` -- run directories: one training run of any agent, comparisons, held-out evaluation, what a
  run directory may ask for.
* :mod:`agents.checkpoint` -- atomic checkpoint directories, used by every trainer.
* :mod:`agents.cli` -- the ``textenv`` command line (``python -m agents``), the top layer.

``import agents`` stays light: stable-baselines3 is imported on first use of ``agents.make_sb3``.
"""

from __future__ import annotations

from typing import Any

from agents import _moved

_moved.install()


def __getattr__(name: str) -> Any:
    if name == "make_sb3":
        from agents.sb3.factory import make_sb3

        return make_sb3
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
