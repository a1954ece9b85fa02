"""The policy's frozen lower blocks, run once per rollout: while sampling. The reference forward, the value model (a
copy of the policy frozen alike) and every minibatch's loss forward run only the blocks above them.

When the policy trains only its top blocks (its input embeddings and lower blocks frozen, as
``examples/rlhf_sentiment.py`` does with the top 8), the hidden state that enters its first trained block is a
fixed function of each sequence. Sampling computes it for every prompt and completion token anyway, so the rollout
engine keeps it (:class:`TrunkStateKeeper`, a forward pre-hook on that block) and the rollout carries it
(:class:`TrunkStates`). The frozen reference is a copy of the policy as passed in, and LM-PPO's value model a copy of
its backbone, so their lower blocks would compute the same state: their forwards, and each loss forward of the policy,
start from it. For SmolLM2 training its top 8 of 30 blocks, the lower 22 never run after sampling. Where the engine
cannot keep the states (a multi-turn env inserts tokens, so the KV cache's columns are not the rollout's), the trainer
runs the frozen blocks once over the finished sequences instead (:func:`trunk_states`).

It is exact, to float rounding (the same rounding as the sampling log-probs against a fresh forward), when:
* the backbone's forward adds nothing to ``inputs_embeds`` (rotary-position models: Llama, Mistral, Qwen, SmolLM2;
  GPT-2's absolute position embeddings and Gemma's embedding scale fail it): the trainer compares the policy's
  log-probs on the first rollout both ways (:func:`matches_full_forward`) and, if they differ, runs the full forward
  from then on, with a warning;
* the reference's (and the value model's) embeddings and frozen blocks equal the policy's (:func:`same_frozen_blocks`,
  again after any write to one of those weights: a resumed run given another model, a critic from a reward model,
  a block unfrozen and refrozen). Where they differ, that model runs all its blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from agents.modeling.decoding import KVDecoder, distinct_prompts, leading_padding, lm_forward
from agents.modeling.model_blocks import blocks_cut_to, final_norm, states_leaving_first_blocks, transformer_blocks


@dataclass
class TrunkStates:
    """The hidden states entering block ``blocks`` of the policy, for the columns ``first:`` of a rollout's
    sequences (without the last column, which predicts nothing)."""

    states: torch.Tensor  # (N, W, H)
    first: int  # the rollout column of states[:, 0]: the columns before it are padding in every row
    blocks: int  # how many frozen blocks produced them

    def select(self, rows: torch.Tensor, width: int) -> TrunkStates:
        """The states of ``rows``, up to rollout column ``width`` (exclusive)."""
        return TrunkStates(self.states[rows, : width - self.first], self.first, self.blocks)

    def columns(self, attention_mask: torch.Tensor, prompt_slots: int, width: int) -> tuple[torch.Tensor, int]:
        """The states of rollout columns ``first .. width`` and ``first``: the first column that is not padding in
        every row of ``attention_mask`` (the rollout's, or a minibatch's: never before :attr:`first`)."""
        first = leading_padding(attention_mask[:, :prompt_slots])
        return self.states[:, first - self.first : width - self.first], first


class TrunkStateKeeper:
    """Keeps the hidden states entering block ``blocks`` of ``model`` at each of its forwards (a forward pre-hook)
    while the rollout engine samples: one prefill of the prompts, then one call per sampled token. :meth:`close`
    removes the hook; :meth:`states` assembles the kept states in the rollout's columns."""

    def __init__(self, model: Any, blocks: int) -> None:
        self.blocks = blocks
        self.kept: list[torch.Tensor] = []
        self.single_token_steps = True  # the engine sets False when it appends several tokens in a step
        layers = transformer_blocks(model)
        target = layers[blocks] if blocks < len(layers) else final_norm(model.base_model)
        self._handle = target.register_forward_pre_hook(self._keep, with_kwargs=True)

    def _keep(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.kept.append((args[0] if args else kwargs["hidden_states"]).detach())

    def close(self) -> None:
        self._handle.remove()

    def states(self, first: int, prompt_rows: torch.Tensor | None, t_max: int) -> TrunkStates:
        """The kept states of columns ``first .. P + t_max - 1``: the prefill's (``prompt_rows``: the prefilled row
        that holds each row's prompt, when distinct prompts were prefilled once), then those of the tokens sampled
        at steps ``0 .. t_max - 2``, each appended to the cache in its own call."""
        if len(self.kept) < t_max:
            raise RuntimeError(f"kept {len(self.kept)} forwards' states, need {t_max} (the prefill and one per token)")
        prompt = self.kept[0] if prompt_rows is None else self.kept[0][prompt_rows]
        return TrunkStates(torch.cat([prompt, *self.kept[1:t_max]], dim=1), first, self.blocks)


def frozen_leading_blocks(model: Any) -> int:
    """How many of ``model``'s first transformer blocks have no trainable parameter; 0 when its input embeddings
    train (or it has no block list this module can find)."""
    if any(p.requires_grad for p in model.get_input_embeddings().parameters()):
        return 0
    try:
        blocks = transformer_blocks(model)
    except ValueError:
        return 0
    if final_norm(model.base_model) is None:
        return 0
    count = 0
    for block in blocks:
        if any(p.requires_grad for p in block.parameters()):
            break
        count += 1
    return count


def frozen_versions(model: Any, blocks: int) -> tuple[int, ...]:
    """The in-place write counters of ``model``'s input embeddings and first ``blocks`` blocks (any write to a
    weight, ``load_state_dict`` included, moves its counter)."""
    modules = [model.get_input_embeddings(), *transformer_blocks(model)[:blocks]]
    return tuple(p._version for module in modules for p in module.parameters())


def same_frozen_blocks(policy: Any, reference: Any, blocks: int) -> bool:
    """Whether ``reference``'s input embeddings and first ``blocks`` blocks hold exactly ``policy``'s weights."""
    pairs = [(policy.get_input_embeddings(), reference.get_input_embeddings())]
    pairs += list(zip(transformer_blocks(policy)[:blocks], transformer_blocks(reference)[:blocks]))
    for ours, theirs in pairs:
        mine, other = ours.state_dict(), theirs.state_dict()
        if mine.keys() != other.keys():
            return False
        if any(a.shape != other[name].shape or not torch.equal(a, other[name]) for name, a in mine.items()):
            return False
    return True


@torch.no_grad()
def trunk_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_slots: int, blocks: int,
                 share_prompts: bool) -> TrunkStates:
    """The states entering block ``blocks`` of ``model`` (unwrapped, frozen there) for every column of the
    sequences but the last, from the blocks below it only; with ``share_prompts``, each distinct prompt runs once
    and its completions are appended to its KV cache."""
    first = leading_padding(attention_mask[:, :prompt_slots])
    ids, mask = input_ids[:, first:-1], attention_mask[:, first:-1]
    lp = prompt_slots - first
    shared = distinct_prompts(ids[:, :lp], mask[:, :lp]) if share_prompts and ids.shape[1] > lp else None
    with states_leaving_first_blocks(model.base_model, blocks) as captured:
        if shared is None:
            lm_forward(model, ids, mask, use_cache=False)
            states = captured[-1]
        else:
            decoder = KVDecoder(model)
            decoder.prefill(ids[:, :lp], mask[:, :lp], shared)
            prompt_states = captured[-1][shared[1]]
            decoder.append(ids[:, lp:], mask[:, lp:])
            states = torch.cat([prompt_states, captured[-1]], dim=1)
    return TrunkStates(states, first, blocks)


def top_block_logits(model: Any, unwrapped: Any, trunk: TrunkStates, attention_mask: torch.Tensor, prompt_slots: int,
                     t_max: int) -> torch.Tensor:
    """Logits ``(N, t_max, V)`` predicting each completion token, from ``trunk``'s states through the blocks above
    it, the final norm and the LM head of ``model`` (run through ``model``, a DDP wrapper or the model itself, whose
    unwrapped module is ``unwrapped``)."""
    width = prompt_slots + t_max - 1
    states, first = trunk.columns(attention_mask, prompt_slots, width)
    backbone = unwrapped.base_model
    with blocks_cut_to(backbone, trunk.blocks, len(transformer_blocks(unwrapped))):
        out = lm_forward(model, None, attention_mask[:, first:width], inputs_embeds=states, logits_to_keep=t_max,
                         use_cache=False)
    return out.logits


def matches_full_forward(full: torch.Tensor, top: torch.Tensor, mask: torch.Tensor, tolerance: float) -> float | None:
    """``None`` when the trunk path's completion log-probs ``top`` equal the full forward's ``full`` on ``mask`` to
    ``tolerance`` relative to the largest; else the largest difference."""
    difference = float(((full - top).abs() * mask).max())
    return None if difference <= tolerance * (1.0 + float((full.abs() * mask).max())) else difference
