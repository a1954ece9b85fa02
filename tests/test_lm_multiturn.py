"""LM agents across turns: the rollout engine extends the KV cache with env-inserted tokens, inserted tokens never
reach the loss, LM-PPO's GAE runs over the agent's tokens, and a tiny model learns a multi-turn task."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import agents.modeling.decoding as decoding
import agents.lm.base as lm_base
from agents.lm import (
    GRPOConfig,
    GRPOTrainer,
    LMPPOConfig,
    LMPPOTrainer,
    RLOOConfig,
    RLOOTrainer,
    RolloutEngine,
    sequence_logprobs,
)
from agents.lm.core import compute_gae
from agents.lm.turns import agent_token_gae, place_scores
from textenv.models import TINY_MODEL, load_causal_lm

EOS = 2
ALLOWED = list(range(100, 115)) + [EOS]
TARGET = 107
OPENINGS = ["My flight got cancelled.", "I lost my keys today.", "It rained all week.", "My phone broke."]


def target_in_last_turn(prompts, completions, conversations, **info):
    """Per-turn reward: how many times the agent's latest turn wrote token TARGET."""
    return [float(sum(t == TARGET for t in c.agent_token_ids[-1])) for c in conversations]


def nothing(prompts, completions, **info):
    return [0.0] * len(completions)


def env_kwargs(**overrides):
    base = dict(
        tokenizer=TINY_MODEL,
        prompts=OPENINGS,
        responder="scripted",
        responder_kwargs={"replies": ["Hm.", "Go on, tell me more please.", "ok"], "shuffle": True},
        reward=nothing,
        turn_reward=target_in_last_turn,
        max_turns=2,
        max_turn_tokens=4,
        max_total_tokens=40,
        max_prompt_tokens=48,
        allowed_token_ids=ALLOWED,
    )
    return {**base, **overrides}


def make_vec(num_envs=6, **overrides):
    return gym.make_vec(
        "MossChat-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED, **env_kwargs(**overrides),
    )


FAST = dict(num_envs=16, learning_rate=2e-3, num_minibatches=2, update_epochs=2, progress_bar=False)


def test_rollout_extends_the_cache_with_inserted_tokens_and_masks_them(monkeypatch):
    env = make_vec(num_envs=6)
    model = load_causal_lm(TINY_MODEL)
    engine = RolloutEngine(env, model, temperature=0.7)
    forwards = []
    real_forward = decoding.lm_forward

    def counting_forward(model, input_ids, attention_mask, **kwargs):
        forwards.append(tuple(input_ids.shape))
        return real_forward(model, input_ids, attention_mask, **kwargs)

    monkeypatch.setattr(decoding, "lm_forward", counting_forward)
    rollout = engine.collect(torch.Generator().manual_seed(3), seed=5)
    monkeypatch.undo()

    # the final observations hold inserted replies between turns; the mask is exactly the agent's tokens
    final = env.unwrapped
    p = final.task.max_prompt_tokens
    agent = (final._attention_mask > 0) & ~final._inserted
    t = rollout.mask.shape[1]
    assert torch.equal(rollout.mask.bool(), torch.as_tensor(agent[:, p : p + t]))
    assert (rollout.attention_mask[:, p:].sum(1) > rollout.mask.sum(1)).all()  # replies were inserted in every row
    # one prefill, then one forward per step (sampled + inserted tokens in one block): never re-encoding
    appends = forwards[1:]
    assert forwards[0][1] <= p and all(shape[1] <= 24 for shape in appends)  # a token + a reply
    assert any(shape[1] > 1 for shape in appends)  # some steps appended inserted tokens too
    assert len(appends) == int(rollout.lengths.max()) - 1  # one forward per step, none after the last
    # the sampling log-probs from the extended cache equal one fresh forward over the finished conversations
    with torch.no_grad():
        fresh = sequence_logprobs(model, rollout, 0.7, engine.allowed)
    torch.testing.assert_close(rollout.logprobs, fresh, atol=2e-5, rtol=0)
    assert torch.all(rollout.logprobs[rollout.mask == 0] == 0) and torch.all(rollout.entropy[rollout.mask == 0] == 0)
    # per-turn rewards sit at the agent tokens that ended turns; the score is their sum
    assert torch.all(rollout.step_rewards[rollout.mask == 0] == 0)
    torch.testing.assert_close(rollout.step_rewards.sum(1), rollout.scores)


def test_gae_over_agent_tokens_skips_inserted_tokens():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[0.0, 1.0, 5.0, 5.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 0.1, 9.0, 9.0, 0.3, 0.2]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])  # two agent turns, two inserted tokens between
    advantages, returns = agent_token_gae(rewards, values, mask, gamma, lam)
    keep = mask[0] > 0
    compact_a, compact_r = compute_gae(rewards[:, keep], values[:, keep], torch.ones(1, 4), gamma, lam)
    torch.testing.assert_close(advantages[:, keep], compact_a)
    torch.testing.assert_close(returns[:, keep], compact_r)
    assert torch.all(advantages[:, ~keep] == 0) and torch.all(returns[:, ~keep] == 0)
    # a prefix mask (single turn) gives compute_gae's result exactly
    prefix = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    single_turn = compute_gae(rewards, values, prefix, gamma, lam)[0]
    assert torch.equal(agent_token_gae(rewards, values, prefix, gamma, lam)[0], single_turn)


def test_place_scores_puts_turn_rewards_at_turn_ends_and_sums_to_the_shaped_score():
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0]])
    step = torch.tensor([[0.0, 2.0, 0.0, 0.0, 3.0], [0.0, 0.0, 4.0, 0.0, 0.0]])
    placed = place_scores(torch.tensor([1.0, -1.0]), step, mask, scale=0.5)
    assert placed.tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0, 0.0]]


def _loss_with_logit_noise(trainer, rollout, where, monkeypatch):
    """The trainer's policy loss on ``rollout`` with noise added to the policy's logits at ``where`` slots."""
    real = lm_base.completion_logits

    def noisy(model, r, temperature=1.0, prompt_model=None, trunk=None):
        logits = real(model, r, temperature, prompt_model=prompt_model, trunk=trunk)
        noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)) * 3.0
        return logits + noise * where[: r.mask.shape[0], : logits.shape[1], None]

    monkeypatch.setattr(lm_base, "completion_logits", noisy)
    try:
        logprobs, _ = trainer.policy_logprobs(trainer.policy, rollout)
        advantages = torch.linspace(-1, 1, rollout.num_sequences)[:, None].expand_as(rollout.mask)
        ratio = torch.exp(logprobs - rollout.logprobs)
        return float((-(advantages * ratio) * rollout.mask).sum().detach())
    finally:
        monkeypatch.setattr(lm_base, "completion_logits", real)


def test_loss_is_unchanged_by_what_the_env_inserted(monkeypatch):
    trainer = LMPPOTrainer("MossChat-v0", TINY_MODEL, LMPPOConfig(**FAST), env_kwargs=env_kwargs())
    rollout = trainer.collect()
    inserted = ((rollout.attention_mask[:, rollout.prompt_slots :] > 0) & (rollout.mask == 0)).float()
    assert inserted.sum() > 0
    base = _loss_with_logit_noise(trainer, rollout, torch.zeros_like(rollout.mask), monkeypatch)
    on_inserted = _loss_with_logit_noise(trainer, rollout, inserted, monkeypatch)
    on_agent = _loss_with_logit_noise(trainer, rollout, rollout.mask, monkeypatch)
    assert on_inserted == base  # bit-identical: inserted positions never reach the loss
    assert abs(on_agent - base) > 1e-3  # the control: the agent's own positions do
    # the sampling log-probs and rewards recorded at inserted slots are ignored by a whole PPO iteration too
    def iteration_after(perturb):
        fresh = LMPPOTrainer("MossChat-v0", TINY_MODEL, LMPPOConfig(**{**FAST, "num_envs": 8}), env_kwargs=env_kwargs())
        original = fresh.collect

        def collect(group_size=1):
            r = original(group_size)
            holes = (r.attention_mask[:, r.prompt_slots :] > 0) & (r.mask == 0)
            if perturb:
                r.logprobs = torch.where(holes, torch.full_like(r.logprobs, -7.0), r.logprobs)
                r.entropy = torch.where(holes, torch.full_like(r.entropy, 9.0), r.entropy)
            return r

        fresh.collect = collect
        fresh.train(1)
        return torch.cat([p.detach().flatten() for p in fresh.unwrapped_policy.parameters()])

    assert torch.equal(iteration_after(False), iteration_after(True))


@pytest.mark.parametrize("trainer_class, config_class", [(GRPOTrainer, GRPOConfig), (RLOOTrainer, RLOOConfig)])
def test_group_trainers_group_whole_conversations_by_their_opening(trainer_class, config_class):
    config = config_class(**{**FAST, "num_envs": 8, "num_generations": 4})
    trainer = trainer_class("MossChat-v0", TINY_MODEL, config, env_kwargs=env_kwargs())
    rollout = trainer.collect(group_size=4)
    assert rollout.prompts[0] == rollout.prompts[3] and rollout.prompts[4] == rollout.prompts[7]
    assert rollout.prompts[0] != rollout.prompts[4]
    assert all("assistant:" in c and "user:" in c for c in rollout.completions)  # whole transcripts
    metrics = trainer.train(1)[0]
    # the agent's tokens only: at most 2 turns x 4 tokens x 8 rows, the inserted replies not counted
    assert np.isfinite(metrics["policy_loss"]) and 8 <= metrics["batch_tokens"] <= 64


# Random play: a turn of 4 tokens from 16 allowed ones writes TARGET ~0.25 times, so an episode (2 turns) scores ~0.5
# (minus end-of-turn tokens); the first iteration's mean over 16 episodes has a standard error of ~0.2. A rise of
# 1.5 is over 5 standard errors. Measured (seeds 0-2, 8 iterations, first -> mean of the last two): LM-PPO 0.31-0.69 ->
# 3.75-6.5 (rise >= 3.4), GRPO 0.31-0.69 -> 3.59-5.44 (rise >= 3.28).
@pytest.mark.parametrize("name", ["lm-ppo", "grpo"])
def test_tiny_model_learns_a_multi_turn_task(name):
    if name == "lm-ppo":
        trainer = LMPPOTrainer("MossChat-v0", TINY_MODEL, LMPPOConfig(**{**FAST, "critic_learning_rate": 2e-3}),
                               env_kwargs=env_kwargs())
    else:
        trainer = GRPOTrainer("MossChat-v0", TINY_MODEL, GRPOConfig(**{**FAST, "num_generations": 4}),
                              env_kwargs=env_kwargs())
    history = trainer.train(8)
    rewards = [m["reward_mean"] for m in history]
    start, end = rewards[0], float(np.mean(rewards[-2:]))
    assert start < 1.0, rewards
    assert end >= start + 1.5, f"reward curve {np.round(rewards, 2).tolist()}"
