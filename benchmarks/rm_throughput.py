"""Reward-model training throughput (pairs/s): our trainer against TRL's ``RewardTrainer``, side by side in one run.

Both sides train the same model (copies of one set of initial weights, fp32), with the same trainable blocks, the
same optimiser (AdamW, same learning rate, gradient clipping at 1.0), on the **same batches** of the same pairs:
every timed step hands both sides the same pair indices. Token ids are the same too: TRL gets the dataset
pre-tokenised (``chosen_ids``/``rejected_ids`` = prompt + completion as our trainer tokenises them), so it adds no
EOS and filters nothing. One step = TRL's ``training_step`` (its ``compute_loss``: one forward over the 2B
right-padded chosen + rejected sequences, ``use_cache=False``; backward through its accelerator) + clipping +
``optimizer.step``, against ours (:meth:`RewardModelTrainer.training_step`: each distinct prompt forwarded once and
its KV cache shared by its completions, each distinct completion once). TRL runs without gradient checkpointing
(its ``RewardConfig`` default is on, which recomputes the forward; off is faster on CPU).

Two batch layouts, because the shared forward's gain depends on what repeats within a batch:

* ``grouped``: pairs generated as ``textenv pairs`` makes them (k completions per prompt, all k(k-1)/2 pairs of
  them), batched with the pairs of one prompt together (our trainer's ``group_by_prompt`` default);
* ``shuffled``: the same pairs in a random order (TRL's sampler), so a batch rarely holds two pairs of a prompt.

Steps are interleaved (ours, TRL, ours, TRL ...) after one untimed warm-up step each; the ratio is of the medians.
"ours" is the trainer without its frozen-block cache (``cache_frozen_blocks=False``), so each side does a whole
forward per step. The cache (our default) is measured beside them as a third side, ``cached``: its steps forward
only the trainable top blocks, and its one-off fill (the frozen blocks over every pair, timed) is charged to an
``--epochs``-epoch training over these pairs, so its pairs/s is ``epochs * pairs / (fill + epochs * steps per
epoch * median step)``.

    .venv/bin/python benchmarks/rm_throughput.py                                 # SmolLM2-135M (minutes)
    .venv/bin/python benchmarks/rm_throughput.py --model tiny-random-smollm2 --trainable-blocks 1 --steps 3   # smoke
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from agents.reward_model import RewardModelConfig, RewardModelTrainer, load_reward_model  # noqa: E402
from textenv.preferences import PreferencePair  # noqa: E402


def make_pairs(num_prompts: int, k: int, words: int, seed: int) -> list[PreferencePair]:
    """Built-in review prompts, ``k`` completions of ``words`` English words each (drawn from the prompts' own
    vocabulary, so the token counts are those of real text), all ``k(k-1)/2`` pairs per prompt."""
    import textenv

    prompts = [p.text for p in textenv.load_prompts("builtin:train")][:num_prompts]
    vocabulary = sorted({w for p in textenv.load_prompts("builtin") for w in p.text.split()})
    rng = random.Random(seed)
    pairs = []
    for prompt in prompts:
        completions = [" " + " ".join(rng.choice(vocabulary) for _ in range(words)) for _ in range(k)]
        for a in range(k):
            for b in range(a + 1, k):
                pairs.append(PreferencePair(chosen=completions[a], rejected=completions[b], prompt=prompt))
    return pairs


def trl_side(model: Any, tokenizer: Any, encoded: list[Any], batch: int, lr: float, out: str) -> tuple[Any, Any]:
    """A TRL ``RewardTrainer`` on the pre-tokenised pairs and a ``step(indices)`` doing one optimiser step."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    rows = {
        "chosen_ids": [list(p.prefix + p.chosen) for p in encoded],
        "rejected_ids": [list(p.prefix + p.rejected) for p in encoded],
    }
    args = RewardConfig(
        output_dir=out, per_device_train_batch_size=batch, learning_rate=lr, max_grad_norm=1.0, bf16=False,
        gradient_checkpointing=False, report_to=[], use_cpu=True, max_length=None, disable_tqdm=True,
        save_strategy="no", logging_strategy="no",
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer)
    trainer.create_optimizer_and_scheduler(num_training_steps=10_000)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop, which we step by hand
    collator = trainer.data_collator
    examples = [{"chosen_ids": c, "rejected_ids": r} for c, r in zip(rows["chosen_ids"], rows["rejected_ids"])]

    def step(indices: list[int]) -> None:
        inputs = collator([examples[i] for i in indices])
        trainer.model.train()
        trainer.training_step(trainer.model, inputs)
        torch.nn.utils.clip_grad_norm_([p for p in trainer.model.parameters() if p.requires_grad], 1.0)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    return trainer, step


def batches(trainer: RewardModelTrainer, layout: str, batch: int, steps: int, seed: int) -> list[list[int]]:
    """``steps + 1`` batches of pair indices (the first is the warm-up)."""
    if layout == "grouped":
        order = [i for group in _grouped_order(trainer) for i in group]
    else:
        order = list(range(len(trainer.pairs)))
        random.Random(seed).shuffle(order)
    chunks = [order[i : i + batch] for i in range(0, len(order) - batch + 1, batch)]
    if len(chunks) < steps + 1:
        raise SystemExit(f"{len(chunks)} full batches of {batch}; need {steps + 1} (more --prompts)")
    return chunks[: steps + 1]


def _grouped_order(trainer: RewardModelTrainer) -> list[list[int]]:
    """The pairs' indices grouped by prompt (first-seen order)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(trainer.encoded):
        groups.setdefault(p.prefix, []).append(i)
    return list(groups.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per side and layout")
    parser.add_argument("--trainable-blocks", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--k", type=int, default=4, help="completions per prompt")
    parser.add_argument("--words", type=int, default=18, help="words per completion (~24 SmolLM2 tokens)")
    parser.add_argument("--layouts", nargs="+", default=["grouped", "shuffled"], choices=["grouped", "shuffled"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3, help="epochs the cache fill is charged to")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pairs = make_pairs(args.prompts, args.k, args.words, seed=0)
    base, tokenizer = load_reward_model(args.model, seed=0)
    config = RewardModelConfig(
        model=args.model, per_device_train_batch_size=args.batch, trainable_blocks=args.trainable_blocks,
        eval_fraction=0.0, progress_bar=False, learning_rate=1e-5,
    )
    ours = RewardModelTrainer(pairs, dataclasses.replace(config, cache_frozen_blocks=False),
                              model=copy.deepcopy(base), tokenizer=tokenizer)
    cached = RewardModelTrainer(pairs, config, model=copy.deepcopy(base), tokenizer=tokenizer)
    if cached.frozen_cache is None:
        raise SystemExit(f"{args.model}: the frozen-block cache is not exact for this model; nothing to compare")
    trl_model = copy.deepcopy(base)
    from agents.reward_model.scoring import freeze_lower_blocks

    freeze_lower_blocks(trl_model, args.trainable_blocks)
    with tempfile.TemporaryDirectory() as out:
        trl_trainer, trl_step = trl_side(trl_model, tokenizer, ours.encoded, args.batch, 1e-5, out)
        results: dict[str, Any] = {
            "model": args.model, "batch": args.batch, "steps": args.steps, "trainable_blocks": args.trainable_blocks,
            "pairs": len(pairs), "threads": args.threads, "layouts": {},
        }
        for layout in args.layouts:
            chunks = batches(ours, layout, args.batch, args.steps, seed=1)
            times: dict[str, list[float]] = {"ours": [], "trl": [], "cached": []}
            positions = {"ours": 0, "trl": 0}
            for step, indices in enumerate(chunks):
                batch = ours.collate(indices)  # for the position count; the timed step collates again
                positions["ours"] += int(batch.prefix_mask.sum() + batch.continuation_mask.sum())
                positions["trl"] += sum(len(ours.encoded[i].prefix) * 2 + len(ours.encoded[i].chosen)
                                        + len(ours.encoded[i].rejected) for i in indices)
                ours_step = lambda: ours.training_step(ours.collate(indices))  # noqa: E731
                cached_step = lambda: cached.training_step(cached.collate(indices))  # noqa: E731
                for side, run in (("ours", ours_step), ("trl", lambda: trl_step(indices)), ("cached", cached_step)):
                    started = time.perf_counter()
                    run()
                    if step:  # step 0 is the warm-up
                        times[side].append(time.perf_counter() - started)
            ours_s, trl_s = statistics.median(times["ours"]), statistics.median(times["trl"])
            epoch_steps = -(-len(pairs) // args.batch)
            cached_total = cached.cache_seconds + args.epochs * epoch_steps * statistics.median(times["cached"])
            cached_rate = args.epochs * len(pairs) / cached_total
            row = {
                "ours_pairs_per_second": args.batch / ours_s,
                "trl_pairs_per_second": args.batch / trl_s,
                "ratio": trl_s / ours_s,
                "cached_pairs_per_second": cached_rate,
                "cached_ratio": cached_rate / (args.batch / trl_s),
                "cache_fill_seconds": cached.cache_seconds,
                "cached_step_seconds": times["cached"],
                "epochs": args.epochs,
                "ours_positions_per_pair": positions["ours"] / (len(chunks) * args.batch),
                "trl_positions_per_pair": positions["trl"] / (len(chunks) * args.batch),
                "ours_step_seconds": times["ours"],
                "trl_step_seconds": times["trl"],
            }
            results["layouts"][layout] = row
            print(f"{layout:9s} ours {row['ours_pairs_per_second']:6.2f} pairs/s   "
                  f"TRL {row['trl_pairs_per_second']:6.2f} "
                  f"pairs/s   ratio {row['ratio']:.2f}x   (model positions per pair: ours "
                  f"{row['ours_positions_per_pair']:.1f}, TRL {row['trl_positions_per_pair']:.1f})", flush=True)
            print(f"{'':9s} with the frozen-block cache, {args.epochs} epochs over {len(pairs)} pairs (fill "
                  f"{cached.cache_seconds:.1f} s charged): {cached_rate:6.2f} pairs/s   ratio to TRL "
                  f"{row['cached_ratio']:.2f}x", flush=True)
        del trl_trainer
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
