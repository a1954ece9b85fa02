"""The frozen trunk: the policy's frozen lower blocks run once per rollout; the reference forward and every
minibatch's loss forward run only the blocks above them, with the same log-probs and gradients. The trainer decides
it (``experimental.share_frozen_trunk=False`` forces the full forwards, for comparison)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_lm_agents import FAST, env_kwargs, make_vec

from agents.lm import GRPOConfig, GRPOTrainer, LMPPOConfig, LMPPOTrainer
from agents.lm.core import masked_logprobs
from agents.lm.frozen_trunk import frozen_leading_blocks, same_frozen_blocks, trunk_states
from agents.lm.rollout import RolloutEngine, completion_logits
from agents.modeling.model_blocks import transformer_blocks
from textenv.models import make_tiny_causal_lm

FROZEN = 2  # of 4 blocks


def frozen_below_top(model, frozen=FROZEN):
    """``model`` with its input embeddings (tied to the LM head) and first ``frozen`` blocks frozen."""
    model.requires_grad_(False)
    for block in transformer_blocks(model)[frozen:]:
        block.requires_grad_(True)
    model.base_model.norm.requires_grad_(True)
    return model


def tiny_top_trained():
    return frozen_below_top(make_tiny_causal_lm(seed=0, num_hidden_layers=4))


def test_frozen_leading_blocks_counts_the_blocks_below_the_first_trained_one():
    model = make_tiny_causal_lm(seed=0, num_hidden_layers=4)
    assert frozen_leading_blocks(model) == 0  # everything trains
    assert frozen_leading_blocks(frozen_below_top(model)) == FROZEN
    transformer_blocks(model)[0].requires_grad_(True)
    assert frozen_leading_blocks(model) == 0
    frozen_below_top(model, 3)
    model.get_input_embeddings().requires_grad_(True)  # the embeddings train: nothing below block 0 is fixed
    assert frozen_leading_blocks(model) == 0


@pytest.mark.parametrize("share_prompts", [False, True])
def test_the_top_blocks_on_the_trunk_give_the_full_forwards_logits_and_gradients(share_prompts):
    model = tiny_top_trained()
    engine = RolloutEngine(make_vec(num_envs=8), model)
    # repeats out of order, prompts of different lengths, one row alone with its prompt
    prompt_indices = np.array([0, 0, 1, 2, 1, 0, 2, 3])
    rollout = engine.collect(torch.Generator().manual_seed(0), seed=1, prompt_indices=prompt_indices)
    rollout.trunk = trunk_states(model, rollout.input_ids, rollout.attention_mask, rollout.prompt_slots, FROZEN,
                                 share_prompts)
    weights = torch.randn(rollout.mask.shape, generator=torch.Generator().manual_seed(1))

    def logits_and_grads(batch, trunk):
        model.zero_grad(set_to_none=True)
        logits = completion_logits(model, batch, 0.7, prompt_model=model, trunk=trunk)
        rows, columns = batch.mask.shape
        (masked_logprobs(logits.float(), batch.completion_ids, batch.mask) * weights[:rows, :columns]).sum().backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
        return logits.detach(), grads

    for batch in (rollout, rollout.select([5, 2, 7])):  # the whole batch, and a minibatch of it
        full_logits, full_grads = logits_and_grads(batch, None)
        top_logits, top_grads = logits_and_grads(batch, batch.trunk)
        torch.testing.assert_close(top_logits, full_logits, atol=1e-5, rtol=1e-5)
        assert full_grads.keys() == top_grads.keys() and len(full_grads) > 0
        for name, grad in full_grads.items():
            torch.testing.assert_close(top_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize(
    "prompt_indices", [[0, 0, 1, 2, 1, 0, 2, 3], [0, 1, 2, 3, 3, 2, 1, 0], [3, 1, 2, 0, 3, 2, 1, 0]]
)
def test_the_states_kept_while_sampling_equal_a_forward_of_the_frozen_blocks(prompt_indices):
    model = tiny_top_trained()
    engine = RolloutEngine(make_vec(num_envs=8), model)
    engine.keep_states_of_blocks = FROZEN
    rollout = engine.collect(torch.Generator().manual_seed(2), seed=3, prompt_indices=np.array(prompt_indices))
    assert rollout.trunk is not None and rollout.trunk.blocks == FROZEN
    assert bool((rollout.mask.sum(1) < rollout.mask.shape[1]).any())  # some rows ended early (EOS)
    forward = trunk_states(model, rollout.input_ids, rollout.attention_mask, rollout.prompt_slots, FROZEN, False)
    assert rollout.trunk.first == forward.first and rollout.trunk.states.shape == forward.states.shape
    real = rollout.attention_mask[:, forward.first : -1].bool()  # padding columns hold anything
    torch.testing.assert_close(rollout.trunk.states[real], forward.states[real], atol=2e-5, rtol=1e-5)
    engine.keep_states_of_blocks = 0
    assert engine.collect(torch.Generator().manual_seed(2), seed=3).trunk is None


def calls_per_block(model):
    """Forward calls of each block of ``model``, outside rollout collection (the counter is paused there)."""
    counts = {"paused": False, "calls": [0] * len(transformer_blocks(model))}

    def counter(index):
        def count(*_):
            if not counts["paused"]:
                counts["calls"][index] += 1
        return count

    for index, block in enumerate(transformer_blocks(model)):
        block.register_forward_pre_hook(counter(index))
    return counts


@pytest.mark.parametrize("agent", ["grpo", "lm-ppo"])
def test_training_with_the_trunk_shared_skips_the_frozen_blocks_after_sampling_and_reaches_the_same_weights(agent):
    def trainer(share):
        # trainable_blocks freezes the policy's (and the critic's) lower blocks; the trainer then shares them
        common = {**FAST, "seed": 0, "trainable_blocks": 4 - FROZEN, "experimental": {"share_frozen_trunk": share}}
        model = make_tiny_causal_lm(seed=0, num_hidden_layers=4)
        if agent == "grpo":
            config = GRPOConfig(**common, num_generations=4, beta=0.04)
            return GRPOTrainer("MossText-v0", model, config, env_kwargs=env_kwargs())
        config = LMPPOConfig(**common, critic_learning_rate=2e-3)
        return LMPPOTrainer("MossText-v0", model, config, env_kwargs=env_kwargs())

    shared, full = trainer(True), trainer(False)
    counts = {}
    for name, run in (("shared", shared), ("full", full)):
        run.train(1)  # the first round also runs the exactness check
        counts[name] = calls_per_block(run.unwrapped_policy)
        if agent == "lm-ppo":
            counts[name + " critic"] = calls_per_block(run.accelerator.unwrap_model(run.value_model).backbone)
        collect = run.engine.collect

        def paused_collect(*args, _collect=collect, _name=name, **kwargs):
            for key, value in counts.items():
                value["paused"] = key.startswith(_name)
            try:
                return _collect(*args, **kwargs)
            finally:
                for value in counts.values():
                    value["paused"] = False

        run.engine.collect = paused_collect
        run.train(1)
    assert shared.shared_trunk_blocks == FROZEN and full.shared_trunk_blocks == 0
    # shared: the frozen blocks' output was kept while sampling, so they never run again; the reference (a
    # separate model) runs none of the policy's blocks
    assert counts["shared"]["calls"][:FROZEN] == [0] * FROZEN
    top_calls = counts["shared"]["calls"][FROZEN]
    assert top_calls == FAST["num_minibatches"] * FAST["update_epochs"]  # one forward per optimiser step
    full_calls = counts["full"]["calls"]
    assert full_calls == [full_calls[0]] * len(full_calls) and full_calls[0] >= top_calls  # every forward, every block
    if agent == "lm-ppo":  # the critic's copy of the frozen blocks: the old values and each minibatch's run the top
        assert counts["shared critic"]["calls"][:FROZEN] == [0] * FROZEN
        assert counts["shared critic"]["calls"][FROZEN] == 1 + top_calls
        critic_calls = counts["full critic"]["calls"]
        assert critic_calls == [critic_calls[0]] * len(critic_calls) and critic_calls[0] == 1 + top_calls
        ours, theirs = (run.accelerator.unwrap_model(run.value_model).state_dict() for run in (shared, full))
        for name, weight in theirs.items():
            torch.testing.assert_close(ours[name], weight, atol=2e-4, rtol=1e-3, msg=name)
    ours, theirs = shared.unwrapped_policy.state_dict(), full.unwrapped_policy.state_dict()
    for name, weight in theirs.items():
        torch.testing.assert_close(ours[name], weight, atol=2e-4, rtol=1e-3, msg=name)
    assert any(not torch.equal(weight, tiny_top_trained().state_dict()[name]) for name, weight in ours.items())


def test_nothing_is_shared_when_the_whole_policy_trains_or_the_reference_differs():
    config = GRPOConfig(**{**FAST, "num_generations": 4, "seed": 0, "beta": 0.04})
    whole_model = make_tiny_causal_lm(seed=0, num_hidden_layers=4)
    whole = GRPOTrainer("MossText-v0", whole_model, config, env_kwargs=env_kwargs())
    whole.train(1)
    assert whole.shared_trunk_blocks == 0

    top = GRPOTrainer("MossText-v0", tiny_top_trained(), config, env_kwargs=env_kwargs())
    top.train(1)
    assert top.shared_trunk_blocks == FROZEN
    assert same_frozen_blocks(top.unwrapped_policy, top.reference, FROZEN)
    with torch.no_grad():  # e.g. a resumed run given another model than the one it started from
        next(transformer_blocks(top.reference)[1].parameters()).add_(1e-3)
    assert not same_frozen_blocks(top.unwrapped_policy, top.reference, FROZEN)
    top.train(1)
    assert top.shared_trunk_blocks == 0


def test_a_model_that_adds_position_embeddings_to_its_inputs_runs_the_full_forward_with_a_warning():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=49152, n_positions=64, n_embd=32, n_layer=3, n_head=2,
                                      eos_token_id=2, bos_token_id=1))
    gpt2.requires_grad_(False)
    for block in gpt2.transformer.h[1:]:
        block.requires_grad_(True)
    config = GRPOConfig(**{**FAST, "num_generations": 4, "seed": 0, "beta": 0.04})
    trainer = GRPOTrainer("MossText-v0", gpt2, config, env_kwargs=env_kwargs())
    assert frozen_leading_blocks(trainer.unwrapped_policy) == 1
    with pytest.warns(UserWarning, match="frozen trunk: GPT2LMHeadModel's log-probs"):
        trainer.train(1)
    assert trainer.shared_trunk_blocks == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checked once: no second warning
        trainer.train(1)
    assert trainer.shared_trunk_blocks == 0


def test_multi_turn_rollouts_get_the_trunk_from_one_forward_with_the_full_forwards_log_probs():
    """The env inserts the user's turns: the cache's columns are not the rollout's, so the engine keeps nothing
    and the trainer runs the frozen blocks once over the finished sequences instead."""
    from test_lm_multiturn import env_kwargs as chat_kwargs

    config = LMPPOConfig(**{**FAST, "num_envs": 8})
    trainer = LMPPOTrainer("MossChat-v0", tiny_top_trained(), config, env_kwargs=chat_kwargs())
    trainer.train(1)
    rollout = trainer.collect()
    inserted = (rollout.attention_mask[:, rollout.prompt_slots :] > 0) & (rollout.mask == 0)
    assert bool(inserted.any()) and trainer.shared_trunk_blocks == FROZEN and rollout.trunk is not None
    policy = trainer.unwrapped_policy
    with torch.no_grad():
        full = completion_logits(policy, rollout)
        top = completion_logits(policy, rollout, prompt_model=policy, trunk=rollout.trunk)
    real = rollout.mask.bool()
    torch.testing.assert_close(top[real], full[real], atol=1e-5, rtol=1e-5)


def test_a_critic_with_other_lower_blocks_runs_them_itself():
    """A value model whose frozen blocks are not the policy's (here: another model's backbone, as a critic from a
    reward-model directory would be) reads nothing from the policy's trunk."""
    from agents.lm.value_model import ValueModel

    critic = ValueModel.from_policy(tiny_top_trained())
    with torch.no_grad():
        next(critic.backbone.parameters()).add_(1e-3)  # its input embeddings differ from the policy's
    frozen_below_top(critic.backbone)
    config = LMPPOConfig(**{**FAST, "critic_learning_rate": 2e-3, "seed": 0})
    trainer = LMPPOTrainer("MossText-v0", tiny_top_trained(), config, env_kwargs=env_kwargs(), value_model=critic)
    trainer.train(1)
    assert trainer.shared_trunk_blocks == FROZEN  # the policy and its reference still share theirs
    counts = calls_per_block(critic.backbone)
    rollout = trainer.collect()
    with torch.no_grad():
        values = trainer.predict_values(critic, rollout)
        rollout.trunk = None
        torch.testing.assert_close(values, trainer.predict_values(critic, rollout), atol=0, rtol=0)
    assert counts["calls"] == [2] * 4  # every block, in both calls
