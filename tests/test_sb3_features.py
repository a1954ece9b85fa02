"""TokenFeaturesExtractor: padding never changes features, layouts, LM initialisation, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import textenv  # noqa: F401  (registers MossWords-v0)

pytest.importorskip("stable_baselines3")

from agents.sb3.features import TokenFeaturesExtractor  # noqa: E402
from agents.sb3.wrappers import FlattenTokenObservation  # noqa: E402

VOCAB, PROMPT, NEW = 50, 6, 4
L = PROMPT + NEW


def token_space(candidates: int = 0) -> gym.spaces.Dict:
    keys = {
        "input_ids": gym.spaces.Box(0, VOCAB - 1, (L,), np.int64),
        "attention_mask": gym.spaces.Box(0, 1, (L,), np.int64),
    }
    if candidates:
        keys["candidate_ids"] = gym.spaces.Box(0, VOCAB - 1, (candidates,), np.int64)
    return gym.spaces.Dict(keys)


def batch(rng: np.random.Generator, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations in textenv's layout: left-padded prompts of 1..6 tokens, completions of 0..4 tokens."""
    ids = np.full((8, L), pad_id)
    mask = np.zeros((8, L), dtype=np.int64)
    for row in range(8):
        n_prompt, n_done = int(rng.integers(1, PROMPT + 1)), int(rng.integers(0, NEW + 1))
        ids[row, PROMPT - n_prompt : PROMPT + n_done] = rng.integers(3, VOCAB, n_prompt + n_done)
        mask[row, PROMPT - n_prompt : PROMPT + n_done] = 1
    return torch.as_tensor(ids, dtype=torch.float32), torch.as_tensor(mask, dtype=torch.float32)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pooling": "mean"},
        {"pooling": "mean", "max_prompt_tokens": PROMPT},
        {"pooling": "gru"},
        {"pooling": "transformer", "num_layers": 2},
    ],
    ids=["mean", "mean-segments", "gru", "transformer"],
)
def test_padding_tokens_do_not_change_features(kwargs):
    torch.manual_seed(0)
    extractor = TokenFeaturesExtractor(token_space(), embed_dim=16, **kwargs).eval()
    rng = np.random.default_rng(0)
    ids, mask = batch(rng)
    garbage = ids.clone()
    garbage[mask == 0] = torch.as_tensor(rng.integers(0, VOCAB, int((mask == 0).sum())), dtype=torch.float32)
    with torch.no_grad():
        clean = extractor({"input_ids": ids, "attention_mask": mask})
        noisy = extractor({"input_ids": garbage, "attention_mask": mask})
        changed = ids.clone()
        changed[mask == 1] = (changed[mask == 1] + 1) % VOCAB  # a real token change must change features
        moved = extractor({"input_ids": changed, "attention_mask": mask})
    assert clean.shape == (8, extractor.features_dim)
    torch.testing.assert_close(clean, noisy, rtol=1e-5, atol=1e-6)
    assert (clean - moved).abs().amax(dim=1).min() > 1e-4


def test_position_features_ignore_how_much_left_padding():
    """GRU and transformer see a prompt the same whatever its left padding (positions count real tokens)."""
    torch.manual_seed(0)
    for pooling in ("gru", "transformer"):
        extractor = TokenFeaturesExtractor(token_space(), embed_dim=16, pooling=pooling).eval()
        ids = torch.zeros(2, L)
        mask = torch.zeros(2, L)
        ids[0, 1:4], mask[0, 1:4] = torch.tensor([5.0, 6.0, 7.0]), 1  # same tokens, shifted by two slots
        ids[1, 3:6], mask[1, 3:6] = torch.tensor([5.0, 6.0, 7.0]), 1
        with torch.no_grad():
            features = extractor({"input_ids": ids, "attention_mask": mask})
        torch.testing.assert_close(features[0], features[1], rtol=1e-5, atol=1e-6)


def test_candidates_are_embedded_in_rank_order():
    torch.manual_seed(0)
    extractor = TokenFeaturesExtractor(token_space(candidates=3), embed_dim=8)
    ids, mask = batch(np.random.default_rng(1))
    candidates = torch.tensor([[4.0, 9.0, 11.0]]).repeat(8, 1)
    with torch.no_grad():
        features = extractor({"input_ids": ids, "attention_mask": mask, "candidate_ids": candidates})
        swapped = extractor({"input_ids": ids, "attention_mask": mask, "candidate_ids": candidates[:, [1, 0, 2]]})
        table = extractor.embed.table.weight
    assert extractor.features_dim == 8 + 3 * 8
    torch.testing.assert_close(features[:, 8:16], table[4].expand(8, -1))
    torch.testing.assert_close(features[:, 16:24], table[9].expand(8, -1))
    torch.testing.assert_close(features[:, 8:16], swapped[:, 16:24])


def test_candidate_scores_are_shared_across_ranks():
    """The shared scorer gives a candidate the same scores whatever rank it is shown at."""
    torch.manual_seed(0)
    extractor = TokenFeaturesExtractor(token_space(candidates=3), embed_dim=8, candidate_scores=2)
    ids, mask = batch(np.random.default_rng(1))
    candidates = torch.tensor([[4.0, 9.0, 11.0]]).repeat(8, 1)
    with torch.no_grad():
        scores = extractor({"input_ids": ids, "attention_mask": mask, "candidate_ids": candidates})[:, -6:]
        swapped = extractor(
            {"input_ids": ids, "attention_mask": mask, "candidate_ids": candidates[:, [2, 0, 1]]}
        )[:, -6:]
    assert extractor.features_dim == 8 + 3 * (8 + 2)
    torch.testing.assert_close(swapped.view(8, 3, 2), scores.view(8, 3, 2)[:, [2, 0, 1]])
    assert not torch.allclose(scores[:, 0:2], scores[:, 2:4])


def test_flat_box_layout_matches_dict():
    torch.manual_seed(0)
    dict_extractor = TokenFeaturesExtractor(token_space(), embed_dim=8, max_prompt_tokens=PROMPT)
    flat_space = gym.spaces.Box(0, VOCAB - 1, (2 * L,), np.int64)
    layout = {"input_ids": L, "attention_mask": L}
    flat_extractor = TokenFeaturesExtractor(flat_space, embed_dim=8, max_prompt_tokens=PROMPT, layout=layout)
    flat_extractor.load_state_dict(dict_extractor.state_dict())
    ids, mask = batch(np.random.default_rng(2))
    with torch.no_grad():
        expected = dict_extractor({"input_ids": ids, "attention_mask": mask})
        got = flat_extractor(torch.cat([ids, mask], dim=1))
    torch.testing.assert_close(got, expected)


def test_flatten_wrapper_layout_feeds_the_extractor():
    env = FlattenTokenObservation(gym.make("MossWords-v0"))
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space and obs.dtype == np.int64
    assert env.token_layout == {"input_ids": 12, "attention_mask": 12}
    extractor = TokenFeaturesExtractor(env.observation_space, embed_dim=8, layout=env.token_layout)
    assert extractor.embed.table.num_embeddings == len(env.unwrapped.tokenizer)
    with torch.no_grad():
        assert extractor(torch.as_tensor(obs[None], dtype=torch.float32)).shape == (1, 8)


def test_embedding_init_from_a_causal_lm():
    from textenv.models import load_causal_lm

    lm = load_causal_lm("tiny-random-smollm2", seed=3)
    vocab = lm.get_input_embeddings().weight.shape[0]
    space = gym.spaces.Dict(
        {
            "input_ids": gym.spaces.Box(0, vocab - 1, (L,), np.int64),
            "attention_mask": gym.spaces.Box(0, 1, (L,), np.int64),
        }
    )
    same_width = TokenFeaturesExtractor(space, embed_dim=64, embedding_init=lm, freeze_embeddings=True)
    torch.testing.assert_close(same_width.embed.table.weight, lm.get_input_embeddings().weight.detach())
    assert not same_width.embed.table.weight.requires_grad
    projected = TokenFeaturesExtractor(space, embed_dim=16, embedding_init=lm)
    assert projected.embed.table.weight.requires_grad and projected.features_dim == 16


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"pooling": "max"}, ValueError, "pooling='max'; expected one of"),
        ({"embed_dim": 0}, ValueError, "embed_dim must be a positive int"),
        ({"max_prompt_tokens": L}, ValueError, r"max_prompt_tokens=10; expected an int in \[1, 10\)"),
        ({"freeze_embeddings": True}, ValueError, "needs embedding_init"),
        ({"embedding_init": 3.5}, TypeError, "embedding_init must be a causal LM"),
        ({"pooling": "transformer", "num_heads": 3, "embed_dim": 16}, ValueError, "num_heads=3 must divide"),
        ({"candidate_scores": -1}, ValueError, "candidate_scores must be an int >= 0"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        TokenFeaturesExtractor(token_space(), **kwargs)


def test_bad_spaces():
    with pytest.raises(ValueError, match="missing \\['attention_mask'\\]"):
        TokenFeaturesExtractor(gym.spaces.Dict({"input_ids": gym.spaces.Box(0, 9, (4,), np.int64)}))
    with pytest.raises(ValueError, match="needs layout"):
        TokenFeaturesExtractor(gym.spaces.Box(0, 9, (8,), np.int64))
    with pytest.raises(ValueError, match="does not describe a Box"):
        TokenFeaturesExtractor(gym.spaces.Box(0, 9, (8,), np.int64), layout={"input_ids": 4, "attention_mask": 5})
    with pytest.raises(TypeError, match="needs textenv's Dict observation space"):
        TokenFeaturesExtractor(gym.spaces.Discrete(4))
