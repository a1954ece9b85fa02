"""The numerical pieces of LM-PPO / GRPO / RLOO against hand-computed values, and the configs' input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.lm.config import GRPOConfig, LMPPOConfig, RLOOConfig
from agents.lm.core import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    clipped_policy_loss,
    clipped_value_loss,
    compute_gae,
    entropy_of,
    explained_variance,
    grpo_advantages,
    k3_kl,
    kl_penalized_rewards,
    masked_logprobs,
    process_advantages,
    rloo_advantages,
    shape_scores,
    token_kl,
    whiten,
)
from agents.lm.group import aggregate_token_loss
from agents.modeling.decoding import sample_categorical


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# -- GAE and the KL penalty ----------------------------------------------------------------------------------------
def test_gae_matches_hand_computed_values():
    rewards = t([[0.1, -0.2, 1.0], [0.0, 2.0, 9.0]])
    values = t([[0.5, 0.4, 0.3], [1.0, 0.5, 7.0]])  # row 1's last slot is padding: its value must be ignored
    mask = t([[1, 1, 1], [1, 1, 0]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: deltas 0.0, -0.3, 0.7  ->  A2 = 0.7, A1 = -0.3 + 0.5 * 0.7, A0 = 0.0 + 0.5 * A1
    # row 1: V after the last token is 0: deltas -0.5, 1.5  ->  A1 = 1.5, A0 = -0.5 + 0.5 * 1.5
    torch.testing.assert_close(advantages, t([[0.025, 0.05, 0.7], [0.25, 1.5, 0.0]]))
    torch.testing.assert_close(returns, t([[0.525, 0.45, 1.0], [1.25, 2.0, 0.0]]))


def test_gae_with_lambda_one_gives_discounted_returns():
    rewards = t([[0.1, -0.2, 1.0]])
    values = t([[0.5, 0.4, 0.3]])
    advantages, returns = compute_gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=1.0)
    g0 = 0.1 + 0.9 * -0.2 + 0.81 * 1.0
    torch.testing.assert_close(returns[0], t([g0, -0.2 + 0.9 * 1.0, 1.0]))
    torch.testing.assert_close(advantages, returns - values)


def test_token_level_kl_penalty_matches_hand_computed_values():
    logprobs = t([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref_logprobs = t([[-1.5, -1.0, -0.5], [-2.0, -0.5, 0.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    rewards, kl = kl_penalized_rewards(t([2.0, -1.0]), logprobs, ref_logprobs, mask, kl_coef=0.1)
    torch.testing.assert_close(kl, t([[0.5, -1.0, 0.0], [1.0, -0.5, 0.0]]))
    # -0.1 * kl on every token, the score added on each sequence's last token
    torch.testing.assert_close(rewards, t([[-0.05, 0.1, 2.0], [-0.1, 0.05 - 1.0, 0.0]]))
    rewards_off, _ = kl_penalized_rewards(t([2.0, -1.0]), logprobs, ref_logprobs, mask, kl_coef=0.0)
    torch.testing.assert_close(rewards_off, t([[0.0, 0.0, 2.0], [0.0, -1.0, 0.0]]))


def test_k3_kl_is_nonnegative_and_zero_at_equality():
    logprobs = t([-1.0, -2.0, -0.1])
    assert torch.all(k3_kl(logprobs, logprobs) == 0)
    ref = t([-2.0, -1.0, -0.1])
    expected = torch.exp(ref - logprobs) - (ref - logprobs) - 1
    torch.testing.assert_close(k3_kl(logprobs, ref), expected)
    assert torch.all(k3_kl(logprobs, ref) >= 0)


def test_kl_estimators_match_hand_computed_values():
    logprobs, ref = t([-1.0, -2.0, -0.5]), t([-1.5, -1.0, -0.5])  # r = ref - logprobs = -0.5, 1.0, 0.0
    torch.testing.assert_close(token_kl(logprobs, ref, "k1"), t([0.5, -1.0, 0.0]))
    torch.testing.assert_close(token_kl(logprobs, ref, "k2"), t([0.125, 0.5, 0.0]))
    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1, 0.0]
    torch.testing.assert_close(token_kl(logprobs, ref, "k3"), t(k3))
    torch.testing.assert_close(token_kl(logprobs, ref), k3_kl(logprobs, ref))
    with pytest.raises(ValueError, match="kl_estimator='k4'.*'k1', 'k2', 'k3'"):
        token_kl(logprobs, ref, "k4")


def test_kl_estimators_on_samples_estimate_the_kl():
    # on-policy samples: k1 and k3 are unbiased; k2 is biased but close when the distributions are close
    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.4, 0.35, 0.25])
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logprobs, ref = p.log()[tokens], q.log()[tokens]
    exact = float((p * (p / q).log()).sum())
    for estimator, tolerance in (("k1", 0.003), ("k3", 0.001), ("k2", 0.003)):
        assert float(token_kl(logprobs, ref, estimator).mean()) == pytest.approx(exact, abs=tolerance), estimator


def test_importance_weighted_k3_has_the_reverse_kl_gradient():
    # on-policy samples (ratio exactly 1): the weighted k3's mean gradient is that of KL(p || q); the plain k3's is
    # that of the forward KL(q || p)
    theta = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)
    q = torch.tensor([0.2, 0.5, 0.3])
    p = torch.softmax(theta, 0).detach()
    tokens = torch.multinomial(p, 400_000, replacement=True, generator=torch.Generator().manual_seed(1))

    def gradient(value: torch.Tensor) -> torch.Tensor:
        (grad,) = torch.autograd.grad(value, theta)
        return grad

    def sampled(weighted: bool) -> torch.Tensor:
        logprobs = torch.log_softmax(theta, 0)[tokens]
        old = logprobs.detach() if weighted else None
        return gradient(token_kl(logprobs, q.log()[tokens], "k3", old).mean())

    logp = torch.log_softmax(theta, 0)
    reverse = gradient((logp.exp() * (logp - q.log())).sum())
    forward = gradient((q * (q.log() - torch.log_softmax(theta, 0))).sum())
    assert not torch.allclose(reverse, forward, atol=0.05)
    torch.testing.assert_close(sampled(True), reverse, atol=0.01, rtol=0)
    torch.testing.assert_close(sampled(False), forward, atol=0.01, rtol=0)
    # the weight leaves the value alone on-policy
    logprobs = torch.log_softmax(theta, 0)[tokens[:5]].detach()
    torch.testing.assert_close(
        token_kl(logprobs, q.log()[tokens[:5]], "k3", logprobs), k3_kl(logprobs, q.log()[tokens[:5]])
    )


def test_adaptive_kl_controller_follows_ziegler_update():
    controller = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    controller.update(current_kl=9.0, n_steps=100)  # error 0.5 clipped to 0.2
    assert controller.value == pytest.approx(0.2 * (1 + 0.2 * 100 / 10000))
    controller.update(current_kl=5.4, n_steps=100)  # error -0.1
    assert controller.value == pytest.approx(0.2 * 1.002 * (1 - 0.1 * 100 / 10000))
    fixed = FixedKLController(0.05)
    fixed.update(current_kl=100.0, n_steps=100)
    assert fixed.value == 0.05
    restored = AdaptiveKLController(0.1, 6.0, 10000)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value


# -- score shaping -------------------------------------------------------------------------------------------------
def test_running_moments_equal_statistics_of_everything_seen():
    moments = RunningMoments()
    batches = [np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0]), np.array([-4.0])]
    for batch in batches:
        moments.update(batch)
    everything = np.concatenate(batches)
    assert moments.mean == pytest.approx(everything.mean())
    assert moments.var == pytest.approx(everything.var())
    assert moments.count == everything.size


def test_reward_normalisation_scaling_and_clipping():
    scores, truncated = t([1.0, 2.0, 3.0]), torch.zeros(3)
    std = math.sqrt(2 / 3)
    normalized = shape_scores(scores, truncated, RunningMoments(), "normalize", None, None)
    torch.testing.assert_close(normalized, t([-1 / std, 0.0, 1 / std]))
    scaled = shape_scores(scores, truncated, RunningMoments(), "scale", None, None)
    torch.testing.assert_close(scaled, scores / std)
    clipped = shape_scores(scores, truncated, RunningMoments(), "normalize", 1.0, None)
    torch.testing.assert_close(clipped, t([-1.0, 0.0, 1.0]))
    raw = shape_scores(t([-30.0, 30.0]), torch.zeros(2), RunningMoments(), "none", 10.0, None)
    torch.testing.assert_close(raw, t([-10.0, 10.0]))
    # running: a second batch is normalised with the statistics of both batches
    moments = RunningMoments()
    shape_scores(scores, truncated, moments, "normalize", None, None)
    second = shape_scores(t([5.0]), torch.zeros(1), moments, "normalize", None, None)
    everything = np.array([1.0, 2.0, 3.0, 5.0])
    assert float(second[0]) == pytest.approx((5.0 - everything.mean()) / everything.std(), rel=1e-5)


def test_missing_eos_penalty_lowers_only_truncated_completions():
    scores, truncated = t([1.0, 1.0, 1.0]), torch.tensor([False, True, False])
    shaped = shape_scores(scores, truncated, RunningMoments(), "none", None, missing_eos_penalty=0.5)
    torch.testing.assert_close(shaped, t([1.0, 0.5, 1.0]))


def test_advantage_whitening_and_clipping():
    advantages = t([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = t([[1, 1, 1], [1, 0, 0]])
    whitened = whiten(advantages, mask)
    valid = whitened[mask.bool()]
    assert float(valid.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(valid.var(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    assert torch.all(whitened[~mask.bool()] == 0)
    processed = process_advantages(advantages, mask, whiten_advantages=True, clip=0.5)
    torch.testing.assert_close(processed, whitened.clamp(-0.5, 0.5) * mask)
    untouched = process_advantages(advantages, mask, whiten_advantages=False, clip=None)
    torch.testing.assert_close(untouched, advantages * mask)


# -- losses --------------------------------------------------------------------------------------------------------
def test_clipped_policy_loss_stops_the_gradient_outside_the_clip_range():
    old = t([[0.0]])
    mask = t([[1.0]])
    new = torch.tensor([[math.log(1.5)]], requires_grad=True)  # ratio 1.5 > 1 + 0.2
    loss, stats = clipped_policy_loss(new, old, t([[2.0]]), mask, clip_range=0.2)
    assert float(loss.detach()) == pytest.approx(-2.0 * 1.2)
    loss.sum().backward()
    assert float(new.grad) == 0.0
    assert float(stats["clip_fraction"]) == 1.0
    assert float(stats["approx_kl"]) == pytest.approx(0.5 - math.log(1.5))

    new = torch.tensor([[math.log(1.5)]], requires_grad=True)
    loss, _ = clipped_policy_loss(new, old, t([[2.0]]), mask, clip_range=0.2, clip=False)
    assert float(loss.detach()) == pytest.approx(-3.0)
    loss.sum().backward()
    assert float(new.grad) == pytest.approx(-3.0)  # d(-A * ratio)/d log pi = -A * ratio

    # a negative advantage with the ratio above the range is NOT clipped (pessimistic bound)
    new = torch.tensor([[math.log(1.5)]], requires_grad=True)
    loss, _ = clipped_policy_loss(new, old, t([[-2.0]]), mask, clip_range=0.2)
    assert float(loss.detach()) == pytest.approx(3.0)
    # DAPO-style asymmetric range: the upper bound 0.6 lets ratio 1.5 through
    loss, _ = clipped_policy_loss(t([[math.log(1.5)]]), old, t([[2.0]]), mask, 0.2, clip_range_high=0.6)
    assert float(loss.detach()) == pytest.approx(-3.0)


def test_clipped_value_loss_matches_hand_computed_values():
    values = torch.tensor([[1.0, 0.1]], requires_grad=True)
    old_values, returns, mask = t([[0.0, 0.0]]), t([[2.0, 0.3]]), t([[1.0, 1.0]])
    loss, clip_fraction = clipped_value_loss(values, old_values, returns, mask, clip_range_value=0.2)
    # token 0: unclipped (1 - 2)^2 = 1, clipped (0.2 - 2)^2 = 3.24 -> 3.24; token 1: inside the range -> 0.04
    assert float(loss.detach()) == pytest.approx(0.5 * (3.24 + 0.04) / 2)
    assert float(clip_fraction) == 0.5
    loss.backward()
    assert float(values.grad[0, 0]) == 0.0  # the clipped term is flat in V
    plain, _ = clipped_value_loss(values, old_values, returns, mask, 0.2, clip=False)
    assert float(plain.detach()) == pytest.approx(0.5 * (1.0 + 0.04) / 2)


def test_masked_logprobs_and_entropy_handle_masked_vocabulary():
    logits = t([[[0.0, float("-inf"), 0.0]], [[1.0, 1.0, float("-inf")]]])
    tokens = torch.tensor([[1], [0]])  # row 0's token has -inf logit but lies outside the mask
    lp = masked_logprobs(logits, tokens, t([[0.0], [1.0]]))
    torch.testing.assert_close(lp, t([[0.0], [math.log(0.5)]]))
    torch.testing.assert_close(entropy_of(logits), t([[math.log(2)], [math.log(2)]]))


def test_explained_variance():
    targets, mask = t([[1.0, 2.0, 3.0, 4.0]]), torch.ones(1, 4)
    assert explained_variance(targets, targets, mask) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(1, 4) + 2.5, targets, mask) == pytest.approx(0.0)
    assert math.isnan(explained_variance(targets, torch.ones(1, 4), mask))


# -- group baselines -----------------------------------------------------------------------------------------------
def test_grpo_advantages_are_group_normalised():
    scores = t([1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0])
    std = math.sqrt(5 / 3)  # unbiased std of 1..4
    expected = t([-1.5, -0.5, 0.5, 1.5]) / (std + 1e-4)
    advantages = grpo_advantages(scores, group_size=4, scale="group")
    torch.testing.assert_close(advantages[:4], expected)
    assert torch.all(advantages[4:] == 0)  # a group with equal rewards teaches nothing
    torch.testing.assert_close(grpo_advantages(scores, 4, "none")[:4], t([-1.5, -0.5, 0.5, 1.5]))
    batch_scaled = grpo_advantages(scores, 4, "none") / (scores.std() + 1e-4)
    torch.testing.assert_close(grpo_advantages(scores, 4, "batch"), batch_scaled)


def test_rloo_advantages_use_the_other_samples_mean():
    scores = t([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(rloo_advantages(scores, 2), t([-1.0, 1.0, -1.0, 1.0]))
    # k = 4: sample 0's baseline is (2 + 3 + 4) / 3 = 3
    torch.testing.assert_close(rloo_advantages(scores, 4), t([1 - 3.0, 2 - 8 / 3, 3 - 7 / 3, 4 - 2.0]))


def test_token_loss_aggregations():
    per_token = t([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    mask = t([[1, 1, 1], [1, 0, 0]])
    assert float(aggregate_token_loss(per_token, mask, "dapo", 3)) == pytest.approx(7 / 4)
    assert float(aggregate_token_loss(per_token, mask, "grpo", 3)) == pytest.approx((1.0 + 4.0) / 2)
    assert float(aggregate_token_loss(per_token, mask, "dr_grpo", 8)) == pytest.approx(7 / (2 * 8))
    # dapo_normalizer="rollout": a given count (the iteration's tokens / num_minibatches) replaces the minibatch's
    count = torch.tensor(10.0, dtype=torch.float64)
    assert float(aggregate_token_loss(per_token, mask, "dapo", 3, token_count=count)) == pytest.approx(7 / 10)


# -- sampling ------------------------------------------------------------------------------------------------------
def test_sample_categorical_draws_from_the_distribution():
    probs = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    log_probs = torch.log(probs).expand(20000, -1)
    generator = torch.Generator().manual_seed(0)
    tokens = sample_categorical(log_probs, generator)
    counts = torch.bincount(tokens, minlength=5).double() / 20000
    assert counts[1] == 0 and counts[4] == 0  # zero-probability tokens never come out
    torch.testing.assert_close(counts, probs.double(), atol=0.015, rtol=0)
    again = sample_categorical(log_probs, torch.Generator().manual_seed(0))
    assert torch.equal(tokens, again)


# -- configs -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config_class", "field", "value"),
    [
        (LMPPOConfig, "lam", 1.5),
        (LMPPOConfig, "kl_coef", -0.1),
        (LMPPOConfig, "reward_normalization", "zscore"),
        (LMPPOConfig, "num_minibatches", 0),
        (LMPPOConfig, "temperature", 0.0),
        (LMPPOConfig, "update_epochs", True),
        (GRPOConfig, "num_generations", 1),
        (GRPOConfig, "loss_type", "sum"),
        (GRPOConfig, "trainable_blocks", -1),
        (LMPPOConfig, "trainable_blocks", 1.5),
        (GRPOConfig, "lr_schedule", "cosine"),
        (LMPPOConfig, "lr_schedule", "linear_decay"),
        (GRPOConfig, "lr_decay_iterations", 0),
        (RLOOConfig, "reward_clip_range", (1.0, -1.0)),
    ],
)
def test_bad_config_values_name_the_field(config_class, field, value):
    with pytest.raises(ValueError, match=field):
        config_class(**{field: value})


def test_config_json_round_trip():
    config = LMPPOConfig(kl_coef=0.1, adaptive_kl=True, output_dir="/tmp/x")
    assert LMPPOConfig.from_dict(__import__("json").loads(config.to_json())) == config
    rloo = RLOOConfig(reward_clip_range=(-1.0, 2.0))
    assert RLOOConfig.from_dict(rloo.to_dict()) == rloo
    with pytest.raises(ValueError, match="LMPPOConfig"):
        GRPOConfig.from_dict(config.to_dict())
