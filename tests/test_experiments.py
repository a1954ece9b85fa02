"""The studies' scripts run end to end through their ``python -m experiments.<study>.<script>`` entry points on tiny
budgets (tiny random-init model, a few rounds, a few hundred SB3 steps) and write what they promise. Their measured
results are in each study's REPORT.md; this only guards the commands against rot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from test_examples import ENV, REPO

pytestmark = pytest.mark.studies  # make test-studies (CI runs it); the default suite tests the library

TIME_TO_TARGET = "experiments.grpo_vs_trl.rlhf_time_to_target"


def run_study(module: str, *args: str) -> str:
    """``python -m module args`` from the repository root; its stdout (the test fails on a non-zero exit)."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(("agent", "fluency_source"), [("grpo", "reference"), ("lm-ppo", "plugin")])
def test_rlhf_sentiment_study_run(tmp_path, agent, fluency_source):
    out = tmp_path / "run"
    run_study("experiments.rlhf_seeds.rlhf_sentiment", "--agent", agent, "--model", "tiny-random-smollm2",
                "--max-iterations", "2", "--num-envs", "8", "--eval-every", "1", "--fluency-source", fluency_source,
                "--out", str(out))
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
    run_study("experiments.rlhf_seeds.rlhf_sentiment", "--agent", "grpo", "--model", "tiny-random-smollm2",
                "--max-iterations", "1", "--num-envs", "8", "--eval-every", "1", "--proxy-reward",
                str(tmp_path / "rm"), "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    assert "proxy_mean" in results["before"] and "proxy_mean" in results["held_out_curve"][0]
    header = (out / "progress.csv").read_text().splitlines()[0]
    assert "reward_reward_model_mean" in header and "reward_sentiment_mean" not in header


def test_reward_model_data_ceiling_counts_what_training_texts_cover(tmp_path):
    """The data-only ceiling is VADER with its lexicon cut to the training texts' words: 1.0 when the training texts
    hold every test word, one half (all ties) when they hold none; the oracle-feature learner recovers the signs, and
    the bag-of-words learner and the learners on a frozen model's features also find a marker word VADER does not
    know."""
    from experiments.rm_data_ceiling import reward_model_data_ceiling as ceiling
    from textenv.preferences import PreferencePair, write_preferences

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


def test_compare_sb3_study(tmp_path):
    out = tmp_path / "compare"
    run_study("experiments.sb3_comparison.compare_sb3", "--algos", "ppo", "dqn", "--seeds", "0", "--steps", "512",
              "--random-episodes", "40", "--last", "20", "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"ppo", "dqn"}
    assert (out / "learning_curves.png").stat().st_size > 10_000


def test_dialogue_baselines_study():
    """The word games' baselines: asking "small" and then guessing beats random play on MossGuessWords-v0."""
    results = json.loads(run_study("experiments.multi_turn.dialogue_baselines", "--episodes", "16",
                                   "--chat-episodes", "0"))
    assert set(results) == {"MossGuessWords-v0/random", "MossGuessWords-v0/scripted", "MossGuess-v0/random"}
    assert all(result["episodes"] == 16 for result in results.values())
    assert results["MossGuessWords-v0/scripted"]["mean"] > results["MossGuessWords-v0/random"]["mean"] + 0.3


def test_rlhf_seeds_runs_each_seed_and_summarises(tmp_path):
    out = tmp_path / "seeds"
    stdout = run_study("experiments.rlhf_seeds.rlhf_seeds", "--seeds", "0", "1", "--parallel", "2", "--out", str(out),
                       "--", "--model", "tiny-random-smollm2", "--max-iterations", "1", "--num-envs", "4")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == ["seed0", "seed1"] and "| held_out_vader |" in stdout
    runs = [json.loads((out / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [r["settings"]["seed"] for r in runs] == [0, 1] and runs[0]["cpu"]["class"] in summary["cpus"][0]["class"]
    vader = summary["figures"]["held_out_vader"]
    assert vader["values"] == [r["after"]["sentiment_mean"] for r in runs]
    assert vader["mean"] == pytest.approx(sum(vader["values"]) / 2) and vader["min"] <= vader["mean"] <= vader["max"]
    assert summary["figures"]["iterations"]["values"] == [1.0, 1.0]
    done = subprocess.run([sys.executable, "-m", "experiments.rlhf_seeds.rlhf_seeds", "--out", str(out), "--",
                           "--seed", "3"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "['--seed'] after '--'" in done.stderr


def test_reward_model_accuracy_scores_every_test_file_and_skips_finished_runs(tmp_path, capsys):
    """The accuracy sweep trains one model per (N, variant, seed), scores it on each test file (the first file's figures
    are the row's), keeps finished runs in --out, and skips them when rerun."""
    from experiments.rm_accuracy import reward_model_accuracy as accuracy
    from textenv.preferences import PreferencePair, write_preferences

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


def test_grpo_ablation_smoke_merges_variants_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "ablation"
    done = subprocess.run([sys.executable, "-m", "experiments.grpo_ablation.grpo_ablation", "--smoke", "--out",
                           str(out)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"baseline/seed0", "trl_all/seed0"}
    assert results["cpus"][0]["class"] in ("AVX512-BF16", "AVX512 (no BF16)", "AVX2-only", "no AVX2", "unknown")
    assert results["untuned"]["untuned"]["kl_to_reference"] == 0.0
    baseline, trl = results["runs"]["baseline/seed0"], results["runs"]["trl_all/seed0"]
    assert baseline["changes"] == {} and trl["changes"]["lr_schedule"] == "linear"
    # 2 rounds x 2 steps: the linear decay's last step runs at lr * 1/4, the constant one at lr
    assert baseline["final_learning_rate"] == pytest.approx(2e-4) and trl["final_learning_rate"] == pytest.approx(5e-5)
    for run in (baseline, trl):
        held_out = run["held_out"]
        assert -1 <= held_out["sentiment_mean"] <= 1 and held_out["sentiment_stderr"] > 0
        assert held_out["perplexity_under_reference"] > 1 and 0 < held_out["distinct_2_all"] <= 1
        assert run["rounds"] == 2 and run["cpu_seconds"] > 0 and run["train_seconds"] > 0
    assert "| baseline |" in done.stdout and "| trl_all |" in done.stdout

    from experiments.grpo_ablation import grpo_ablation as ablation

    # a second process's run of another variant merges in; --table-only shows every variant
    settings = {**results["settings"], "threads": 1}
    ablation.merge(out / "results.json", settings, results["cpus"][0], "linear_lr/seed1", "runs",
                   {**baseline, "variant": "linear_lr", "seed": 1, "changes": {"lr_schedule": "linear"}})
    ablation.main(["--table-only", "--out", str(out)])
    table = capsys.readouterr().out
    assert all(f"| {name} |" in table for name in ("untuned", "baseline", "trl_all", "linear_lr"))
    assert set(json.loads((out / "results.json").read_text())["runs"]) == {"baseline/seed0", "trl_all/seed0",
                                                                           "linear_lr/seed1"}
    # runs with other settings are refused before anything trains; unknown variants are named
    with pytest.raises(SystemExit, match="other settings.*rounds"):
        ablation.main(["--smoke", "--rounds", "3", "--out", str(out)])
    with pytest.raises(SystemExit):
        ablation.main(["--smoke", "--variants", "baseline,cosine_lr", "--out", str(out)])
    assert "unknown variants ['cosine_lr']" in capsys.readouterr().err


def test_time_to_target_smoke_side_by_side_reports_curves_and_ratios(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "ttt"
    done = subprocess.run([sys.executable, "-m", TIME_TO_TARGET, "--smoke", "--agents", "grpo@kl_is_weight,trl",
                           "--side-by-side", "--out", str(out)], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["curves"]) == {"grpo@kl_is_weight", "trl"}
    for name, curve in results["curves"].items():
        # one process per side: each wrote its own results and log
        assert (out / name / "results.json").exists() and (out / f"{name}.log").exists()
        assert [point["round"] for point in curve] == [0, 1, 2]
        assert curve[0]["cpu_seconds"] == 0.0 and curve[-1]["cpu_seconds"] > 0
        assert all(-1 <= point["held_out_vader"] <= 1 for point in curve)
    assert results["target"] == results["curves"]["trl"][-1]["held_out_vader"]
    assert set(results["ratio_to_trl"]) == {"grpo@kl_is_weight"} and results["cpu"]["cores"] >= 1
    assert (out / "held_out_vs_cpu.png").stat().st_size > 0
    assert "grpo@kl_is_weight: held-out" in done.stdout

    # a run of textenv's side alone beside that run's TRL curve (--trl-from): same settings required
    from experiments.grpo_vs_trl import rlhf_time_to_target as ttt

    again = ttt.main(["--smoke", "--agents", "grpo", "--trl-from", str(out), "--out", str(tmp_path / "again")])
    assert again["curves"]["trl"] == results["curves"]["trl"] and again["settings"]["trl_from"] == str(out)
    assert again["target"] == results["target"] and set(again["ratio_to_trl"]) == {"grpo"}
    with pytest.raises(SystemExit, match="settings differ.*'seed': \\(0, 5\\)"):
        ttt.main(["--smoke", "--agents", "grpo", "--seed", "5", "--trl-from", str(out), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="leave trl out"):
        ttt.main(["--smoke", "--agents", "grpo,trl", "--trl-from", str(out), "--out", str(tmp_path / "x")])


def test_time_to_target_bf16_evaluates_both_sides_in_float32(tmp_path):
    """Under --precision bf16, textenv's policy is autocast-wrapped when its trainer is built, TRL's only when
    train() starts: round 0 (the same untuned model, the same evaluation seed) must still read the same on both
    sides, and the wrapper must be back in place for training afterwards."""
    pytest.importorskip("trl")
    out = tmp_path / "bf16"
    done = subprocess.run([sys.executable, "-m", TIME_TO_TARGET, "--smoke", "--precision", "bf16", "--agents",
                           "grpo,trl", "--out", str(out)], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    curves = json.loads((out / "results.json").read_text())["curves"]
    untuned = [{key: curve[0][key] for key in ("held_out_vader", "kl_to_reference", "distinct_2_all")}
               for curve in (curves["grpo"], curves["trl"])]
    assert untuned[0] == untuned[1] and untuned[0]["kl_to_reference"] == 0.0

    from experiments.grpo_vs_trl import rlhf_time_to_target as ttt

    model = torch.nn.Linear(2, 2)
    model._original_forward = model.forward
    wrapped = model.forward = lambda x: torch.zeros(2)  # stands for accelerate's autocast wrapper
    with ttt.full_precision(model):
        assert model.forward == model._original_forward
    assert model.forward is wrapped
    plain = torch.nn.Linear(2, 2)
    with ttt.full_precision(plain):
        assert "forward" not in plain.__dict__


def test_time_to_target_summary_over_seeds(tmp_path):
    from experiments.grpo_vs_trl import rlhf_time_to_target as ttt


    def point(round_, cpu, vader, kl):
        return {"round": round_, "cpu_seconds": cpu, "held_out_vader": vader, "kl_to_reference": kl,
                "distinct_2_all": 0.9, "top_4gram_share": 0.1}

    # textenv reaches TRL's final 0.6 at 100 CPU s (TRL first at 300 of its 400); textenv's KL-10 reward lies 10/12
    # of the way from its first evaluation to its second; neither run goes as far as KL 20
    grpo = [point(0, 0, 0.0, 0.0), point(2, 100, 0.6, 12.0), point(4, 200, 0.5, 14.0)]
    trl = [point(0, 0, 0.0, 0.0), point(2, 300, 0.6, 8.0), point(4, 400, 0.6, 12.0)]
    runs = []
    for seed, grpo_curve in ((0, grpo), (1, grpo[:2])):
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        results = {
            "settings": {"seed": seed}, "cpu": {"class": "AVX2-only"}, "curves": {"grpo": grpo_curve, "trl": trl}
        }
        (run / "results.json").write_text(json.dumps(results))
        runs.append(str(run) if seed == 0 else str(run / "results.json"))  # a run's directory or its results.json
    assert ttt.reward_at_kl(grpo, 10.0) == pytest.approx(0.5) and ttt.reward_at_kl(trl, 20.0) is None
    # a later run of seed 0 with one more side merges into that seed; seed 1 lacks it, so it is not summarised
    later = tmp_path / "seed0_more.json"
    later.write_text(json.dumps({"settings": {"seed": 0}, "cpu": {}, "curves": {"grpo@x": grpo}}))
    summary = ttt.main(["--summarise", *runs, str(later), "--out", str(tmp_path / "summary")])
    assert json.loads((tmp_path / "summary" / "summary.json").read_text()) == summary
    assert (tmp_path / "summary" / "held_out_vs_kl.png").stat().st_size > 0
    side = summary["sides"]["grpo"]
    assert summary["seeds"] == [0, 1] and set(summary["sides"]) == {"grpo", "trl"}
    assert side["ratio_to_trl_reach"]["values"] == [pytest.approx(100 / 300)] * 2
    assert side["ratio_to_trl_total"]["mean"] == pytest.approx(100 / 400)
    assert side["ratio_to_trl_reach_0.8"]["reached"] == "0/2"  # neither side reaches 0.8
    assert side["rounds_to_0.8"]["values"] == [None, None]
    reaching = {"curves": {"grpo": [grpo[0], point(2, 100, 0.85, 12.0)], "trl": [trl[0], point(2, 300, 0.9, 8.0)]}}
    assert ttt.seed_figures(reaching, "grpo")["ratio_to_trl_reach_0.8"] == pytest.approx(100 / 300)
    assert ttt.seed_figures(reaching, "grpo")["rounds_to_0.8"] == 2
    assert side["held_out_vader"]["values"] == [0.5, 0.6] and side["held_out_vader"]["std"] > 0
    assert side["cpu_seconds_per_round"]["values"] == [50.0, 50.0]
    assert side["held_out_vader_at_kl_10"]["values"] == [pytest.approx(0.5)] * 2
    assert side["held_out_vader_at_kl_20"] == {"mean": None, "std": None, "reached": "0/2", "values": [None, None]}
    assert "ratio_to_trl_reach" not in summary["sides"]["trl"]
    # seed-mean curves: the rounds both seeds evaluated (0 and 2); TRL's mean final 0.6, reached at 100 and 300 s
    mean = summary["seed_mean"]
    assert [point["round"] for point in mean["curves"]["grpo"]] == [0, 2] and mean["target"] == 0.6
    assert mean["ratio_to_trl_reach"] == {"grpo": pytest.approx(100 / 300)}
    assert mean["ratio_to_trl_total"] == {"grpo": pytest.approx(100 / 400)}
    assert (tmp_path / "summary" / "held_out_vs_cpu_seed_mean.png").stat().st_size > 0
    apart = ttt.seed_mean_curve([[point(0, 0, 0.0, 0.0), point(2, 100, 0.4, 10.0)],
                                 [point(0, 0, 0.2, 0.0), point(2, 140, 0.8, 14.0), point(4, 300, 0.9, 20.0)]])
    assert apart == [{"round": 0, "cpu_seconds": 0.0, "held_out_vader": pytest.approx(0.1), "kl_to_reference": 0.0},
                     {"round": 2, "cpu_seconds": 120.0, "held_out_vader": pytest.approx(0.6),
                      "kl_to_reference": 12.0}]
    with pytest.raises(SystemExit, match="no results.json"):
        ttt.main(["--summarise", str(tmp_path), "--out", str(tmp_path / "summary")])
    # a side two runs of one seed hold comes from the run named first
    again = tmp_path / "seed0_again.json"
    again.write_text(json.dumps({"settings": {"seed": 0}, "cpu": {}, "curves": {"grpo": grpo[:2]}}))
    first = ttt.main(["--summarise", str(again), runs[0], "--out", str(tmp_path / "first")])
    assert first["sides"]["grpo"]["held_out_vader"]["values"] == [0.6] and set(first["sides"]) == {"grpo", "trl"}
    other = tmp_path / "seed0_other.json"
    other.write_text(json.dumps({"settings": {"seed": 0, "rounds": 9}, "cpu": {}, "curves": {"grpo@x": grpo}}))
    with pytest.raises(SystemExit, match=r"two runs of seed 0 differ in \['rounds'\]"):
        ttt.main(["--summarise", runs[0], str(other), "--out", str(tmp_path / "summary")])
    both = ttt.main(["--summarise", runs[0], str(later), "--out", str(tmp_path / "both")])
    assert set(both["sides"]) == {"grpo", "trl", "grpo@x"} and both["seeds"] == [0]


@pytest.mark.parametrize(("switch", "sides", "header"), [("share_frozen_trunk", ("shared", "full"), "trunk shared"),
                                                      ("fluency_source", ("reference", "plugin"), "from reference")])
def test_round_cost_smoke_times_both_sides_and_writes_the_ratios(tmp_path, switch, sides, header):
    """Both trainers train, the trunk side really shares (the script exits otherwise), and the ratios are the
    medians' (never checked against a time: that is the benchmark's job, not a test's)."""
    out = tmp_path / "round.json"
    done = subprocess.run([sys.executable, "-m", "experiments.round_cost.round_cost", "--smoke", "--switch", switch,
                           "--json", str(out)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    first, second = sides
    assert [len(results["rounds"][side]) for side in sides] == [2, 2]
    for part, ratio in results[f"ratio_{first}_to_{second}"].items():
        assert ratio == results["medians"][first][part] / results["medians"][second][part]
    assert header in done.stdout.splitlines()[-7]  # the table's header
    if switch == "fluency_source":  # each side's trainer logged its own fluency term
        assert "reward_reference_fluency_mean" in results["rounds"]["reference"][0]
        assert "reward_fluency_mean" in results["rounds"]["plugin"][0]


def test_fluency_agreement_smoke_puts_every_difference_down_to_tokenisation(tmp_path):
    """On the tiny model's rollouts the trainer's reference fluency and the env's plugin differ only on completions
    whose sampled ids are not their text's own tokenisation."""
    out = tmp_path / "agreement.json"
    done = subprocess.run([sys.executable, "-m", "experiments.fluency_agreement.fluency_agreement", "--smoke",
                           "--json", str(out)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["completions"] == 16 and 0 < results["agree_share"] <= 1
    assert results["differing"] == results["differing_with_other_tokenisation"]
    assert results["differing"] == round((1 - results["agree_share"]) * 16)


RLVR_TINY_RUN = ("--env", "chain_sum", "--answer-format", "last_number", "--model", "tiny-random-smollm2",
                 "--cpu-seconds", "0.01", "--num-envs", "4", "--generations", "2", "--eval-samples", "1",
                 "--train-layers", "1", "--eval-greedy", "--env-kwargs", '{"test_size": 4, "max_new_tokens": 4}')


def test_rlvr_tasks_grpo_run_and_summary(tmp_path):
    """One tiny GRPO run and one tiny TRL run on the reasoning-gym env with held-out evaluations (sampled and
    near-greedy), then the study's tables (the side-by-side among them) and plot."""
    out = tmp_path / "grpo_chain_sum_seed0"
    run_study("experiments.rlvr_tasks.train_grpo", *RLVR_TINY_RUN, "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    assert results["iterations"] == 1 and [p["iteration"] for p in results["held_out_curve"]] == [0, 1]
    assert results["after"]["episodes"] == 4 and 0 <= results["after"]["exact_accuracy"] <= 1
    assert results["after"]["greedy"]["episodes"] == 4  # one near-greedy reply per test question
    trl_out = tmp_path / "trl_chain_sum_seed0"
    run_study("experiments.rlvr_tasks.train_trl", *RLVR_TINY_RUN, "--out", str(trl_out))
    trl = json.loads((trl_out / "results.json").read_text())
    assert trl["iterations"] == 1 and [p["iteration"] for p in trl["held_out_curve"]] == [0, 1]
    assert "reward" in trl["history"][0] and not (trl_out / "untuned").exists()
    assert set(results["after"]["exact_accuracy_by_extraction"]) == {"answer_tag", "last_line", "last_number", "whole"}
    by_answer = results["after"]["exact_accuracy_by_answer"]  # the test split's gold answers, each with its accuracy
    assert sum(row["episodes"] for row in by_answer.values()) == 4 and all(key.lstrip("-").isdigit() for key in by_answer)
    run_study("experiments.rlvr_tasks.compact", str(out / "results.json"))  # what the repository keeps
    compacted = json.loads((out / "results.json").read_text())
    assert compacted["history_compacted"] and [p["exact_accuracy"] for p in compacted["held_out_curve"]] == [
        round(p["exact_accuracy"], 4) for p in results["held_out_curve"]]
    assert set(compacted["history"][0]) <= set(results["history"][0]) and "kl" in compacted["history"][0]
    table = run_study("experiments.rlvr_tasks.summarise", "--results", str(tmp_path))
    assert "| grpo_chain_sum | 0 | 1 |" in table and "| trl_chain_sum | 0 | 1 |" in table
    assert "| chain_sum | 0 | near-greedy |" in table  # textenv's CPU seconds to TRL's final accuracy
    assert "| most common answer |" in table and "| grpo_chain_sum | 0 | " in table.split("| most common answer |")[1]
    assert (tmp_path / "heldout_curves.png").stat().st_size > 5_000


def test_rlvr_scripted_game_players_bracket_the_game():
    """The scripted GuessTheNumber players on held-out seeds: binary search wins every game; a constant guess scores
    the game's closeness reward and wins less."""
    from experiments.rlvr_tasks.common import env_spec, scripted_guesses

    env_id, kwargs = env_spec("guess_the_number", tokenizer="tiny-random-smollm2", test_size=6)
    search = scripted_guesses(env_id, kwargs, "binary_search")
    assert search["episodes"] == 6 and search["win_rate"] == 1.0 == search["game_reward_mean"]
    constant = scripted_guesses(env_id, kwargs, "constant")
    assert constant["episodes"] == 6 and constant["win_rate"] < 1.0 and 0.0 < constant["game_reward_mean"] < 1.0


def test_rlvr_heldout_compare_reads_every_run_on_the_test_split(tmp_path):
    """A tiny ``textenv compare`` (GRPO and SB3 PPO over the top 2 tokens, 2 seeds each), then every run's final
    checkpoint on the test split: one held-out score per run, an IQM and its interval per agent."""
    out = tmp_path / "cmp"
    run_study(
        "agents", "compare", "--env", "textenv/ReasoningGym-v0", "--model", "tiny-random-smollm2",
        "--agents", "grpo,ppo", "--seeds", "2", "--budget", "16", "--out", str(out), "--env-kwargs", "task=chain_sum",
        "test_size=3", "max_new_tokens=4", 'tokenizer="tiny-random-smollm2"',
        "--agent-kwargs-for", "grpo", "num_envs=4", "num_generations=2",
        "--agent-kwargs-for", "ppo", "top_k=2", "n_envs=2", "n_steps=8", "batch_size=8", "n_epochs=1",
    )
    run_study("experiments.rlvr_tasks.heldout_compare", "--compare", str(out), "--samples", "2",
              "--out", str(tmp_path / "heldout.json"))
    heldout = json.loads((tmp_path / "heldout.json").read_text())["agents"]
    assert set(heldout) == {"grpo", "ppo"}
    for agent in heldout.values():
        assert [run["seed"] for run in agent["runs"]] == [0, 1] and all(run["episodes"] == 6 for run in agent["runs"])
        low, high = agent["ci95"]
        assert low <= agent["iqm"] <= high


def test_lora_study_smoke_measures_both_sides_and_tabulates(tmp_path):
    """The LoRA study's top-8 and LoRA sides on the tiny model: each child's peak RSS, checkpoint bytes and curve,
    then the table (the adapter's checkpoint is the smaller one)."""
    pytest.importorskip("peft")
    out = tmp_path / "lora"
    table = run_study("experiments.lora.compare", "--sides", "top8,lora", "--seeds", "0", "--rounds", "2",
                      "--eval-every", "1", "--no-initial-eval", "--model", "tiny-random-smollm2", "--rank", "2",
                      "--alpha", "4", "--lora-blocks", "1", "--parallel", "2", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"top8", "lora"} and "| lora | 1 |" in table
    assert summary["lora"]["checkpoint_mb"][0] < summary["top8"]["checkpoint_mb"][0]
    assert all(summary[side]["peak_rss_mb"][0] > 0 for side in summary)


def test_async_rollouts_study_smoke_trains_scores_and_summarises(tmp_path):
    """One tiny async run, scored from its snapshots, then the summary."""
    run_study("experiments.async_rollouts.compare", "--mode", "async", "--smoke", "--out", str(tmp_path))
    results = json.loads((tmp_path / "async_seed0" / "results.json").read_text())
    assert results["mode"] == "async" and len(results["rounds"]) == 2
    assert all("held_out_vader" in point for point in results["curve"])
    printed = run_study("experiments.async_rollouts.compare", "--summarise", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["modes"]) == {"async"} and "held-out VADER, round" in printed
