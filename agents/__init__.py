"""Agents for textenv environments.

* :mod:`agents.lm_policy` -- a causal LM acting in the env (KV-cached sampling).
* :mod:`agents.sb3` -- stable-baselines3 / sb3-contrib agents: :func:`agents.make_sb3` builds one.
* :mod:`agents.lm` -- LM-PPO, GRPO and RLOO trainers.
* :mod:`agents.runner`, :mod:`agents.compare`, :mod:`agents.evaluate` -- runs, comparisons and held-out evaluation
  in run directories (:mod:`agents.checkpoint`: their checkpoints; :mod:`agents.untrusted`: what a run directory
  may ask for).
* :mod:`agents.cli` -- the ``textenv`` command line (``python -m agents``), the top layer.

``import agents`` stays light: stable-baselines3 is imported on first use of ``agents.make_sb3``.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "make_sb3":
        from agents.sb3.factory import make_sb3

        return make_sb3
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
