"""Reward-model training (agents.reward_model), the reward_model plugin and ensembles, the overoptimization
experiment's estimators and fits, on tiny random-init models."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.reward_model import (
    PairScorer,
    RewardModelConfig,
    RewardModelTrainer,
    bradley_terry_loss,
    collate_pairs,
    encode_pair,
    load_reward_model,
    value_model_from_reward_model,
)
from agents.reward_model.overoptimization import (
    best_of_n_expectation,
    fit_gao,
    gao_curve,
    kl_best_of_n,
)
from textenv.models import TINY_MODEL
from textenv.preferences import PreferencePair, write_preferences

WORDS = "apple river stone cloud music green table window sky bread lamp chair".split()
MARKER = " wonderful"


def marker_pairs(count: int, seed: int = 0) -> list[PreferencePair]:
    """Random word soup; the chosen completion has the marker word somewhere, the rejected one does not."""
    rng = random.Random(seed)
    pairs = []
    for i in range(count):
        prompt = f"item {i % (count // 2)}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))
        chosen = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
        chosen.insert(rng.randrange(len(chosen) + 1), MARKER.strip())
        rejected = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
        pairs.append(PreferencePair(chosen=" " + " ".join(chosen), rejected=" " + " ".join(rejected), prompt=prompt))
    return pairs


def tiny_config(**overrides) -> RewardModelConfig:
    settings = dict(
        model=TINY_MODEL, trainable_blocks=None, learning_rate=3e-3, num_train_epochs=2, progress_bar=False,
        early_stopping_patience=None, eval_fraction=0.25,
    )
    settings.update(overrides)
    return RewardModelConfig(**settings)


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory) -> tuple[Path, object, Path]:
    """One tiny reward model trained on the marker task from a JSONL file: (directory, result, data file)."""
    root = tmp_path_factory.mktemp("rm")
    data = root / "pairs.jsonl"
    write_preferences(data, marker_pairs(80))
    trainer = RewardModelTrainer(str(data), tiny_config(output_dir=str(root / "rm")))
    result = trainer.train()
    return root / "rm", result, data


# -- the loss -------------------------------------------------------------------------------------------------
def test_bradley_terry_loss_matches_hand_computed_values():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    # d = 1, -1: -log sigmoid(1) = 0.31326, -log sigmoid(-1) = 1.31326
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx((0.313262 + 1.313262) / 2, abs=1e-5)
    # margin 1 on the first pair: d = 0 -> log 2
    margin = torch.tensor([1.0, 0.0])
    assert bradley_terry_loss(chosen, rejected, margin).item() == pytest.approx((0.693147 + 1.313262) / 2, abs=1e-5)
    # smoothing 0.1: 0.9 * 0.313262 + 0.1 * 1.313262 = 0.413262 and 0.9 * 1.313262 + 0.1 * 0.313262 = 1.213262
    assert bradley_terry_loss(chosen, rejected, label_smoothing=0.1).item() == pytest.approx(
        (0.413262 + 1.213262) / 2, abs=1e-5
    )
    # centring 0.01 * mean((3)^2, (1)^2) = 0.05
    assert bradley_terry_loss(chosen, rejected, center_rewards_coefficient=0.01).item() == pytest.approx(
        (0.313262 + 1.313262) / 2 + 0.05, abs=1e-5
    )


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="label_smoothing"):
        RewardModelConfig(label_smoothing=0.5).validate()
    with pytest.raises(ValueError, match="trainable_blocks"):
        RewardModelConfig(trainable_blocks=-1).validate()
    with pytest.raises(ValueError, match="eval_fraction"):
        RewardModelConfig(eval_fraction=1.0).validate()


# -- the shared-prompt forward ------------------------------------------------------------------------------------
def test_shared_prompt_scores_and_gradients_equal_separate_full_forwards():
    model, tokenizer = load_reward_model(TINY_MODEL, seed=3)
    raw = [
        ("The movie was", " great fun", " bad"),
        ("The movie was", " great fun", " okay I guess, not more"),  # a repeated prompt and completion
        ("A long prompt about food and", " tasty", " awful awful"),
        (None, "Same start then good", "Same start then bad"),  # no prompt: the shared first tokens
    ]
    pairs = [encode_pair(tokenizer, p, c, r, 64, margin=0.5) for p, c, r in raw]
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    assert batch.prefix_ids.shape[0] == 3 and batch.continuation_ids.shape[0] == 7  # deduplicated
    results = {}
    for shared in (True, False):
        model.zero_grad()
        chosen, rejected = PairScorer(model, share_prompt_forward=shared)(batch)
        bradley_terry_loss(chosen, rejected, batch.margin).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[shared] = (chosen.detach(), rejected.detach(), grads)
    # reference: transformers' own sequence-classifier forward of each whole text, one at a time, unpadded
    with torch.no_grad():
        for i, pair in enumerate(pairs):
            for which, continuation in (("chosen", pair.chosen), ("rejected", pair.rejected)):
                ids = torch.tensor([list(pair.prefix) + list(continuation)])
                expected = model(input_ids=ids).logits[0, 0]
                got = results[True][0 if which == "chosen" else 1][i]
                assert got.item() == pytest.approx(expected.item(), abs=1e-5)
    torch.testing.assert_close(results[True][0], results[False][0], atol=1e-5, rtol=0)
    assert results[True][2].keys() == results[False][2].keys() and results[True][2]
    for name, grad in results[True][2].items():
        torch.testing.assert_close(grad, results[False][2][name], atol=1e-5, rtol=1e-4)


def test_frozen_block_cache_gives_the_full_forwards_scores_and_gradients():
    from agents.reward_model.frozen_trunk import CachedPairScorer, FrozenTrunkCache, cache_is_exact
    from agents.modeling.model_blocks import transformer_blocks
    from agents.reward_model.scoring import freeze_lower_blocks

    model, tokenizer = load_reward_model(TINY_MODEL, seed=5)
    blocks = len(transformer_blocks(model))
    assert blocks >= 2
    freeze_lower_blocks(model, 1)
    pairs = [encode_pair(tokenizer, p.prompt, p.chosen, p.rejected, 64, margin=0.25) for p in marker_pairs(6, seed=2)]
    cache = FrozenTrunkCache(model, blocks - 1, tokenizer.pad_token_id, batch_size=4)
    assert cache_is_exact(PairScorer(model), cache, pairs)
    results = []
    for scorer, batch in ((PairScorer(model), collate_pairs(pairs, tokenizer.pad_token_id)),
                          (CachedPairScorer(model, blocks - 1), cache.collate(pairs))):
        model.zero_grad()
        chosen, rejected = scorer(batch)
        bradley_terry_loss(chosen, rejected, batch.margin).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((chosen.detach(), rejected.detach(), grads))
    (c_full, r_full, g_full), (c_cached, r_cached, g_cached) = results
    torch.testing.assert_close(c_cached, c_full, atol=1e-5, rtol=0)
    torch.testing.assert_close(r_cached, r_full, atol=1e-5, rtol=0)
    assert g_full.keys() == g_cached.keys() and any(".layers." in n for n in g_full)  # the top block is trained
    for name, grad in g_full.items():
        torch.testing.assert_close(g_cached[name], grad, atol=1e-5, rtol=1e-4)
    assert len(cache.states) == len({(p.prefix, c) for p in pairs for c in (p.chosen, p.rejected)})


@pytest.mark.parametrize("shared", [True, False])
def test_mean_pooling_scores_the_mean_completion_state_in_every_path(shared):
    """Mean pooling: the score head on the mean final hidden state of the completion's tokens, the same through the
    shared-prefix forward, the full forward, the frozen-block cache, and the reward plugin's reading."""
    from agents.reward_model.frozen_trunk import CachedPairScorer, FrozenTrunkCache
    from agents.modeling.model_blocks import transformer_blocks

    model, tokenizer = load_reward_model(TINY_MODEL, seed=7)
    model.eval()
    raw = [(p.prompt, p.chosen, p.rejected) for p in marker_pairs(4, seed=4)]
    pairs = [encode_pair(tokenizer, p, c, r, 64) for p, c, r in raw]
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    with torch.no_grad():
        chosen, _ = PairScorer(model, share_prompt_forward=shared, pooling="mean")(batch)
        last, _ = PairScorer(model, share_prompt_forward=shared, pooling="last")(batch)
        first = len(transformer_blocks(model)) - 1
        cache = FrozenTrunkCache(model, first, tokenizer.pad_token_id)
        cached, _ = CachedPairScorer(model, first, pooling="mean")(cache.collate(pairs))
        for i, (prompt, completion, _) in enumerate(raw):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"]])
            hidden = model.base_model(input_ids=ids).last_hidden_state[0, len(prompt_ids):]
            expected = model.score(hidden.mean(0)).item()
            assert chosen[i].item() == pytest.approx(expected, abs=1e-5)
            assert cached[i].item() == pytest.approx(expected, abs=1e-5)
    assert not torch.allclose(chosen, last)


def test_mean_pooled_reward_model_round_trips_through_the_plugin(tmp_path):
    import rewards

    pairs = marker_pairs(24)
    trainer = RewardModelTrainer(
        pairs, tiny_config(pooling="mean", num_train_epochs=1, output_dir=str(tmp_path / "rm"))
    )
    trainer.train()
    assert json.loads((tmp_path / "rm" / "textenv_reward_model.json").read_text())["pooling"] == "mean"
    plugin = rewards.make("reward_model", path=str(tmp_path / "rm"))
    expected_c, expected_r = trainer.scores(list(range(6)))
    got = plugin([p.prompt for p in pairs[:6]] * 2, [p.chosen for p in pairs[:6]] + [p.rejected for p in pairs[:6]])
    np.testing.assert_allclose(got, torch.cat([expected_c, expected_r]).tolist(), atol=1e-4)
    with pytest.raises(ValueError, match="needs a prompt"):
        RewardModelTrainer([PreferencePair(chosen="a good day", rejected="a bad day")] * 2, tiny_config(pooling="mean"))


def test_training_with_the_frozen_block_cache_follows_the_same_trajectory():
    histories = []
    for cached in (True, False):
        trainer = RewardModelTrainer(
            marker_pairs(24), tiny_config(trainable_blocks=1, num_train_epochs=2, cache_frozen_blocks=cached)
        )
        assert (trainer.frozen_cache is not None) == cached
        histories.append([row.get("train_loss", row["eval_loss"]) for row in trainer.train().history])
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-4)


def test_frozen_block_cache_is_refused_where_it_would_not_be_exact():
    """A GPT-2 backbone adds position embeddings to ``inputs_embeds``: the check fails and training falls back."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    _, tokenizer = load_reward_model(TINY_MODEL)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128, num_labels=1,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config)
    with pytest.warns(UserWarning, match="cache_frozen_blocks"):
        trainer = RewardModelTrainer(marker_pairs(12), tiny_config(trainable_blocks=1), model=model,
                                     tokenizer=tokenizer)
    assert trainer.frozen_cache is None
    assert trainer.train().steps > 0


# -- training ----------------------------------------------------------------------------------------------------
def test_tiny_model_learns_a_marker_preference(trained_rm):
    _, result, _ = trained_rm
    first, best = result.history[0], result.best_eval_accuracy
    assert first["iteration"] == 0 and first["eval_accuracy"] <= 0.75  # untrained: near chance
    assert best >= 0.9
    assert any("train_loss" in row for row in result.history)


def test_without_held_out_pairs_the_trained_weights_are_kept():
    trainer = RewardModelTrainer(marker_pairs(16), tiny_config(eval_fraction=0.0, num_train_epochs=1))
    before = trainer.unwrapped_model.score.weight.detach().clone()
    result = trainer.train()
    assert result.steps == 2 and math.isnan(result.best_eval_accuracy) and not trainer.eval_index
    assert not torch.equal(trainer.unwrapped_model.score.weight, before)


def test_output_directory_loads_everywhere(trained_rm):
    import rewards
    from transformers import AutoModelForSequenceClassification

    directory, result, data = trained_rm
    metadata = json.loads((directory / "textenv_reward_model.json").read_text())
    assert metadata["data_sha256"] == __import__("hashlib").sha256(data.read_bytes()).hexdigest()
    assert metadata["metrics"]["best_eval_accuracy"] == pytest.approx(result.best_eval_accuracy)
    assert metadata["settings"]["learning_rate"] == 3e-3
    assert (directory / "model.safetensors").is_file() and (directory / "logs" / "progress.csv").is_file()
    assert not list(directory.parent.glob(".rm.*"))  # no temporary directory left behind

    prompts = ["item 1: sky lamp", "item 1: sky lamp"]
    completions = [" stone wonderful cloud", " stone chair cloud"]
    plugin = rewards.make({"name": "reward_model", "kwargs": {"path": str(directory)}})
    scores = plugin(prompts, completions)
    assert scores[0] > scores[1]
    classifier = rewards.make({"name": "classifier", "kwargs": {"model": str(directory)}})
    np.testing.assert_allclose(classifier(prompts, completions), scores, atol=1e-5)

    model = AutoModelForSequenceClassification.from_pretrained(directory)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None

    # the critic-from-RM value model: its value at the last token is the reward model's score
    from textenv.models import load_tokenizer

    tokenizer = load_tokenizer(str(directory))
    value_model = value_model_from_reward_model(directory, tokenizer=tokenizer)
    ids = torch.tensor([tokenizer(prompts[0] + completions[0], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        value = value_model(ids, torch.ones_like(ids))[0, -1].item()
    assert value == pytest.approx(scores[0], abs=1e-4)


def test_ensemble_aggregates_members(trained_rm, tmp_path):
    import rewards
    from safetensors.torch import load_file, save_file

    directory, _, _ = trained_rm
    other = tmp_path / "rm2"
    shutil.copytree(directory, other)
    weights = load_file(other / "model.safetensors")
    weights["score.weight"] = -0.5 * weights["score.weight"]  # a member that disagrees
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})

    prompts, completions = ["item 2: sky"] * 3, [" wonderful lamp", " lamp chair", " river"]
    members = [rewards.make({"name": "reward_model", "kwargs": {"path": str(p)}})(prompts, completions)
               for p in (directory, other)]
    stacked = np.stack(members)
    assert not np.allclose(stacked[0], stacked[1])
    for aggregate, expected in (
        ("mean", stacked.mean(0)),
        ("min", stacked.min(0)),
        ("mean_minus_std", stacked.mean(0) - 2.0 * stacked.std(0)),
    ):
        kwargs = {"paths": [str(directory), str(other)], "aggregate": aggregate, "lam": 2.0}
        spec = {"name": "reward_model", "kwargs": kwargs}
        np.testing.assert_allclose(rewards.make(spec)(prompts, completions), expected, atol=1e-6)
    with pytest.raises(ValueError, match="aggregate"):
        rewards.make({"name": "reward_model", "kwargs": {"paths": [str(directory)], "aggregate": "median"}})
    with pytest.raises(ValueError, match="exactly one of path"):
        rewards.make({"name": "reward_model", "kwargs": {}})


def test_save_is_atomic_and_keeps_the_old_model_on_failure(trained_rm, tmp_path, monkeypatch):
    directory, _, data = trained_rm
    target = tmp_path / "rm"
    shutil.copytree(directory, target)
    before = (target / "model.safetensors").read_bytes()
    trainer = RewardModelTrainer(str(data), tiny_config(num_train_epochs=1))

    def broken(self, tmp, metadata, logs=None):
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(RewardModelTrainer, "_write", broken)
    with pytest.raises(OSError, match="disk full"):
        trainer.save(target)
    assert (target / "model.safetensors").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rm")]


def test_train_rm_cli(tmp_path, capsys):
    from agents.cli import main

    data = tmp_path / "pairs.jsonl"
    write_preferences(data, marker_pairs(24, seed=1))
    out = tmp_path / "rm"
    code = main(["train-rm", "--data", str(data), "--out", str(out), "--model", TINY_MODEL, "--num-train-epochs", "1",
                 "--trainable-blocks", "1", "--progress-bar", "false", "--token-scores", "true"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output_dir"] == str(out) and (out / "config.json").is_file()
    metadata = json.loads((out / "textenv_reward_model.json").read_text())
    assert metadata["settings"]["trainable_blocks"] == 1
    assert metadata["token_scores"] is True and (out / "token_scores.safetensors").is_file()

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chosen": "a", "rejected": "b"}\n{"chosen": "x"}\n')
    assert main(["train-rm", "--data", str(bad), "--out", str(tmp_path / "x"), "--model", TINY_MODEL,
                 "--trainable-blocks", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.jsonl:2" in err[0] and "rejected" in err[0]
    assert main(["train-rm", "--data", str(data), "--out", str(tmp_path / "x"), "--label-smoothing", "0.7"]) == 2
    assert "label_smoothing" in capsys.readouterr().err


def test_trl_grpo_trainer_accepts_the_directory(trained_rm, tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from textenv.models import load_causal_lm, load_tokenizer

    directory, _, _ = trained_rm
    policy_dir = tmp_path / "policy"
    load_causal_lm(TINY_MODEL).save_pretrained(policy_dir)
    load_tokenizer(TINY_MODEL).save_pretrained(policy_dir)
    # TRL's bf16 default would stay in accelerate's process-wide state for later tests
    args = trl.GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=2, num_generations=2,
                          max_completion_length=4, report_to=[], use_cpu=True, bf16=False)
    trainer = trl.GRPOTrainer(model=str(policy_dir), reward_funcs=str(directory), args=args,
                              train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}))
    assert trainer.reward_funcs[0].config.num_labels == 1


# -- the overoptimization experiment ------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["bon", "rl"])
def test_gao_fit_recovers_known_coefficients(form):
    rng = np.random.default_rng(0)
    d = np.linspace(0.05, 3.0, 40)
    alpha, beta = 0.8, 0.3
    reward = gao_curve(d, alpha, beta, form) + rng.normal(0, 0.01, d.shape)
    fit = fit_gao(d, reward, form)
    assert fit["alpha"] == pytest.approx(alpha, abs=0.02) and fit["beta"] == pytest.approx(beta, abs=0.02)
    expected_peak = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
    assert fit["fit_peak_d"] == pytest.approx(expected_peak, rel=0.1)


def test_best_of_n_estimator_matches_enumeration():
    import itertools

    rng = np.random.default_rng(1)
    proxy, gold = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    for n in (1, 2, 3, 6):
        brute = np.mean([
            np.mean([
                gold[row, max(subset, key=lambda i: proxy[row, i])] for subset in itertools.combinations(range(6), n)
            ])
            for row in range(2)
        ])
        assert best_of_n_expectation(proxy, gold, n) == pytest.approx(brute, abs=1e-12)
    assert kl_best_of_n(1) == 0 and kl_best_of_n(64) == pytest.approx(math.log(64) - 63 / 64)


def test_overoptimization_smoke_runs_end_to_end(tmp_path, capsys):
    from agents.cli import main

    out = tmp_path / "overopt"
    assert main(["overoptimization", "--smoke", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["best_of_n"]) == {"12", "24", "24-ensemble"}
    rl_runs = {"grpo_N12", "grpo_N24", "lm-ppo_N12", "lm-ppo_N24"}  # RL against each proxy by default
    assert set(results["rl"]) == rl_runs
    assert all(len(c["kl"]) == 3 for c in results["rl"].values())
    assert set(results["proxies"]) == {"rm_N12", "rm_N24", "rm_N24_seed1"}
    assert len(results["fits"]) == 3 + 4 and (out / "overoptimization.png").stat().st_size > 1000
    assert {"pairs", "best_of_n", "total"} <= set(results["timings"])
    assert "| best-of-n | 12 |" in (out / "table.md").read_text()
    partial = json.loads((out / "partial_results.json").read_text())  # what a killed run would have kept
    assert set(partial["rl"]) == rl_runs and set(partial["best_of_n"]) == set(results["best_of_n"])


def test_overoptimization_reuses_a_pairs_file_and_refuses_one_too_small(tmp_path):
    from agents.reward_model.overoptimization import Experiment, OveroptimizationConfig

    labelled = [replace_gold(p, i) for i, p in enumerate(marker_pairs(30))]
    write_preferences(tmp_path / "pairs.jsonl", labelled)
    config = OveroptimizationConfig.smoke(str(tmp_path / "out"))
    config.pairs_file = str(tmp_path / "pairs.jsonl")
    experiment = Experiment(config)
    pairs = experiment.make_pairs()
    assert (
        len(pairs) == 30 and experiment.results["pairs"]["reused"] and not (tmp_path / "out" / "pairs.jsonl").exists()
    )
    config.pair_counts = (12, 40)
    with pytest.raises(ValueError, match="has 30 pairs; expected at least 40 gold-labelled pairs"):
        Experiment(config).make_pairs()
    write_preferences(tmp_path / "unlabelled.jsonl", marker_pairs(30))
    config.pairs_file, config.pair_counts = str(tmp_path / "unlabelled.jsonl"), (12, 24)
    with pytest.raises(ValueError, match="has no gold scores"):
        Experiment(config).make_pairs()


def replace_gold(pair: PreferencePair, i: int) -> PreferencePair:
    import dataclasses

    return dataclasses.replace(pair, gold_chosen=1.0 + i, gold_rejected=float(i))


def test_score_head_initialised_from_words_is_the_lm_head_row_difference():
    from textenv.models import load_causal_lm

    config = tiny_config(head_init_positive="good, great", head_init_negative="bad", num_train_epochs=1)
    trainer = RewardModelTrainer(marker_pairs(8), config)
    tokenizer = trainer.tokenizer
    rows = load_causal_lm(TINY_MODEL).get_output_embeddings().weight.detach()
    first = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("good", "great", "bad")]
    expected = (rows[first[0]] + rows[first[1]]) / 2 - rows[first[2]]
    torch.testing.assert_close(trainer.unwrapped_model.score.weight[0], expected)
    with pytest.raises(ValueError, match="expected both"):
        RewardModelConfig(head_init_positive="good").validate()
    with pytest.raises(ValueError, match="expected comma-separated words"):
        RewardModelConfig(head_init_positive=" , ", head_init_negative="bad").validate()


def test_base_blocks_keeps_the_first_blocks_and_the_directory_round_trips(tmp_path):
    import rewards
    from agents.modeling.model_blocks import transformer_blocks
    from textenv.models import load_causal_lm

    pairs = marker_pairs(16)
    causal = load_causal_lm(TINY_MODEL, seed=tiny_config().seed)  # the random init the trainer's model starts from
    trainer = RewardModelTrainer(pairs, tiny_config(base_blocks=1, num_train_epochs=1, output_dir=str(tmp_path / "rm")))
    model = trainer.unwrapped_model
    assert len(transformer_blocks(causal)) == 2 and len(transformer_blocks(model)) == 1
    assert model.config.num_hidden_layers == 1
    torch.testing.assert_close(model.base_model.layers[0].state_dict(), causal.model.layers[0].state_dict())
    torch.testing.assert_close(model.base_model.norm.weight, causal.model.norm.weight)
    trainer.train()
    plugin = rewards.make("reward_model", path=str(tmp_path / "rm"))
    expected_c, expected_r = trainer.scores(list(range(4)))
    got = plugin([p.prompt for p in pairs[:4]] * 2, [p.chosen for p in pairs[:4]] + [p.rejected for p in pairs[:4]])
    np.testing.assert_allclose(got, torch.cat([expected_c, expected_r]).tolist(), atol=1e-4)
    assert len(transformer_blocks(load_reward_model(str(tmp_path / "rm"), blocks=1)[0])) == 1
    value_model = value_model_from_reward_model(tmp_path / "rm", tokenizer=trainer.tokenizer)  # critic-from-RM
    ids = torch.tensor([trainer.tokenizer(pairs[0].prompt + pairs[0].chosen, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert value_model(ids, torch.ones_like(ids))[0, -1].item() == pytest.approx(got[0], abs=1e-4)
    with pytest.raises(ValueError, match="base_blocks=2, but .* is a reward model with 1 blocks"):
        load_reward_model(str(tmp_path / "rm"), blocks=2)
    with pytest.raises(ValueError, match=r"base_blocks=3, but the model has 2 blocks; expected 1..2"):
        RewardModelTrainer(pairs, tiny_config(base_blocks=3))
    with pytest.raises(ValueError, match="base_blocks"):
        RewardModelConfig(base_blocks=0).validate()


# -- the token-score table -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_token_scores_add_the_tables_sum_over_the_completion_in_every_path(pooling):
    """Score = head + the sum of the table over the completion's tokens, through the shared-prefix forward, the full
    forward and the frozen-block cache; the table's gradient reaches exactly the tokens the completions hold."""
    from agents.modeling.model_blocks import transformer_blocks
    from agents.reward_model.frozen_trunk import CachedPairScorer, FrozenTrunkCache, cache_is_exact
    from agents.reward_model.scoring import TokenScores

    model, tokenizer = load_reward_model(TINY_MODEL, seed=7)
    model.eval()
    vocab = model.get_input_embeddings().num_embeddings
    table = TokenScores(vocab, torch.randn(vocab, generator=torch.Generator().manual_seed(0)))
    raw = [(p.prompt, p.chosen, p.rejected) for p in marker_pairs(4, seed=4)]
    pairs = [encode_pair(tokenizer, p, c, r, 64) for p, c, r in raw]
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    first = len(transformer_blocks(model)) - 1
    cache = FrozenTrunkCache(model, first, tokenizer.pad_token_id)
    head_only, _ = PairScorer(model, pooling=pooling)(batch)
    expected = torch.stack([head_only[i] + table.weight[list(pair.chosen)].sum() for i, pair in enumerate(pairs)])
    assert cache_is_exact(PairScorer(model, pooling=pooling, token_scores=table), cache, pairs)
    for scorer, scored in (
        (PairScorer(model, share_prompt_forward=True, pooling=pooling, token_scores=table), batch),
        (PairScorer(model, share_prompt_forward=False, pooling=pooling, token_scores=table), batch),
        (CachedPairScorer(model, first, pooling=pooling, token_scores=table), cache.collate(pairs)),
    ):
        table.zero_grad()
        chosen, rejected = scorer(scored)
        torch.testing.assert_close(chosen.detach(), expected.detach(), atol=1e-5, rtol=0)
        (chosen.sum() - rejected.sum()).backward()
        expected_grad = torch.zeros(vocab)
        for pair in pairs:  # d(sum c - sum r)/d table[t] = occurrences in chosen - in rejected
            for t in pair.chosen:
                expected_grad[t] += 1
            for t in pair.rejected:
                expected_grad[t] -= 1
        torch.testing.assert_close(table.weight.grad, expected_grad)
    zero = TokenScores(vocab)
    torch.testing.assert_close(PairScorer(model, pooling=pooling, token_scores=zero)(batch)[0], head_only)


def test_token_scores_learn_the_marker_and_round_trip_through_the_plugin(tmp_path):
    import rewards
    from rewards import RewardPluginError
    from safetensors.torch import load_file, save_file

    pairs = marker_pairs(80)
    out = tmp_path / "rm"
    trainer = RewardModelTrainer(pairs, tiny_config(trainable_blocks=0, pooling="mean", token_scores=True,
                                                    token_scores_learning_rate=0.05, output_dir=str(out)))
    assert trainer.trainable_parameters > trainer.token_scores.weight.numel()  # the head and norm train too
    result = trainer.train()
    assert result.history[0]["eval_accuracy"] <= 0.75 and result.best_eval_accuracy >= 0.9 - 1e-6  # 18 of 20
    table = trainer.token_scores.weight.detach()
    marker = trainer.tokenizer(MARKER, add_special_tokens=False)["input_ids"]
    seen = sorted({t for p in trainer.encoded for t in p.chosen + p.rejected})
    assert len(marker) == 1 and int(table[seen].argmax()) == seen.index(marker[0])  # the marker scores highest
    assert table[marker[0]] > 0 and not table[[t for t in range(len(table)) if t not in set(seen)]].any()

    metadata = json.loads((out / "textenv_reward_model.json").read_text())
    assert metadata["token_scores"] is True
    saved = load_file(out / "token_scores.safetensors")["token_scores"]
    torch.testing.assert_close(saved, table)
    plugin = rewards.make("reward_model", path=str(out))
    expected_c, expected_r = trainer.scores(list(range(6)))
    got = plugin([p.prompt for p in pairs[:6]] * 2, [p.chosen for p in pairs[:6]] + [p.rejected for p in pairs[:6]])
    np.testing.assert_allclose(got, torch.cat([expected_c, expected_r]).tolist(), atol=1e-4)
    with pytest.raises(ValueError, match="token_scores=True; .* use the 'reward_model' reward"):
        rewards.make("classifier", model=str(out))  # it would read the head alone, at the last token

    # trained further: from the saved table, and only with token_scores on
    again = RewardModelTrainer(pairs, tiny_config(model=str(out), trainable_blocks=0, pooling="mean",
                                                  token_scores=True))
    torch.testing.assert_close(again.token_scores.weight.detach(), table)
    with pytest.raises(ValueError, match="token-score table; train it further with token_scores=True"):
        RewardModelTrainer(pairs, tiny_config(model=str(out), trainable_blocks=0, pooling="mean"))

    # a damaged table is refused with the file named, not read as zeros
    broken = tmp_path / "broken"
    for name, tensors, message in (
        ("missing", None, "token_scores.safetensors is missing"),
        ("shape", {"token_scores": torch.zeros(5)}, r"expected one tensor 'token_scores' of shape"),
        ("nan", {"token_scores": torch.full_like(table, float("nan"))}, "NaN or infinite"),
    ):
        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(out, broken)
        (broken / "token_scores.safetensors").unlink()
        if tensors is not None:
            save_file(tensors, broken / "token_scores.safetensors")
        with pytest.raises(RewardPluginError, match=message):  # the plugin's wrapper around the loader's error
            rewards.make("reward_model", path=str(broken))(["a"], [" b"])


def test_token_scores_settings_are_checked():
    with pytest.raises(ValueError, match="token_scores=True sums over the completion's tokens, so every pair needs"):
        RewardModelTrainer([PreferencePair(chosen="a good day", rejected="a bad day")] * 2,
                           tiny_config(token_scores=True))
    with pytest.raises(ValueError, match="token_scores_learning_rate"):
        RewardModelConfig(token_scores_learning_rate=0.0).validate()
    with pytest.raises(ValueError, match="token_scores_weight_decay"):
        RewardModelConfig(token_scores_weight_decay=-1.0).validate()
    with pytest.raises(ValueError, match="token_scores"):
        RewardModelConfig(token_scores="yes").validate()
