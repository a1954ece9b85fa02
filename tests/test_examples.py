"""The examples run end to end on tiny budgets (tiny random-init model, a few hundred SB3 steps) and write what
they promise. Their measured, full-size results are in the README; this only guards them against rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_example(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(("agent", "fluency_source"), [("grpo", "reference"), ("lm-ppo", "plugin")])
def test_rlhf_sentiment_example(tmp_path, agent, fluency_source):
    out = tmp_path / "run"
    run_example(str(REPO / "examples" / "rlhf_sentiment.py"), "--agent", agent, "--model", "tiny-random-smollm2",
                "--max-iterations", "2", "--num-envs", "8", "--eval-every", "1", "--fluency-source", fluency_source,
                "--out", str(out), cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert results["iterations"] == 2 and results["episodes"] == 16
    for side in ("before", "after"):
        assert -1 <= results[side]["sentiment_mean"] <= 1 and 0 < results[side]["distinct_2_per_completion"] <= 1
        assert 0 < results[side]["distinct_2_all"] <= 1 and 0 <= results[side]["top_4gram_share"] <= 1
    assert results["before"]["kl_to_reference"] == 0.0
    assert [point["iteration"] for point in results["held_out_curve"]] == [1, 2]
    # one checkpoint, written when training ended
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["iteration"] == 2
    assert (out / "learning_curves.png").stat().st_size > 10_000
    progress = (out / "progress.csv").read_text().splitlines()
    # the default composite reward's parts; the fluency term from the trainer's reference or from the env's plugin
    fluency = "reward_reference_fluency_mean" if fluency_source == "reference" else "reward_fluency_mean"
    assert len(progress) == 3 and "reward_repetition_mean" in progress[0] and fluency in progress[0].split(",")


def test_train_and_compare_sb3_examples(tmp_path):
    stdout = run_example(str(REPO / "examples" / "train_sb3.py"), "--steps", "512", "--random-episodes", "40",
                         "--episodes", "20", "--save", str(tmp_path / "agent"), cwd=tmp_path)
    assert "random policy on the same env: mean reward" in stdout and (tmp_path / "agent.zip").is_file()
    out = tmp_path / "compare"
    run_example(str(REPO / "examples" / "compare_sb3.py"), "--algos", "ppo", "dqn", "--seeds", "0", "--steps", "512",
                "--random-episodes", "40", "--last", "20", "--out", str(out), cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"ppo", "dqn"}
    assert (out / "learning_curves.png").stat().st_size > 10_000


def test_rlhf_sentiment_against_a_learned_proxy_reward(tmp_path):
    """``--proxy-reward DIR``: the training reward is the reward model (standardised), held-out scores are VADER
    (the gold) beside the proxy's."""
    from agents.reward_model import RewardModelConfig, train_reward_model
    from textenv.preferences import PreferencePair

    pairs = [PreferencePair(prompt=f"Review {i}:", chosen=" a wonderful film", rejected=" a dull film")
             for i in range(8)]
    train_reward_model(pairs, RewardModelConfig(model="tiny-random-smollm2", trainable_blocks=1, num_train_epochs=1,
                                                progress_bar=False, output_dir=str(tmp_path / "rm")))
    out = tmp_path / "run"
    run_example(str(REPO / "examples" / "rlhf_sentiment.py"), "--agent", "grpo", "--model", "tiny-random-smollm2",
                "--max-iterations", "1", "--num-envs", "8", "--eval-every", "1", "--proxy-reward",
                str(tmp_path / "rm"), "--out", str(out), cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert "proxy_mean" in results["before"] and "proxy_mean" in results["held_out_curve"][0]
    header = (out / "progress.csv").read_text().splitlines()[0]
    assert "reward_reward_model_mean" in header and "reward_sentiment_mean" not in header


def test_reward_model_data_ceiling_counts_what_training_texts_cover(tmp_path):
    """The data-only ceiling is VADER with its lexicon cut to the training texts' words: 1.0 when the training texts
    hold every test word, one half (all ties) when they hold none; the oracle-feature learner recovers the signs, and
    the bag-of-words learner and the learners on a frozen model's features also find a marker word VADER does not
    know."""
    import importlib.util

    from textenv.preferences import PreferencePair, write_preferences

    spec = importlib.util.spec_from_file_location("ceiling", REPO / "examples" / "reward_model_data_ceiling.py")
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    good, bad = ["great", "happy", "love", "wonderful"], ["awful", "sad", "hate", "terrible"]
    test = [PreferencePair(f"a {g} day", f"a {b} day", gold_chosen=0.6, gold_rejected=-0.5) for g, b in zip(good, bad)]
    covered = [PreferencePair(f"so {g} now", f"so {b} now", gold_chosen=0.6, gold_rejected=-0.5)
               for g, b in zip(good, bad)] * 3
    blind = [PreferencePair("a nice cake", "a bland cake", gold_chosen=0.4, gold_rejected=0.0)] * 3
    write_preferences(tmp_path / "covered.jsonl", covered)
    write_preferences(tmp_path / "blind.jsonl", blind)
    write_preferences(tmp_path / "test.jsonl", test)
    rows = ceiling.main(["--train", str(tmp_path / "covered.jsonl"), "--test", str(tmp_path / "test.jsonl"),
                         "--counts", "12", "--json", str(tmp_path / "rows.json")])
    assert rows[0]["lexicon_words_seen"] == 8 and rows[0]["unseen_share_of_test_lexicon_occurrences"] == 0
    assert rows[0]["ceiling_accuracy"] == 1.0 and rows[0]["full_lexicon_accuracy"] == 1.0
    assert rows[0]["oracle_feature_bt_accuracy"] == 1.0  # every test pair's words were compared in training
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    rows = ceiling.main(["--train", str(tmp_path / "blind.jsonl"), "--test", str(tmp_path / "test.jsonl"),
                         "--counts", "3"])
    assert rows[0]["unseen_share_of_test_lexicon_occurrences"] == 1.0 and rows[0]["ceiling_accuracy"] == 0.5
    # A word outside VADER's lexicon that marks the chosen text: the bag-of-words learner finds it, the oracle cannot.
    marked = [PreferencePair(f"the zorp {w}", f"the plain {w}", gold_chosen=0.2, gold_rejected=0.0)
              for w in ("cake", "film", "song", "walk")]
    write_preferences(tmp_path / "marked.jsonl", marked)
    write_preferences(tmp_path / "marked_test.jsonl", [PreferencePair("a zorp day", "a plain day", gold_chosen=0.2,
                                                                      gold_rejected=0.0)])
    rows = ceiling.main(["--train", str(tmp_path / "marked.jsonl"), "--test", str(tmp_path / "marked_test.jsonl"),
                         "--counts", "4"])
    assert rows[0]["oracle_feature_bt_accuracy"] == 0.5 and rows[0]["bag_of_words_bt_accuracy"] == 1.0
    assert "model_features_bt_accuracy" not in rows[0]  # no --model: no model features
    # A frozen (random-init) model's mean-pooled embeddings carry the marker token too: the learners on them find it.
    rows = ceiling.main(["--train", str(tmp_path / "marked.jsonl"), "--test", str(tmp_path / "marked_test.jsonl"),
                         "--counts", "4", "--model", "tiny-random-smollm2", "--layers", "0", "1", "--token-mlp"])
    assert rows[0]["model_features_bt_accuracy"] == 1.0 and rows[0]["model_features_and_words_bt_accuracy"] == 1.0
    assert "token_mlp_accuracy" in rows[0]
    # The per-token MLP learns the marker's side: the test pair is scored as the training labels say, either way
    # round (untrained, it scores this pair the wrong way).
    same_context = [PreferencePair("the zorp day", "the plain day", gold_chosen=0.2, gold_rejected=0.0)]
    flipped = [PreferencePair(p.rejected, p.chosen, gold_chosen=0.2, gold_rejected=0.0) for p in marked]
    states = ceiling.completion_states("tiny-random-smollm2", [0], marked + flipped + same_context)
    assert ceiling.token_mlp_accuracy(marked, same_context, [], states, epochs=0)["accuracy"] == 0.0
    assert ceiling.token_mlp_accuracy(marked, same_context, [], states)["accuracy"] == 1.0
    assert ceiling.token_mlp_accuracy(flipped, same_context, [], states)["accuracy"] == 0.0
    with pytest.raises(SystemExit, match="--token-mlp reads a model's states: give --model too"):
        ceiling.main(["--train", str(tmp_path / "marked.jsonl"), "--test", str(tmp_path / "marked_test.jsonl"),
                      "--counts", "4", "--token-mlp"])
    with pytest.raises(SystemExit, match=r"--layers \[9\]: tiny-random-smollm2 has 2 blocks; expected layers in 0..2"):
        ceiling.main(["--train", str(tmp_path / "marked.jsonl"), "--test", str(tmp_path / "marked_test.jsonl"),
                      "--counts", "4", "--model", "tiny-random-smollm2", "--layers", "9"])
    with pytest.raises(SystemExit, match=r"--counts \[13\].*has 12 pairs"):
        ceiling.main(["--train", str(tmp_path / "covered.jsonl"), "--test", str(tmp_path / "test.jsonl"),
                      "--counts", "13"])


def test_rlhf_seeds_runs_each_seed_and_summarises(tmp_path):
    out = tmp_path / "seeds"
    stdout = run_example(str(REPO / "examples" / "rlhf_seeds.py"), "--seeds", "0", "1", "--parallel", "2", "--out",
                         str(out), "--", "--model", "tiny-random-smollm2", "--max-iterations", "1", "--num-envs", "4",
                         cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == ["seed0", "seed1"] and "| held_out_vader |" in stdout
    runs = [json.loads((out / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [r["settings"]["seed"] for r in runs] == [0, 1] and runs[0]["cpu"]["class"] in summary["cpus"][0]["class"]
    vader = summary["figures"]["held_out_vader"]
    assert vader["values"] == [r["after"]["sentiment_mean"] for r in runs]
    assert vader["mean"] == pytest.approx(sum(vader["values"]) / 2) and vader["min"] <= vader["mean"] <= vader["max"]
    assert summary["figures"]["iterations"]["values"] == [1.0, 1.0]
    done = subprocess.run([sys.executable, str(REPO / "examples" / "rlhf_seeds.py"), "--out", str(out), "--",
                           "--seed", "3"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "['--seed'] after '--'" in done.stderr


def test_reward_model_accuracy_scores_every_test_file_and_skips_finished_runs(tmp_path, capsys):
    """The accuracy sweep trains one model per (N, variant, seed), scores it on each test file (the first file's figures
    are the row's), keeps finished runs in --out, and skips them when rerun."""
    import importlib.util

    from textenv.preferences import PreferencePair, write_preferences

    spec = importlib.util.spec_from_file_location("accuracy", REPO / "examples" / "reward_model_accuracy.py")
    accuracy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(accuracy)

    def pairs(count: int, start: int, gap: float) -> list[PreferencePair]:
        return [PreferencePair(f" a fine day {i}", f" a dull day {i}", prompt=f"prompt {i // 2}", gold_chosen=gap,
                               gold_rejected=0.0) for i in range(start, start + count)]

    write_preferences(tmp_path / "train.jsonl", pairs(12, 0, 0.5))
    write_preferences(tmp_path / "a.jsonl", pairs(4, 100, 0.5) + pairs(2, 200, 0.1))
    write_preferences(tmp_path / "b.jsonl", pairs(3, 300, 0.5))
    out = tmp_path / "runs.json"
    argv = ["--train", str(tmp_path / "train.jsonl"), "--test", f"{tmp_path / 'a.jsonl'},{tmp_path / 'b.jsonl'}",
            "--sizes", "8", "--variants", "mean+blocks0", "--model", "tiny-random-smollm2", "--out", str(out),
            "--seeds", "42,43"]
    accuracy.main(argv)
    row, other_seed = json.loads(out.read_text())["runs"]
    assert (row["seed"], other_seed["seed"]) == (42, 43) and row["history"] != other_seed["history"]
    assert row["n"] == 8 and row["test_pairs"] == 6
    tests = row["tests"]
    assert list(tests) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert [t["pairs"] for t in tests.values()] == [6, 3]
    assert tests[str(tmp_path / "a.jsonl")]["accuracy"] == row["test_accuracy"]
    assert tests[str(tmp_path / "a.jsonl")]["accuracy_gold_gap_0.3"] == row["test_accuracy_gold_gap_0.3"]
    assert all(0.0 <= t["accuracy"] <= 1.0 for t in tests.values())
    assert "a.jsonl" in capsys.readouterr().out
    accuracy.main(argv)  # finished: nothing trains again
    assert json.loads(out.read_text())["runs"] == [row, other_seed]
    printed = capsys.readouterr().out
    assert "| 8 | mean+blocks0 | 42 |" in printed and "| 8 | mean+blocks0 | 43 |" in printed
