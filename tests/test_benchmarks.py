"""Benchmarks run end to end in their ``--smoke`` mode (tiny random-init model, two rounds) and write what they
promise. Their measured results are in the README; this only guards them against rot."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_examples import ENV, REPO


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grpo_ablation_smoke_merges_variants_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "ablation"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "grpo_ablation.py"), "--smoke", "--out", str(out)],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
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

    ablation = load_benchmark("grpo_ablation")
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
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "rlhf_time_to_target.py"), "--smoke",
                           "--agents", "grpo@kl_is_weight,trl", "--side-by-side", "--out", str(out)],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
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
