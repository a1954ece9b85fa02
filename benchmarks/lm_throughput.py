"""LM-agent throughput, measured side by side in one run, same model and sizes on both sides.

* R1 -- rollout tokens/s through the env: the agents' :class:`agents.lm.RolloutEngine` stepping a native
  ``MossText-v0`` vector env (``autoreset_mode=DISABLED``; prefill once, then one token per step from the KV
  cache, env step and VADER reward included) against ``model.generate`` sampling the same batch of prompts to the
  same length. Target: >= 0.9x.
* R2 -- wall time of one training iteration of our :class:`agents.lm.GRPOTrainer` against TRL's ``GRPOTrainer``:
  same model, same VADER ``sentiment`` reward, same number of prompts, completions per prompt and completion
  tokens, one optimiser step per iteration, ``beta=0`` (no reference model on either side). Target: ours >= 2x
  faster. Where the time goes is printed for both.

How the lengths are matched: every completion is exactly ``--tokens`` tokens on both sides. The env gets
``eos_token_ids=[]`` (no token ends an episode, so each one is truncated at ``max_new_tokens``); ``generate`` and
TRL get ``min_new_tokens = max_new_tokens`` (transformers' ``MinNewTokensLengthLogitsProcessor`` masks EOS until
then). Both checks are asserted on the outputs (lengths, never timings).

Precision is the same on both sides: ``--precision fp32`` (default) or ``bf16`` (mixed precision: autocast over
float32 weights; TRL's own default, ``bf16=True``; ours under ``Accelerator(mixed_precision="bf16")``, as with
``accelerate launch --mixed_precision bf16``; R1 runs both sides under ``torch.autocast``). TRL keeps its default
``gradient_checkpointing=True`` (it recomputes the forward during backward; ours does not) unless
``--trl-no-gradient-checkpointing``. Ours forwards each distinct prompt once in the loss and shares its KV cache
among its completions (``share_prompt_forward``, our default; exact), unless ``--no-share-prompt-forward``: the
same tokens are trained on, through fewer model positions.

Each pair is timed interleaved (A, B, A, B, ...) after one untimed warm-up of each side, and ratios are taken of
the medians, so both sides see the same machine load. Torch threads are fixed (``--threads``, default 1).

    .venv/bin/python benchmarks/lm_throughput.py                       # SmolLM2-135M-Instruct (~5 min, 2 cores)
    .venv/bin/python benchmarks/lm_throughput.py --model tiny-random-smollm2 --batch 8 --tokens 8 --repeats 3
    .venv/bin/python benchmarks/lm_throughput.py --json results.json   # also write the table as JSON

R2 needs TRL (``pip install -e ".[bench]"``); without it R2 is reported as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import rewards  # noqa: E402
import textenv  # noqa: E402  (registers MossText-v0)
import textenv.registration  # noqa: E402
from agents.lm import GRPOConfig, GRPOTrainer, RolloutEngine  # noqa: E402

ENV_ID = "MossText-v0"
ROLLOUT_TARGET = 0.9  # env tokens/s / generate tokens/s
TRAIN_TARGET = 2.0  # TRL seconds per iteration / ours


@dataclass
class Settings:
    """Everything that sizes the run (printed, and written to the JSON)."""

    model: str = textenv.DEFAULT_MODEL
    batch: int = 16  # sequences decoded together (R1), completions per training iteration (R2)
    tokens: int = 24  # completion tokens per sequence (MossText-v0's max_new_tokens)
    prompt_slots: int = 32  # the env's max_prompt_tokens (MossText-v0's; built-in prompts are 4-15 tokens)
    num_generations: int = 8  # R2: completions per prompt (batch / num_generations prompts per iteration)
    repeats: int = 5  # R1: timed runs per side
    train_repeats: int = 3  # R2: timed iterations per side
    threads: int = 1
    seed: int = 0
    learning_rate: float = 1e-6  # TRL GRPOConfig's default (ours too)
    precision: str = "fp32"  # both sides: "fp32", or "bf16" mixed precision (TRL's default; autocast, fp32 weights)
    trl_gradient_checkpointing: bool = True  # TRL GRPOConfig's default (ours never recomputes activations)
    share_prompt_forward: bool = True  # ours: each distinct prompt forwarded once in the loss (our default)


# -- helpers -----------------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interleaved(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of ``a`` and of ``b``, timed alternately after one untimed warm-up call each."""
    a(), b()
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(a())
        times_b.append(b())
    return times_a, times_b


def load_model(name: str, seed: int) -> Any:
    model = textenv.load_causal_lm(name, seed=seed)
    model.eval()
    return model


def make_env(settings: Settings, num_envs: int) -> gym.vector.VectorEnv:
    """MossText-v0 as the LM agents use it, with no EOS: every episode is exactly ``settings.tokens`` long."""
    return gym.make_vec(
        ENV_ID,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.DISABLED,
        max_new_tokens=settings.tokens,
        max_prompt_tokens=settings.prompt_slots,
        eos_token_ids=[],
    )


def without_nan(value: Any) -> Any:
    """``value`` with every NaN float replaced by ``None`` (strict JSON)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(item) for item in value]
    return value


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def autocast(settings: Settings) -> Callable[[], Any]:
    """A context-manager factory for ``settings.precision`` (R1; R2 goes through each trainer's own setting)."""
    if settings.precision == "bf16":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


# -- R1: rollout tokens/s through the env against model.generate ------------------------------------------
def rollout_vs_generate(settings: Settings) -> dict[str, Any]:
    from transformers import GenerationConfig

    n, length = settings.batch, settings.tokens
    model = load_model(settings.model, settings.seed)
    env = make_env(settings, n)
    engine = RolloutEngine(env, model, temperature=1.0)
    task = engine.task
    p = task.max_prompt_tokens
    prompt_indices = np.random.default_rng(settings.seed).choice(
        len(task.prompts), size=n, replace=n > len(task.prompts)
    )

    # generate's input: exactly the prompt slots the env gives the agent (left-padded to max_prompt_tokens)
    obs, _ = env.reset(seed=settings.seed, options={"prompt_index": prompt_indices})
    input_ids = torch.as_tensor(obs["input_ids"][:, :p])
    attention_mask = torch.as_tensor(obs["attention_mask"][:, :p])
    eos = task.tokenizer.eos_token_id
    generation_config = GenerationConfig(  # built from scratch: nothing inherited from the model's config
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=length,
        min_new_tokens=length,  # EOS masked until then: exactly `length` tokens per row
        eos_token_id=eos,
        pad_token_id=task.pad_token_id,
        use_cache=True,
    )

    breakdown: dict[str, list[float]] = defaultdict(list)
    calls = {"env": 0, "generate": 0}
    precision = autocast(settings)

    def env_side() -> float:
        calls["env"] += 1
        generator = torch.Generator().manual_seed(settings.seed + calls["env"])
        started = time.perf_counter()
        with precision():
            rollout = engine.collect(generator, seed=settings.seed, prompt_indices=prompt_indices)
        elapsed = time.perf_counter() - started
        if rollout.num_tokens != n * length or rollout.mask.shape != (n, length):
            raise RuntimeError(f"the env rollout has {rollout.num_tokens} tokens, expected {n} x {length}")
        breakdown["model_seconds"].append(rollout.generation_seconds)
        breakdown["env_seconds"].append(rollout.env_seconds)
        return elapsed

    def generate_side() -> float:
        calls["generate"] += 1
        torch.manual_seed(settings.seed + calls["generate"])
        started = time.perf_counter()
        with torch.no_grad(), precision():
            out = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config
            )
        elapsed = time.perf_counter() - started
        # exactly `length` tokens in every row: no row ended early (EOS is also the pad token, so none may appear)
        if out.shape != (n, p + length) or (eos is not None and bool((out[:, p:] == eos).any())):
            raise RuntimeError(
                f"generate returned shape {tuple(out.shape)} or an EOS; expected {(n, p + length)}, no EOS"
            )
        return elapsed

    env_times, generate_times = interleaved(env_side, generate_side, settings.repeats)
    env.close()
    tokens = n * length
    env_tps, generate_tps = tokens / median(env_times), tokens / median(generate_times)
    return {
        "env_tokens_per_second": env_tps,
        "generate_tokens_per_second": generate_tps,
        "ratio": env_tps / generate_tps,
        "target": ROLLOUT_TARGET,
        "tokens_per_run": tokens,
        "prompt_slots": p,
        "env_side_seconds": env_times,  # the timed runs (warm-up excluded)
        "generate_side_seconds": generate_times,
        # medians over the timed runs (the warm-up is the first entry of each list)
        "env_breakdown_seconds": {key: median(values[1:]) for key, values in breakdown.items()},
    }


# -- R2: one GRPO iteration, ours against TRL -------------------------------------------------------------
def timed_method(
    obj: Any, name: str, sink: dict[str, float], key: str, on_call: Callable[..., None] | None = None
) -> None:
    """Wrap ``obj.name`` (an instance attribute shadowing the class method) to add its wall time to ``sink[key]``
    (and pass its arguments to ``on_call``). A method this version of the library lacks is skipped (its breakdown
    entries then read ``nan``)."""
    original = getattr(obj, name, None)
    if original is None:
        warnings.warn(f"{type(obj).__name__} has no {name}(); its time is not broken out", stacklevel=2)
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if on_call is not None:
            on_call(*args, **kwargs)
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink[key] += time.perf_counter() - started

    setattr(obj, name, wrapper)


def make_ours(settings: Settings) -> tuple[GRPOTrainer, dict[str, float], list[int]]:
    """Our GRPO trainer, configured like TRL's defaults where they differ (AdamW betas/eps) and like the TRL run."""
    from accelerate import Accelerator

    config = GRPOConfig(
        seed=settings.seed,
        num_envs=settings.batch,
        num_generations=settings.num_generations,
        learning_rate=settings.learning_rate,
        beta=0.0,
        epsilon=0.2,
        loss_type="dapo",
        scale_rewards="group",
        temperature=1.0,
        update_epochs=1,
        num_minibatches=1,  # one optimiser step per iteration, like TRL with gradient_accumulation_steps=1
        adam_betas=(0.9, 0.999),  # transformers' Trainer defaults (ours: MOSS-RLHF's 0.95 / 1e-6)
        adam_eps=1e-8,
        weight_decay=0.0,
        max_grad_norm=1.0,
        reference_metrics=False,  # beta = 0: no reference forward on either side
        share_prompt_forward=settings.share_prompt_forward,
        progress_bar=False,
    )
    env = make_env(settings, settings.batch)
    accelerator = Accelerator(cpu=True, mixed_precision="bf16" if settings.precision == "bf16" else "no")
    trainer = GRPOTrainer(env, load_model(settings.model, settings.seed), config, accelerator=accelerator)
    # split the update into policy forward (log-probs) and backward + clip + optimiser step
    parts: dict[str, float] = defaultdict(float)
    timed_method(trainer, "policy_logprobs", parts, "policy_forward")
    timed_method(trainer, "optimizer_step", parts, "backward_and_step")
    record_loss_positions(trainer, positions := [])
    return trainer, parts, positions


def record_loss_positions(trainer: GRPOTrainer, positions: list[int]) -> None:
    """Append to ``positions`` how many token positions went through the policy in each loss forward (a forward
    hook counts every model call made inside ``policy_logprobs``: one over the full sequences, or, with
    ``share_prompt_forward``, one over the distinct prompts plus one over the completions)."""
    forward = trainer.policy_logprobs
    model = trainer.unwrapped_policy

    def count(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        positions[-1] += kwargs["input_ids"].numel()

    def recording(*args: Any, **kwargs: Any) -> Any:
        positions.append(0)
        hook = model.register_forward_pre_hook(count, with_kwargs=True)  # only while inside policy_logprobs
        try:
            return forward(*args, **kwargs)
        finally:
            hook.remove()

    trainer.policy_logprobs = recording


def sentiment_reward_function() -> Callable[..., list[float]]:
    """The env's reward plugin as a TRL reward function."""
    model = rewards.make("sentiment")

    def sentiment(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return [float(x) for x in model(list(prompts), list(completions))]

    return sentiment


def make_trl(settings: Settings, max_steps: int, output_dir: str) -> tuple[Any, dict[str, float]]:
    from datasets import Dataset
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer as TRLGRPOTrainer

    from textenv.prompts import load_prompts

    prompts = [prompt.text for prompt in load_prompts(textenv.registration.ENV_IDS[ENV_ID][0]["prompts"])]
    dataset = Dataset.from_dict({"prompt": prompts})
    args = TRLGRPOConfig(
        output_dir=output_dir,
        seed=settings.seed,
        per_device_train_batch_size=settings.batch,  # completions per step (batch / num_generations prompts)
        gradient_accumulation_steps=1,
        num_generations=settings.num_generations,
        num_iterations=1,
        max_completion_length=settings.tokens,
        generation_kwargs={"min_new_tokens": settings.tokens},  # exactly `tokens` per completion, like the env
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        beta=0.0,
        epsilon=0.2,
        loss_type="dapo",
        scale_rewards="group",
        max_grad_norm=1.0,
        max_steps=max_steps,
        logging_strategy="no",  # keeps the per-step metrics in trainer._metrics for the length check
        save_strategy="no",
        report_to=[],
        bf16=settings.precision == "bf16",
        gradient_checkpointing=settings.trl_gradient_checkpointing,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_completions=False,
    )
    trainer = TRLGRPOTrainer(
        model=load_model(settings.model, settings.seed),
        reward_funcs=[sentiment_reward_function()],
        args=args,
        train_dataset=dataset,
        processing_class=textenv.load_tokenizer(settings.model),
    )
    parts: dict[str, float] = defaultdict(float)
    timed_method(trainer, "_generate_single_turn", parts, "model_generate")
    timed_method(trainer, "_generate", parts, "generation")  # model.generate + prompt tokenising + decoding
    timed_method(trainer, "_calculate_rewards", parts, "reward")
    timed_method(trainer, "_prepare_inputs", parts, "prepare_inputs")  # generation + reward + advantages
    positions: list[int] = []  # positions in each loss forward: rows x (the batch's longest prompt + completion)

    def record_positions(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        ids = inputs["prompt_ids"]
        positions.append(int(ids.shape[0] * (ids.shape[1] + inputs["completion_ids"].shape[1])))

    trainer.loss_positions = positions
    timed_method(trainer, "compute_loss", parts, "policy_forward_and_loss", on_call=record_positions)
    timed_method(trainer, "training_step", parts, "training_step")  # prepare + loss + backward
    return trainer, parts


def ours_breakdown(metrics: dict[str, float], parts: dict[str, float], total: float) -> dict[str, float]:
    generation = metrics.get("generation_seconds", 0.0)
    env = metrics.get("env_seconds", 0.0)
    forward = parts.get("policy_forward", 0.0)
    backward = parts.get("backward_and_step", 0.0)
    reference = metrics.get("forward_seconds", 0.0)
    return {
        "generation (prefill+decode+sampling)": generation,
        "env step + reward": env,
        "reference forward": reference,
        "policy forward": forward,
        "backward + clip + optimiser step": backward,
        "other": total - generation - env - reference - forward - backward,
    }


def trl_breakdown(parts: dict[str, float], total: float) -> dict[str, float]:
    nan = float("nan")
    generate = parts.get("model_generate", nan)
    generation = parts.get("generation", nan)
    reward = parts.get("reward", nan)
    prepare = parts.get("prepare_inputs", nan)
    forward = parts.get("policy_forward_and_loss", nan)
    backward = parts.get("training_step", nan) - prepare - forward
    return {
        "generation (model.generate)": generate,
        "tokenise prompts + decode completions": generation - generate,
        "reward": reward,
        "advantages + padding (rest of _prepare_inputs)": prepare - generation - reward,
        "policy forward + loss": forward,
        "backward": backward,
        "clip + optimiser step + loop (rest)": total - parts.get("training_step", nan),
    }


def grpo_ours_vs_trl(settings: Settings) -> dict[str, Any]:
    try:
        import trl  # noqa: F401
        from transformers import PrinterCallback, TrainerCallback
    except ImportError as error:
        return {"skipped": f"TRL is not installed ({error}); pip install -e '.[bench]'"}

    ours, ours_parts, ours_positions = make_ours(settings)
    ours_times: list[float] = []
    ours_parts_per_iteration: list[dict[str, float]] = []
    ours_metrics: list[dict[str, float]] = []

    def run_ours() -> None:
        ours_parts.clear()
        started = time.perf_counter()
        metrics = ours.train(1)[-1]
        elapsed = time.perf_counter() - started
        if metrics["batch_tokens"] != settings.batch * settings.tokens:
            raise RuntimeError(
                f"our iteration generated {metrics['batch_tokens']} tokens, expected {settings.batch * settings.tokens}"
            )
        ours_times.append(elapsed)
        ours_metrics.append(metrics)
        ours_parts_per_iteration.append(ours_breakdown(metrics, ours_parts, elapsed))

    trl_times: list[float] = []
    trl_lengths: list[tuple[float, float]] = []  # (min, max) completion length of each TRL step: both == tokens
    trl_parts_per_iteration: list[dict[str, float]] = []

    class Interleave(TrainerCallback):
        """After each TRL step: record its wall time (since the end of our last iteration), run one of ours."""

        def __init__(self) -> None:
            self.mark = 0.0
            self.parts: dict[str, float] = {}
            self.trainer: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.mark = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            elapsed = time.perf_counter() - self.mark
            trl_times.append(elapsed)
            metrics = self.trainer._metrics["train"]
            trl_lengths.append((metrics["completions/min_length"][-1], metrics["completions/max_length"][-1]))
            trl_parts_per_iteration.append(trl_breakdown(self.parts, elapsed))
            self.parts.clear()
            run_ours()
            self.mark = time.perf_counter()

    with tempfile.TemporaryDirectory() as output_dir:
        trl_trainer, trl_parts = make_trl(settings, max_steps=1 + settings.train_repeats, output_dir=output_dir)
        callback = Interleave()
        callback.parts, callback.trainer = trl_parts, trl_trainer
        trl_trainer.add_callback(callback)
        trl_trainer.remove_callback(PrinterCallback)  # no end-of-training metrics dump
        trl_trainer.train()  # TRL step, ours, TRL step, ours, ... (the first of each is the warm-up)
        trl_positions = list(trl_trainer.loss_positions)
    if len(trl_lengths) != 1 + settings.train_repeats or any(
        x != settings.tokens for pair in trl_lengths for x in pair
    ):
        raise RuntimeError(f"TRL completion lengths {trl_lengths}, expected {settings.tokens} in every step")
    ours.close()

    ours_median, trl_median = median(ours_times[1:]), median(trl_times[1:])

    def median_parts(per_iteration: list[dict[str, float]]) -> dict[str, float]:
        timed = per_iteration[1:]
        return {key: median([p[key] for p in timed]) for key in timed[0]} if timed else {}

    return {
        "ours_seconds": ours_median,
        "trl_seconds": trl_median,
        "ratio": trl_median / ours_median,
        "target": TRAIN_TARGET,
        "prompts_per_iteration": settings.batch // settings.num_generations,
        "completions_per_iteration": settings.batch,
        "completion_tokens_per_iteration": settings.batch * settings.tokens,
        "all_seconds_note": "ours/trl_all_seconds: the first entry is the warm-up, left out of the medians",
        "ours_all_seconds": ours_times,
        "trl_all_seconds": trl_times,
        "ours_breakdown_seconds": median_parts(ours_parts_per_iteration),
        "trl_breakdown_seconds": median_parts(trl_parts_per_iteration),
        # token positions through the policy in each loss forward: ours = the distinct prompts (less the columns
        # that are padding in every row) + rows x (completion - 1), TRL = rows x (longest prompt + completion)
        "ours_loss_positions": ours_positions,
        "trl_loss_positions": trl_positions,
        "ours_reward_mean": [m["reward_mean"] for m in ours_metrics],
        "trl_version": version("trl"),
        "precision": settings.precision,
        "trl_gradient_checkpointing": settings.trl_gradient_checkpointing,
        "share_prompt_forward": settings.share_prompt_forward,
    }


# -- report ------------------------------------------------------------------------------------------------
def print_report(settings: Settings, results: dict[str, Any]) -> None:
    print()
    print("Settings: " + ", ".join(f"{k}={v}" for k, v in asdict(settings).items()))
    print(
        f"Load average before/after: {results['load_before']} / {results['load_after']}; versions {results['versions']}"
    )
    r1, r2 = results.get("rollout"), results.get("grpo")
    rows = []
    if r1:
        rows.append(
            (
                "R1 rollout tok/s: env / model.generate",
                f"{r1['env_tokens_per_second']:.1f} / {r1['generate_tokens_per_second']:.1f}",
                f"{r1['ratio']:.2f}x",
                f">= {ROLLOUT_TARGET}x",
                "met" if r1["ratio"] >= ROLLOUT_TARGET else "NOT met",
            )
        )
    if r2 and "skipped" not in r2:
        rows.append(
            (
                "R2 GRPO s/iteration: TRL / ours",
                f"{r2['trl_seconds']:.2f} / {r2['ours_seconds']:.2f}",
                f"{r2['ratio']:.2f}x",
                f">= {TRAIN_TARGET}x",
                "met" if r2["ratio"] >= TRAIN_TARGET else "NOT met",
            )
        )
    header = ("comparison", "medians", "ratio", "target", "")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    if r1:
        b = r1["env_breakdown_seconds"]
        print(
            f"\nR1 env side per rollout (median): model {b['model_seconds']:.3f} s, env.reset/step incl. reward "
            f"{b['env_seconds']:.3f} s; {r1['tokens_per_run']} tokens, prompt slots {r1['prompt_slots']}"
        )
    if r2 and "skipped" in r2:
        print(f"\nR2 skipped: {r2['skipped']}")
    elif r2:
        for side in ("ours", "trl"):
            parts = r2[f"{side}_breakdown_seconds"]
            total = r2[f"{side}_seconds"]
            print(f"\nR2 where the time goes, {side} (median of each part; total median {total:.2f} s):")
            for key, value in parts.items():
                print(f"  {key:<48} {value:8.3f} s  {100 * value / total:5.1f}%")
        print(
            f"\nR2 token positions through the policy per loss forward: ours {r2['ours_loss_positions']}, "
            f"TRL {r2['trl_loss_positions']} (rows x (longest prompt + completion); ours forwards each distinct "
            "prompt once unless --no-share-prompt-forward)"
        )


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=defaults.model, help="built-in model name or local directory")
    parser.add_argument(
        "--batch", type=int, default=defaults.batch, help="sequences per rollout / completions per iteration"
    )
    parser.add_argument("--tokens", type=int, default=defaults.tokens, help="completion tokens per sequence")
    parser.add_argument(
        "--prompt-slots", type=int, default=defaults.prompt_slots, help="the env's max_prompt_tokens (left-padded)"
    )
    parser.add_argument(
        "--num-generations", type=int, default=defaults.num_generations, help="GRPO completions per prompt"
    )
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="timed rollouts per side (R1)")
    parser.add_argument(
        "--train-repeats", type=int, default=defaults.train_repeats, help="timed iterations per side (R2)"
    )
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default=defaults.precision, help="both sides (bf16: mixed precision)"
    )
    parser.add_argument(
        "--trl-no-gradient-checkpointing",
        action="store_true",
        help="turn off TRL's default gradient checkpointing (ours never recomputes activations)",
    )
    parser.add_argument(
        "--no-share-prompt-forward",
        action="store_true",
        help="ours: one loss forward over every full sequence, as TRL does (default: each distinct prompt once)",
    )
    parser.add_argument("--only", choices=("rollout", "grpo"), help="run one comparison")
    parser.add_argument("--json", type=Path, help="also write settings and results to this JSON file")
    args = parser.parse_args(argv)
    for name in ("batch", "tokens", "prompt_slots", "num_generations", "repeats", "train_repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.num_generations < 2 or args.batch % args.num_generations:
        parser.error(f"--num-generations must be >= 2 and divide --batch; got {args.num_generations} and {args.batch}")
    settings = Settings(
        model=args.model,
        batch=args.batch,
        tokens=args.tokens,
        prompt_slots=args.prompt_slots,
        num_generations=args.num_generations,
        repeats=args.repeats,
        train_repeats=args.train_repeats,
        threads=args.threads,
        seed=args.seed,
        precision=args.precision,
        trl_gradient_checkpointing=not args.trl_no_gradient_checkpointing,
        share_prompt_forward=not args.no_share_prompt_forward,
    )
    return settings, args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    settings, args = parse_args(argv)
    torch.set_num_threads(settings.threads)
    # library chatter (TRL/transformers/torch, incl. transformers 5's notices of renamed arguments such as
    # gradient_checkpointing); textenv's own warnings (e.g. prompt truncation) stay visible
    for category in (UserWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(transformers|trl|torch|accelerate)(\.|$)")
    results: dict[str, Any] = {
        "settings": asdict(settings),
        "load_before": load_average(),
        "versions": {p: version(p) for p in ("torch", "transformers", "trl")},
        "cpu_count": os.cpu_count(),
    }
    started = time.perf_counter()
    if args.only in (None, "rollout"):
        print(f"R1: rollout through the env vs model.generate ({settings.model}) ...", flush=True)
        results["rollout"] = rollout_vs_generate(settings)
    if args.only in (None, "grpo"):
        print(f"R2: one GRPO iteration, ours vs TRL ({settings.model}) ...", flush=True)
        results["grpo"] = grpo_ours_vs_trl(settings)
    results["load_after"] = load_average()
    results["torch_threads_at_end"] = torch.get_num_threads()
    results["wall_seconds"] = time.perf_counter() - started
    print_report(settings, results)
    print(f"\ntotal {results['wall_seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(without_nan(results), indent=2, allow_nan=False))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
