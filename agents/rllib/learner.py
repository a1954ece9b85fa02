"""RLlib's PPO learner with SB3's advantage normalisation: per minibatch, over the real timesteps only.

RLlib (2.60) standardises the advantages once over the whole train batch, and that batch holds one artificial
timestep per episode chunk (``AddOneTsToEpisodesAndTruncate`` appends it to bootstrap the value; the loss masks it
out with ``Columns.LOSS_MASK``) whose advantage is not a real one (reported upstream as "Possible issue with
advantage standardization in general advantage estimation connector"). On textenv's short
episodes these rows are a large share of the batch (one in five on MossWords-v0's 4-token episodes), so the real
rows' advantages no longer have mean 0 and PPO learns markedly less per step than SB3's with the same settings
(experiments/rllib_vs_sb3). :class:`MaskedAdvantagePPOLearner` re-standardises each minibatch's advantages over its
unmasked rows before RLlib's loss, which is SB3's ``normalize_advantage``.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing


class MaskedAdvantagePPOLearner(PPOTorchLearner):
    """``PPOTorchLearner`` whose loss sees each minibatch's advantages standardised over the rows the loss counts
    (mean 0, standard deviation 1; left as they are when fewer than two rows count)."""

    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> Any:
        advantages = batch[Postprocessing.ADVANTAGES]
        mask = batch.get(Columns.LOSS_MASK)
        real = advantages if mask is None else advantages[mask]
        if real.numel() > 1:
            batch[Postprocessing.ADVANTAGES] = (advantages - real.mean()) / (real.std() + 1e-8)
        return super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
