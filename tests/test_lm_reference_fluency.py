"""reference_fluency_weight: the ``fluency`` reward read from the trainer's own reference forward (the reference is
the untuned policy), not from a second copy of the model run over the re-tokenised text."""

from __future__ import annotations

import pytest
import torch
from test_lm_agents import EOS, FAST, PROMPTS, env_kwargs

import rewards
from agents.lm import GRPOConfig, GRPOTrainer, LMPPOConfig, LMPPOTrainer
from textenv.models import TINY_MODEL, load_tokenizer

# words with a leading space: the decoded text of any sequence of them tokenises back to the same ids
WORDS = [" good", " bad", " the", " movie", " was", " very"]


def word_ids() -> list[int]:
    tokenizer = load_tokenizer(TINY_MODEL)
    ids = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in WORDS]
    assert all(len(one) == 1 for one in ids)
    return [one[0] for one in ids]


def test_the_reference_fluency_equals_the_fluency_plugin_on_the_same_completions():
    """The env scores each completion with the real ``fluency`` plugin (its own copy of the tiny model); the
    trainer's reference fluency of the same rollout must give the same values, EOS-ended completions included."""
    config = GRPOConfig(**{**FAST, "num_generations": 4, "seed": 0, "beta": 0.0, "reference_metrics": False,
                           "reference_fluency_weight": 0.5})
    kwargs = env_kwargs(reward={"name": "fluency", "kwargs": {"model": TINY_MODEL}},
                        allowed_token_ids=[*word_ids(), EOS])
    trainer = GRPOTrainer("MossText-v0", TINY_MODEL, config, env_kwargs=kwargs)
    assert trainer.reference is not None  # needed by the fluency term alone (no KL term, no reference metrics)
    plugin = trainer.collect(group_size=4)  # the env's scores: the plugin's fluency
    rollout, _, _ = trainer.collect_groups()  # the same iteration, so the same completions, plus the trainer's term
    assert torch.equal(rollout.completion_ids, plugin.completion_ids)
    assert 0 < int(rollout.terminated.sum()) < rollout.num_sequences  # EOS-ended and cut-off completions both
    ours = rollout.reward_components["reference_fluency"]
    torch.testing.assert_close(ours, plugin.scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(rollout.scores, plugin.scores * 1.5, atol=1e-4, rtol=0)
    assert bool((ours[rollout.lengths > 1] < 0).all())  # a completion of EOS alone scores 0, as in the plugin
    # and what the plugin says when called on the env's own texts
    called = rewards.make({"name": "fluency", "kwargs": {"model": TINY_MODEL}})(plugin.prompts, plugin.completions)
    torch.testing.assert_close(torch.tensor(called, dtype=torch.float32), ours, atol=1e-4, rtol=0)


def test_lm_ppo_adds_the_reference_fluency_to_the_score_before_shaping():
    config = LMPPOConfig(**{**FAST, "critic_learning_rate": 2e-3, "seed": 0, "reference_fluency_weight": 2.0})
    trainer = LMPPOTrainer("MossText-v0", TINY_MODEL, config, env_kwargs=env_kwargs())
    env_scores = trainer.collect().scores  # iteration 0's rollout, before the trainer adds anything
    metrics = trainer.train(1)[-1]
    fluency = metrics["reward_reference_fluency_mean"]
    assert fluency < 0
    assert metrics["reward_mean"] == pytest.approx(float(env_scores.mean()) + 2.0 * fluency, abs=1e-5)


def test_no_reference_fluency_by_default_and_a_bad_weight_is_refused():
    trainer = GRPOTrainer("MossText-v0", TINY_MODEL, GRPOConfig(**{**FAST, "num_generations": 4, "beta": 0.0,
                                                                  "reference_metrics": False}),
                          env_kwargs=env_kwargs())
    assert trainer.reference is None
    assert "reward_reference_fluency_mean" not in trainer.train(1)[-1]
    for bad in (-0.5, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="reference_fluency_weight"):
            GRPOConfig(reference_fluency_weight=bad)
