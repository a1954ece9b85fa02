"""The one decoding path (agents.modeling.decoding): cached logits equal an uncached forward over each row's real tokens,
whatever the padding; sampling filters on hand-made logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.modeling.decoding import (
    KVDecoder,
    entropy_from_logprobs,
    filter_logits,
    nucleus_keep,
    position_ids,
)
from agents.modeling.lm_policy import CausalLMPolicy
from textenv.models import TINY_MODEL, load_causal_lm


@pytest.fixture(scope="module")
def model():
    return load_causal_lm(TINY_MODEL, seed=0).eval()


@torch.no_grad()
def uncached_next_logits(model, tokens: list[int]) -> torch.Tensor:
    return model(input_ids=torch.tensor([tokens])).logits[0, -1].float()


def test_position_ids_count_real_tokens_before_each_column():
    mask = torch.tensor([[0, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 1, 2], [0, 1, 2, 3, 4, 5]]
    assert position_ids(mask[:, 4:], start=torch.tensor([[2], [4]])).tolist() == [[1, 2], [4, 5]]


@torch.no_grad()
def test_prefill_then_appended_tokens_give_the_logits_of_a_fresh_forward(model):
    """Left-padded prompts, one sampled token per row, then a ragged block of env-inserted tokens (row 0 appends
    two, row 1 one and a pad): each row's next-token logits equal an uncached forward over its real tokens."""
    rows = [[5, 6, 7], [8, 9, 10, 11, 12]]
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = (torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))
    decoder = KVDecoder(model)
    logits = decoder.prefill(ids, mask)
    for row, tokens in enumerate(rows):
        torch.testing.assert_close(logits[row].float(), uncached_next_logits(model, tokens), atol=1e-4, rtol=0)

    logits = decoder.append(torch.tensor([[20], [21]]))[:, -1]
    rows = [rows[0] + [20], rows[1] + [21]]
    for row, tokens in enumerate(rows):
        torch.testing.assert_close(logits[row].float(), uncached_next_logits(model, tokens), atol=1e-4, rtol=0)

    block = decoder.append(torch.tensor([[30, 31], [32, 0]]), torch.tensor([[1, 1], [1, 0]]), logits_to_keep=0)
    torch.testing.assert_close(block[0, -1].float(), uncached_next_logits(model, rows[0] + [30, 31]), atol=1e-4, rtol=0)
    torch.testing.assert_close(block[1, 0].float(), uncached_next_logits(model, rows[1] + [32]), atol=1e-4, rtol=0)
    # a padded column continues nothing: the next real token of row 1 sees only its real tokens
    logits = decoder.append(torch.tensor([[40], [41]]))[:, -1]
    torch.testing.assert_close(
        logits[0].float(), uncached_next_logits(model, rows[0] + [30, 31, 40]), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(logits[1].float(), uncached_next_logits(model, rows[1] + [32, 41]), atol=1e-4, rtol=0)


@torch.no_grad()
def test_replace_rows_restarts_only_those_rows(model):
    decoder = KVDecoder(model)
    decoder.prefill(torch.tensor([[5, 6, 7], [0, 8, 9]]), torch.tensor([[1, 1, 1], [0, 1, 1]]))
    decoder.append(torch.tensor([[10], [11]]))
    fresh = decoder.replace_rows(
        torch.tensor([1]), torch.tensor([[12, 13, 14, 15, 16]]), torch.ones(1, 5, dtype=torch.long)
    )
    torch.testing.assert_close(fresh[0].float(), uncached_next_logits(model, [12, 13, 14, 15, 16]), atol=1e-4, rtol=0)
    logits = decoder.append(torch.tensor([[17], [18]]))[:, -1]
    torch.testing.assert_close(logits[0].float(), uncached_next_logits(model, [5, 6, 7, 10, 17]), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        logits[1].float(), uncached_next_logits(model, [12, 13, 14, 15, 16, 18]), atol=1e-4, rtol=0
    )


def test_filters_keep_the_top_k_and_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert nucleus_keep(logits, 0.7).tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.8 reaches it
    assert nucleus_keep(logits, 0.5).tolist() == [[True, False, False, False]]
    assert nucleus_keep(logits, 0.01).tolist() == [[True, False, False, False]]  # the top token always
    kept = filter_logits(logits, top_k=3).softmax(-1)
    torch.testing.assert_close(kept, torch.tensor([[0.5, 0.3, 0.15, 0.0]]) / 0.95)
    kept = filter_logits(logits, top_p=0.9, allowed=torch.tensor([False, True, True, True])).softmax(-1)
    torch.testing.assert_close(kept, torch.tensor([[0.0, 0.3, 0.15, 0.0]]) / 0.45)  # nucleus of what is allowed
    torch.testing.assert_close(filter_logits(logits, temperature=0.5), logits * 2)


def test_entropy_ignores_masked_tokens():
    log_probs = torch.log(torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(entropy_from_logprobs(log_probs), torch.tensor([math.log(2), 0.0]))


@torch.no_grad()
def test_greedy_policy_writes_the_argmax_of_a_fresh_forward(model):
    policy = CausalLMPolicy(model, max_prompt_tokens=4, temperature=0)
    policy.start({"input_ids": np.array([0, 5, 6, 7, 0, 0]), "attention_mask": np.array([0, 1, 1, 1, 0, 0])})
    tokens = [5, 6, 7]
    for _ in range(3):
        action = int(policy.act()[0])
        assert action == int(uncached_next_logits(model, tokens).argmax())
        tokens.append(action)
        policy.observe(np.array([action]))
