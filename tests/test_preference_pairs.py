"""Preference pairs generated from an env with a tiny policy and a cheap gold reward: labels, reproducibility,
resuming a partial file, and the ``textenv pairs`` command's one-line errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from agents.preferences.pairs import PairConfig, generate_pairs, label_pair, settings_path
from agents.cli import main
from textenv.preferences import load_preferences

PROMPTS = ["The film was", "Honestly the plot", "I walked out of the cinema", "The lead actor"]
# gold: closeness of the completion's word count to 2 -- random tokens give completions of different word counts
SETTINGS = dict(
    policy="tiny-random-smollm2", gold={"name": "length", "kwargs": {"target": 2}}, k=3, prompts=PROMPTS,
    prompts_per_batch=2, env_kwargs={"max_new_tokens": 5},
)


@pytest.fixture(scope="module")
def policy():
    from textenv.models import load_causal_lm

    return load_causal_lm("tiny-random-smollm2", seed=0)


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_deterministic_labels_prefer_higher_gold_and_keep_prompt_and_scores(tmp_path, policy):
    config = PairConfig(pairs=8, **SETTINGS)
    summary = generate_pairs(config, tmp_path / "p.jsonl", model=policy, progress=False)
    pairs = load_preferences(tmp_path / "p.jsonl")
    assert summary["pairs"] == summary["written"] == len(pairs) == 8
    assert all(p.gold_chosen > p.gold_rejected for p in pairs)
    assert {p.prompt for p in pairs} <= set(PROMPTS) and len({p.prompt for p in pairs}) > 1
    assert summary["dropped"]["tie"] > 0  # equal word counts are ties, and dropped
    # the gold scores are the gold plugin's scores of the stored completions
    import rewards

    gold = rewards.make("length", target=2)
    np.testing.assert_allclose([p.gold_chosen for p in pairs], gold(["x"] * 8, [p.chosen for p in pairs]), rtol=1e-6)
    # the same settings give the same file
    generate_pairs(config, tmp_path / "again.jsonl", model=policy, progress=False)
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "p.jsonl").read_text()


def test_bradley_terry_labels_follow_the_gold_gap_with_temperature(tmp_path, policy):
    hot = PairConfig(pairs=12, labels="bt", temperature=10.0, **SETTINGS)
    cold = PairConfig(pairs=12, labels="bt", temperature=1e-4, **SETTINGS)
    generate_pairs(hot, tmp_path / "hot.jsonl", model=policy, progress=False)
    generate_pairs(cold, tmp_path / "cold.jsonl", model=policy, progress=False)
    hot_pairs, cold_pairs = load_preferences(tmp_path / "hot.jsonl"), load_preferences(tmp_path / "cold.jsonl")
    # a hot draw is nearly a coin flip: some pairs prefer the lower gold; a cold one is the deterministic label,
    # and a BT draw keeps ties (each side wins half of them)
    assert any(p.gold_chosen < p.gold_rejected for p in hot_pairs)
    assert all(p.gold_chosen >= p.gold_rejected for p in cold_pairs)


def test_label_pair_probabilities():
    rng = np.random.default_rng(0)
    draws = rng.random((20000, 2))
    bt = PairConfig(labels="bt", temperature=0.5)
    wins = np.mean([label_pair(1.0, 0.5, u, v, bt) for u, v in draws])
    assert abs(wins - 1 / (1 + np.exp(-1.0))) < 0.015  # sigmoid((1.0 - 0.5) / 0.5)
    noisy = PairConfig(labels="deterministic", label_noise=0.2)
    flipped = np.mean([not label_pair(1.0, 0.0, u, v, noisy) for u, v in draws])
    assert abs(flipped - 0.2) < 0.015
    assert label_pair(0.3, 0.3, 0.1, 0.9, PairConfig()) is None  # a deterministic tie


def test_resume_after_a_kill_gives_the_uninterrupted_file(tmp_path, policy):
    config = PairConfig(pairs=10, **SETTINGS)
    whole = tmp_path / "whole.jsonl"
    generate_pairs(config, whole, model=policy, progress=False)
    lines = whole.read_text().splitlines(keepends=True)

    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(lines[:5]) + lines[5][:20])  # killed while writing the 6th pair
    settings_path(whole).rename(settings_path(partial))
    summary = generate_pairs(config, partial, model=policy, progress=False)
    assert summary["written"] == 5 and summary["pairs"] == 10
    assert partial.read_text() == whole.read_text()

    # a larger N tops the file up and keeps what is there
    generate_pairs(PairConfig(pairs=13, **SETTINGS), partial, model=policy, progress=False)
    assert records(partial)[:10] == records(whole) and len(records(partial)) == 13
    # nothing to do when the file is full
    assert generate_pairs(config, partial, model=policy, progress=False)["written"] == 0


def test_min_gap_keeps_exactly_the_wider_pairs_of_the_same_rounds(tmp_path, policy):
    everything = tmp_path / "all.jsonl"
    generate_pairs(PairConfig(pairs=30, **SETTINGS), everything, model=policy, progress=False)
    gaps = [abs(r["gold_chosen"] - r["gold_rejected"]) for r in records(everything)]
    min_gap = float(np.median(gaps))
    assert min(gaps) < min_gap  # some pairs of these rounds are narrower than the cut
    wide = tmp_path / "wide.jsonl"
    summary = generate_pairs(PairConfig(pairs=6, min_gap=min_gap, **SETTINGS), wide, model=policy, progress=False)
    kept = records(wide)
    assert len(kept) == 6 and summary["dropped"]["small_gap"] > 0
    assert all(abs(r["gold_chosen"] - r["gold_rejected"]) >= min_gap for r in kept)
    # the same rounds, the same samples: the filtered file is the unfiltered one's wider pairs, in order
    assert kept == [r for r in records(everything) if abs(r["gold_chosen"] - r["gold_rejected"]) >= min_gap][:6]
    # min_gap is recorded (a resume with another value is refused); a file written before it existed resumes
    assert json.loads(settings_path(wide).read_text())["min_gap"] == min_gap
    assert "min_gap" not in json.loads(settings_path(everything).read_text())
    with pytest.raises(ValueError, match="other settings"):
        generate_pairs(PairConfig(pairs=8, **SETTINGS), wide, model=policy, progress=False)


def test_resume_with_other_settings_is_refused(tmp_path, policy):
    out = tmp_path / "p.jsonl"
    generate_pairs(PairConfig(pairs=2, **SETTINGS), out, model=policy, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(seed: 0 in the file, 1 now\)"):
        generate_pairs(PairConfig(pairs=4, **{**SETTINGS, "seed": 1}), out, model=policy, progress=False)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"chosen": "a", "rejected": "b"}\n')
    with pytest.raises(ValueError, match="not written by `textenv pairs`"):
        generate_pairs(PairConfig(pairs=2, **SETTINGS), foreign, model=policy, progress=False)


@pytest.mark.parametrize(
    "field, value, expected",
    [("k", 1, "an int >= 2"), ("labels", "vote", "one of"), ("temperature", 0, "a number > 0"),
     ("label_noise", 1.0, "in [0, 1)"), ("pairs", 0, "an int >= 1"), ("min_gap", -0.1, "a number >= 0"),
     ("min_gap", float("nan"), "a number >= 0")],
)
def test_config_errors_name_the_value(field, value, expected):
    with pytest.raises(ValueError, match=re.escape(f"{field}={value!r}; expected {expected}")):
        PairConfig(**{field: value})


def test_pairs_command_writes_pairs(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS))
    gold = json.dumps({"name": "length", "kwargs": {"target": 2}})
    argv = ["pairs", "--policy", "tiny-random-smollm2", "--pairs", "3", "--gold", gold, "--out", str(out), "--k", "3",
            "--labels", "bt", "--prompts", str(prompts), "--prompts-per-batch", "2",
            "--env-kwargs", "max_new_tokens=5", "--no-progress"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] == 3
    assert len(load_preferences(out)) == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--env", "Nope-v0"], "unknown env 'Nope-v0'"),
        (["--gold", "no-such-reward"], "--gold 'no-such-reward': "),
        (["--gold", "[1,"], "not valid JSON"),
        (["--k", "1"], "k=1; expected an int >= 2"),
        (["--label-noise", "1.5"], "label_noise=1.5; expected in [0, 1)"),
        (["--min-gap", "-1"], "min_gap=-1.0; expected a number >= 0"),
        (["--env-kwargs", "max_new_tokens=x"], "env argument max_new_tokens='x': expected int"),
        (["--policy", "/no/such/model"], "/no/such/model"),
    ],
)
def test_pairs_command_errors_are_one_line(tmp_path, capsys, extra, message):
    argv = ["pairs", "--policy", "tiny-random-smollm2", "--pairs", "2", "--gold", "length", "--out",
            str(tmp_path / "x.jsonl"), "--no-progress", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("textenv: error: ") and err.count("\n") == 1 and message in err
