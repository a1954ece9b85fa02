"""Held-out evaluation of a trained LM run reports cross-sample diversity beside the reward."""

from __future__ import annotations

from agents.runs.diversity import diversity_metrics
from agents.runs.evaluate import evaluate
from agents.runs.runner import RunSpec, train
from textenv.models import TINY_MODEL


def test_lm_evaluation_reports_diversity_of_its_completions(tmp_path, monkeypatch):
    spec = RunSpec(
        agent="grpo", env="MossText-v0", steps=8, model=TINY_MODEL,
        env_kwargs={"max_new_tokens": 4}, agent_kwargs={"num_envs": 4, "num_generations": 2},
    )
    train(spec, tmp_path / "run", progress_bar=False)
    seen: list[list[str]] = []

    def recording(texts):  # the metrics of exactly the completions evaluated
        seen.append(list(texts))
        return diversity_metrics(texts)

    monkeypatch.setattr("agents.runs.evaluate.diversity_metrics", recording)
    result = evaluate(tmp_path / "run", ["The movie was", "My friend said", "I think"], samples_per_prompt=2)
    assert len(seen) == 1 and len(seen[0]) == result["episodes"] == 6
    assert result["diversity"] == diversity_metrics(seen[0])
    assert 0 < result["diversity"]["distinct_1_all"] <= 1 and 0 <= result["diversity"]["top_4gram_share"] <= 1
