"""LM-PPO, GRPO and RLOO on a tiny random-init model: the rollout engine, learning, the PPO-max switches.

The task: 16 allowed tokens (15 ordinary ones and EOS), 8-token completions, and a reward plugin that counts one
chosen token. The untrained policy writes that token about once in 16 draws (mean reward ~0.4 of a possible 8).
"""

from __future__ import annotations

import copy
import csv

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.lm import (
    GRPOConfig,
    GRPOTrainer,
    LMPPOConfig,
    LMPPOTrainer,
    RLOOConfig,
    RLOOTrainer,
    RolloutEngine,
    ValueModel,
    sequence_logprobs,
)
from textenv.models import TINY_MODEL, load_causal_lm, make_tiny_causal_lm

EOS = 2
ALLOWED = list(range(100, 115)) + [EOS]
TARGET = 107
PROMPTS = ["The movie was", "I walked into the theater and", "Halfway through the second act,", "My friend said"]


def count_target(prompts, completions, completion_ids, **info):
    """Reward: how many times the completion wrote token TARGET."""
    return [float(sum(token == TARGET for token in ids)) for ids in completion_ids]


def env_kwargs(**overrides):
    base = dict(
        tokenizer=TINY_MODEL,
        prompts=PROMPTS,
        reward=count_target,
        max_new_tokens=8,
        max_prompt_tokens=12,
        allowed_token_ids=ALLOWED,
    )
    return {**base, **overrides}


def make_vec(num_envs=6, **overrides):
    return gym.make_vec(
        "MossText-v0",
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
        **env_kwargs(**overrides),
    )


FAST = dict(num_envs=16, learning_rate=2e-3, num_minibatches=2, update_epochs=2, progress_bar=False)


def ppo(seed=0, env_overrides=None, **config):
    cfg = LMPPOConfig(**{**FAST, "critic_learning_rate": 2e-3, "seed": seed, **config})
    return LMPPOTrainer("MossText-v0", TINY_MODEL, cfg, env_kwargs=env_kwargs(**(env_overrides or {})))


def grpo(seed=0, **config):
    cfg = GRPOConfig(**{**FAST, "num_generations": 4, "seed": seed, **config})
    return GRPOTrainer("MossText-v0", TINY_MODEL, cfg, env_kwargs=env_kwargs())


def rloo(seed=0, **config):
    cfg = RLOOConfig(**{**FAST, "num_generations": 4, "seed": seed, **config})
    return RLOOTrainer("MossText-v0", TINY_MODEL, cfg, env_kwargs=env_kwargs())


def policy_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.unwrapped_policy.state_dict().items()}


# -- the rollout engine --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("temperature", "allowed"), [(1.0, None), (0.7, ALLOWED)])
def test_sampling_logprobs_equal_a_fresh_forward(temperature, allowed):
    env = make_vec(num_envs=6, allowed_token_ids=allowed)
    model = load_causal_lm(TINY_MODEL)
    engine = RolloutEngine(env, model, temperature=temperature)
    rollout = engine.collect(torch.Generator().manual_seed(3), seed=5)
    with torch.no_grad():
        fresh = sequence_logprobs(model, rollout, temperature, engine.allowed)
    assert rollout.num_tokens > 6
    torch.testing.assert_close(rollout.logprobs, fresh, atol=2e-5, rtol=0)
    assert torch.all(rollout.logprobs[rollout.mask == 0] == 0)


def test_shared_prompt_forward_gives_the_same_logits_and_gradients_with_fewer_positions():
    """Each distinct prompt forwarded once, its KV cache shared by its rows: the logits and the parameter gradients
    of a loss on them equal those of one forward over the full sequences."""
    from agents.lm.core import masked_logprobs
    from agents.lm.rollout import completion_logits

    model = load_causal_lm(TINY_MODEL)
    engine = RolloutEngine(make_vec(num_envs=8), model)
    # repeats out of order, prompts of different lengths, and one row alone with its prompt
    prompt_indices = np.array([0, 0, 1, 2, 1, 0, 2, 3])
    rollout = engine.collect(torch.Generator().manual_seed(0), seed=1, prompt_indices=prompt_indices)
    n, t = rollout.mask.shape
    weights = torch.randn(n, t, generator=torch.Generator().manual_seed(1))
    positions = []
    model.register_forward_pre_hook(lambda m, args, kw: positions.append(kw["input_ids"].numel()), with_kwargs=True)

    def logits_and_grads(prompt_model):
        model.zero_grad(set_to_none=True)
        positions.clear()
        logits = completion_logits(model, rollout, 0.7, prompt_model=prompt_model)
        (masked_logprobs(logits.float(), rollout.completion_ids, rollout.mask) * weights).sum().backward()
        return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}, list(positions)

    full_logits, full_grads, full_positions = logits_and_grads(None)
    shared_logits, shared_grads, shared_positions = logits_and_grads(model)
    torch.testing.assert_close(shared_logits, full_logits, atol=1e-5, rtol=1e-5)
    assert full_grads.keys() == shared_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    prompt_columns = full_positions[0] // n - (t - 1)  # the longest prompt's length
    assert full_positions == [n * (prompt_columns + t - 1)]
    assert shared_positions == [4 * prompt_columns, n * (t - 1)]  # 4 distinct prompts, then the completions

    distinct = engine.collect(torch.Generator().manual_seed(0), seed=1, prompt_indices=np.array([0, 1, 2, 3] * 2))
    positions.clear()
    completion_logits(model, distinct.select([0, 1, 2, 3]), prompt_model=model)
    assert len(positions) == 1  # no prompt repeats: the single forward


def test_rollout_prefills_once_then_decodes_one_token_per_step_in_lockstep(tokenizer):
    env = make_vec(num_envs=5)
    model = load_causal_lm(TINY_MODEL)
    shapes = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    engine = RolloutEngine(env, model)
    rollout = engine.collect(torch.Generator().manual_seed(0), seed=1, prompt_indices=np.array([0, 1, 2, 3, 0]))
    steps = rollout.mask.shape[1]
    # one prefill of the prompt slots (less the columns that are padding in every row: the longest prompt's
    # length) for each of the 4 distinct prompts, then one single-token forward of all 5 rows per further step:
    # nothing re-encoded
    longest = max(len(tokenizer(PROMPTS[i])["input_ids"]) for i in (0, 1, 2, 3))
    assert longest < 12 and shapes == [(4, longest)] + [(5, 1)] * (steps - 1)
    lengths = rollout.lengths.tolist()
    assert max(lengths) == steps
    for row in range(5):
        ids = rollout.completion_ids[row, : lengths[row]].tolist()
        assert set(ids) <= set(ALLOWED)
        ended_by_eos = ids[-1] == EOS
        assert bool(rollout.terminated[row]) == ended_by_eos and bool(rollout.truncated[row]) == (not ended_by_eos)
        assert (lengths[row] == 8) or ended_by_eos
        assert rollout.scores[row] == ids.count(TARGET)  # the env's reward, read at each row's last step
        assert rollout.prompts[row] == PROMPTS[[0, 1, 2, 3, 0][row]]
        # the final observation holds the completion right after the prompt slots
        assert rollout.input_ids[row, 12 : 12 + lengths[row]].tolist() == ids
        assert rollout.completions[row] == tokenizer.decode([i for i in ids if i != EOS], skip_special_tokens=True)


def test_trainers_need_a_lockstep_vector_env():
    env = gym.make_vec(
        "MossText-v0", num_envs=4, vectorization_mode="vector_entry_point", **env_kwargs()
    )  # NEXT_STEP autoreset
    with pytest.raises(ValueError, match="DISABLED"):
        LMPPOTrainer(env, TINY_MODEL, LMPPOConfig(num_envs=4, progress_bar=False))
    with pytest.raises(TypeError, match="vector env"):
        GRPOTrainer(gym.make("MossText-v0", **env_kwargs()), TINY_MODEL, GRPOConfig(progress_bar=False))
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPOTrainer(make_vec(num_envs=6), TINY_MODEL, GRPOConfig(num_generations=4, progress_bar=False))
    with pytest.raises(ValueError, match="ptx_coef"):
        LMPPOTrainer(make_vec(num_envs=4), TINY_MODEL, LMPPOConfig(ptx_coef=0.5, num_minibatches=1, progress_bar=False))


# -- learning ------------------------------------------------------------------------------------------------------
LEARNING_SEEDS = (0, 1, 2)
LEARNING_ITERATIONS = 8  # of 16 episodes and 4 optimiser steps (2 epochs x 2 minibatches) each
# Under the untrained policy a completion holds ~0.4 target tokens with variance ~0.45, so the difference between
# the first iteration's mean (16 episodes) and the last two's (32) has a standard error of ~0.2 if nothing is
# learnt: a rise of 1.5 tokens is over 7 standard errors, and about half the smallest rise measured.
# Measured over seeds 0-4 (first iteration -> mean of the last two): LM-PPO 0.31-0.62 -> 3.4-5.3 (rise >= 3.0),
# GRPO 0.31-0.56 -> 3.0-5.3 (rise >= 2.69), RLOO 0.31-0.56 -> 3.3-5.3 (rise >= 3.03).
REQUIRED_RISE = 1.5


@pytest.mark.parametrize("seed", LEARNING_SEEDS)
@pytest.mark.parametrize("name", ["lm-ppo", "grpo", "rloo"])
def test_agent_raises_the_reward_and_starts_at_zero_kl(name, seed):
    trainer = {"lm-ppo": ppo, "grpo": grpo, "rloo": rloo}[name](seed=seed)
    history = trainer.train(LEARNING_ITERATIONS)
    rewards = [m["reward_mean"] for m in history]
    start, end = rewards[0], float(np.mean(rewards[-2:]))
    assert end >= start + REQUIRED_RISE, f"seed {seed}: reward curve {np.round(rewards, 2).tolist()}"
    # the first batch is sampled by the untouched policy, so its KL to the reference is 0
    assert abs(history[0]["kl"]) < 1e-4
    assert history[-1]["kl"] > 0.1  # and the policy has moved away since
    for key in ("reward_std", "entropy", "response_length", "ref_perplexity", "clip_fraction", "tokens_per_second",
                "generation_seconds", "forward_seconds", "update_seconds"):
        assert np.isfinite(history[-1][key]), key


def test_each_part_of_a_composite_reward_is_logged_and_the_reward_is_their_weighted_sum():
    cfg = LMPPOConfig(**{**FAST, "critic_learning_rate": 2e-3})
    trainer = LMPPOTrainer(
        "MossText-v0", TINY_MODEL, cfg, env_kwargs=env_kwargs(reward=[(count_target, 1.0), ("repetition", 0.5)])
    )
    [metrics] = trainer.train(1)
    target, repetition = metrics["reward_count_target_mean"], metrics["reward_repetition_mean"]
    assert target > 0 and repetition <= 0
    assert not [k for k in metrics if k.startswith("reward__")]  # not Gymnasium's "_name" row masks
    assert metrics["reward_mean"] == pytest.approx(target + 0.5 * repetition, abs=1e-5)
    batch = trainer.collect()
    rows = batch.select([1, 0])  # minibatches keep each row's parts
    assert torch.equal(rows.reward_components["count_target"], batch.reward_components["count_target"][[1, 0]])
    assert torch.equal(batch.reward_components["count_target"], torch.tensor(
        [float(ids.count(TARGET)) for ids in batch.completion_ids.tolist()]))


# -- the PPO-max switches, effects at trainer level ----------------------------------------------------------------
def test_critic_warmup_trains_only_the_value_model_and_minibatch_epochs_count_steps(tmp_path):
    trainer = ppo(num_envs=8, critic_warmup_iterations=1, update_epochs=2, num_minibatches=2, output_dir=str(tmp_path))
    policy_before = policy_state(trainer)
    value_before = copy.deepcopy(trainer.value_model.state_dict())
    [warmup] = trainer.train(1)
    assert warmup["critic_warmup"] == 1.0 and warmup["optimizer_steps"] == 4  # 2 epochs x 2 minibatches
    assert all(torch.equal(policy_before[k], v) for k, v in trainer.unwrapped_policy.state_dict().items())
    assert not torch.equal(value_before["head.weight"], trainer.value_model.state_dict()["head.weight"])
    [after] = trainer.train(1)
    assert after["critic_warmup"] == 0.0 and "policy_loss" in after
    assert not all(torch.equal(policy_before[k], v) for k, v in trainer.unwrapped_policy.state_dict().items())
    # the CSV gained the policy's columns when they first appeared; the warm-up row leaves them empty
    with open(tmp_path / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["policy_loss"] for row in rows] == ["", str(after["policy_loss"])]
    assert rows[0]["value_loss"] == str(warmup["value_loss"])


def test_entropy_bonus_raises_entropy_when_the_reward_is_flat():
    flat = dict(reward=lambda prompts, completions, **info: [0.0] * len(completions))
    # kl_coef 0: with no reward and no KL term every advantage is exactly 0 (Adam would turn even float noise
    # from the KL term into full-size steps)
    fast = dict(num_envs=8, update_epochs=1, num_minibatches=1, kl_coef=0.0)
    with_bonus = ppo(entropy_coef=1.0, env_overrides=flat, **fast)
    without = ppo(entropy_coef=0.0, env_overrides=flat, **fast)
    before = policy_state(without)
    entropies = [m["entropy"] for m in with_bonus.train(3)]
    without.train(3)
    assert entropies[-1] > entropies[0] + 0.01, entropies
    # no reward signal and no bonus: every advantage is 0, so the policy does not move
    assert all(torch.equal(before[k], v) for k, v in without.unwrapped_policy.state_dict().items())


def test_pretraining_loss_mixing_fits_the_corpus():
    corpus = ["The quick brown fox jumps over the lazy dog."] * 8

    def make(ptx_coef):
        config = LMPPOConfig(
            **{**FAST, "num_envs": 8, "critic_learning_rate": 2e-3, "ptx_coef": ptx_coef, "ptx_batch_size": 2,
               "ptx_block_size": 16}
        )
        return LMPPOTrainer("MossText-v0", TINY_MODEL, config, pretrain_corpus=corpus, env_kwargs=env_kwargs())

    def corpus_nll(trainer):
        blocks = trainer.pretrain.blocks
        with torch.no_grad():
            return float(trainer.unwrapped_policy(input_ids=blocks, labels=blocks).loss)

    mixed, plain = make(1.0), make(0.0)
    start = corpus_nll(mixed)
    assert corpus_nll(plain) == start
    history = mixed.train(2)
    plain.train(2)
    assert all(np.isfinite(m["ptx_loss"]) for m in history)
    # measured: the corpus NLL falls ~1.0 nat with PPO-ptx and ~0.03 without
    assert corpus_nll(mixed) < start - 0.5
    assert corpus_nll(mixed) < corpus_nll(plain) - 0.5


def test_global_gradient_norm_clipping_bounds_each_models_norm():
    trainer = ppo(num_envs=8, max_grad_norm=0.25)
    policy, value = trainer.unwrapped_policy, trainer.value_model
    loss = 1000.0 * sum(p.sum() for p in policy.parameters()) + 1000.0 * sum(p.sum() for p in value.parameters())
    norms = trainer.optimizer_step(trainer.optimizer, loss, {"grad_norm": policy, "value_grad_norm": value})
    assert norms["grad_norm"] > 100 and norms["value_grad_norm"] > 100  # reported before clipping
    for model in (policy, value):
        total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
        assert float(total) == pytest.approx(0.25, rel=1e-3)  # float32 norm of ~3M entries


def test_adaptive_kl_coefficient_moves_towards_the_target():
    trainer = ppo(num_envs=8, adaptive_kl=True, kl_coef=0.2, kl_target=0.01, kl_horizon=100)
    history = trainer.train(3)
    coefs = [m["kl_coef"] for m in history]
    # the first batch's KL is 0, below the target: beta *= 1 - 0.2 * 8 episodes / horizon 100
    assert coefs[0] == 0.2 and coefs[1] == pytest.approx(0.2 * (1 - 0.2 * 8 / 100))
    assert history[1]["kl"] > 0.01 and coefs[2] > coefs[1]  # then the policy drifts above the target: beta grows
    fixed = ppo(num_envs=8, kl_coef=0.2).train(2)
    assert [m["kl_coef"] for m in fixed] == [0.2, 0.2]


def test_value_model_starts_as_a_separate_copy_of_the_policy_backbone():
    trainer = ppo(num_envs=8)
    policy_backbone = trainer.unwrapped_policy.base_model.state_dict()
    value_backbone = trainer.value_model.backbone.state_dict()
    assert policy_backbone.keys() == value_backbone.keys()
    for key, tensor in policy_backbone.items():
        assert torch.equal(tensor, value_backbone[key])
        assert tensor.data_ptr() != value_backbone[key].data_ptr()
    assert torch.all(trainer.value_model.head.weight == 0)


def test_value_model_from_a_classifier_reward_model_directory(tmp_path, tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    policy = make_tiny_causal_lm(seed=0)
    config = LlamaConfig(**{**policy.config.to_dict(), "num_labels": 2, "pad_token_id": EOS})
    torch.manual_seed(1)
    classifier = LlamaForSequenceClassification(config).eval()
    classifier.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    value = ValueModel.from_classifier(tmp_path / "rm", tokenizer=tokenizer).eval()
    ids = torch.tensor([[57, 13197, 618, 260]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits = classifier(input_ids=ids, attention_mask=mask).logits[0]
        values = value(ids, mask)
    # V at the last token is the classifier's log-odds of the positive label
    assert float(values[0, -1]) == pytest.approx(float(logits[1] - logits[0]), abs=1e-5)
    trainer = LMPPOTrainer(
        "MossText-v0", TINY_MODEL, LMPPOConfig(num_envs=4, num_minibatches=1, value_model_init=str(tmp_path / "rm"),
                                               progress_bar=False), env_kwargs=env_kwargs(),
    )
    assert torch.equal(trainer.value_model.head.weight, value.head.weight)

    other = LlamaForSequenceClassification(LlamaConfig(**{**config.to_dict(), "vocab_size": 1000}))
    other.save_pretrained(tmp_path / "small-vocab")
    with pytest.raises(ValueError, match="tokenizer"):
        ValueModel.from_classifier(tmp_path / "small-vocab", tokenizer=tokenizer)


def test_grpo_groups_share_a_prompt():
    trainer = grpo(num_envs=8)
    rollout = trainer.collect(group_size=4)
    assert rollout.prompts[:4] == [rollout.prompts[0]] * 4 and rollout.prompts[4:] == [rollout.prompts[4]] * 4
    assert rollout.prompts[0] != rollout.prompts[4]  # different prompts, drawn without replacement


@pytest.mark.parametrize("mask_truncated", [True, False])
def test_masking_truncated_completions_leaves_them_out_of_the_update(mask_truncated):
    """One GRPO iteration, run again with the sampling log-probs of some rows changed (which changes their
    importance ratios): changing the truncated rows' leaves the update bit-identical exactly when they are
    masked; changing the other rows' always changes it."""

    def updated_policy(perturb_truncated: bool | None):
        trainer = grpo(num_envs=8, num_minibatches=1, update_epochs=1, mask_truncated_completions=mask_truncated)
        collect = trainer.collect

        def collect_and_perturb(*args, **kwargs):
            rollout = collect(*args, **kwargs)
            truncated = rollout.truncated.tolist()
            assert any(truncated) and not all(truncated)  # both kinds of row in this seed's batch
            if perturb_truncated is not None:
                rows = rollout.truncated if perturb_truncated else ~rollout.truncated
                rollout.logprobs[rows] -= 0.5 * rollout.mask[rows]
            return rollout

        trainer.collect = collect_and_perturb
        [metrics] = trainer.train(1)
        assert metrics["advantage_std"] > 0
        return policy_state(trainer)

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    baseline = updated_policy(None)
    assert same(updated_policy(True), baseline) == mask_truncated
    assert not same(updated_policy(False), baseline)


def test_learn_counts_generated_tokens():
    trainer = rloo(num_envs=8)
    trainer.learn(total_timesteps=100)
    assert trainer.num_timesteps >= 100
    assert trainer.num_timesteps < 100 + 8 * 8  # stopped after the iteration that crossed the total
