"""How closely the trainer's reference fluency (``reference_fluency_weight``) matches the env's ``fluency`` plugin.

:mod:`experiments.rlhf_common`'s GRPO trainer (SmolLM2 by default) is built with the plugin in its env reward and
the reference fluency switched on at a negligible weight, so every rollout carries both values for the same
completions. For ``--rounds`` rounds' rollouts (nothing is trained) it reports the share of completions where the
two agree to 1e-4, the largest and the mean absolute difference, and, for each completion where they differ,
whether its sampled ids are its text's own tokenisation (where they are not, the plugin scores other tokens than
the ones the policy wrote).

    python -m experiments.fluency_agreement.fluency_agreement            # SmolLM2, 6 rounds of 16 completions, ~2 min
    python -m experiments.fluency_agreement.fluency_agreement --smoke    # tiny model, seconds
"""

from __future__ import annotations

import argparse
from typing import Any

import textenv
from experiments.rlhf_common import build_parser, example_args, make_trainer, parse_round_settings, write_results

AGREE = 1e-4


def written_ids(rollout: Any, row: int) -> list[int]:
    """The ids the policy wrote in ``row``, less the EOS that ended a terminated completion."""
    ids = rollout.completion_ids[row][rollout.mask[row] > 0].tolist()
    return ids[:-1] if bool(rollout.terminated[row]) else ids


def compare(settings: argparse.Namespace) -> dict[str, Any]:
    args = build_parser().parse_args([*example_args(settings, "grpo"), "--fluency-source", "plugin"])
    trainer, _ = make_trainer(args, output_dir=None, config_overrides={"reference_fluency_weight": 1e-12})
    tokenizer = textenv.load_tokenizer(settings.model)
    differences: list[float] = []
    retokenised_differently = 0
    examples = []
    for round_ in range(settings.rounds):
        trainer.iteration = round_  # each round's own prompts and samples; nothing trains
        rollout, _, _ = trainer.collect_groups()
        plugin, ours = rollout.reward_components["fluency"], rollout.reward_components["reference_fluency"]
        for row, difference in enumerate((plugin - ours).tolist()):
            differences.append(difference)
            if abs(difference) < AGREE:
                continue
            sampled = written_ids(rollout, row)
            text_ids = list(tokenizer(rollout.completions[row], add_special_tokens=False)["input_ids"])
            retokenised_differently += sampled != text_ids
            if len(examples) < 5:
                examples.append({"completion": rollout.completions[row], "difference": difference,
                                 "ids_are_the_texts_tokenisation": sampled == text_ids})
    trainer.close()
    absolute = [abs(d) for d in differences]
    return {
        "settings": vars(settings),
        "completions": len(differences),
        "agree_share": sum(a < AGREE for a in absolute) / len(absolute),
        "max_abs_difference": max(absolute),
        "mean_abs_difference": sum(absolute) / len(absolute),
        "differing": sum(a >= AGREE for a in absolute),
        "differing_with_other_tokenisation": retokenised_differently,
        "examples": examples,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings = parse_round_settings(parser, argv, rounds=6, smoke_rounds=1)
    results = compare(settings)
    print(f"{results['completions']} completions: {results['agree_share']:.1%} agree to {AGREE:g}; "
          f"max |difference| {results['max_abs_difference']:.3f}, mean {results['mean_abs_difference']:.4f} nats per "
          f"token; {results['differing_with_other_tokenisation']} of the {results['differing']} that differ were "
          "sampled as other ids than their text's tokenisation")
    write_results(settings.json, results)
    return results


if __name__ == "__main__":
    main()
