"""Preference pairs generated from an env: k sampled completions per prompt, labelled by a gold reward.

Each round samples ``k`` completions for each of ``prompts_per_batch`` prompts with the policy, through the
textenv vector env (:class:`agents.lm.rollout.RolloutEngine`) whose reward is the **gold** plugin, so every
completion comes back with its gold score. Every two completions of one prompt make a pair, labelled

* ``deterministic``: the higher gold score wins; ties are dropped;
* ``bt``: a Bradley–Terry draw, ``P(a wins) = sigmoid((g_a - g_b) / temperature)``;

and then flipped with probability ``label_noise``. Pairs with identical or blank completions are dropped, and so are
pairs whose gold scores differ by less than ``min_gap`` (0 by default: only deterministic ties).
Each written pair keeps its prompt, both gold scores, and where it came from (``gen_round``, ``gen_index``).

Everything random is drawn from ``(seed, round, purpose)``, so the file is reproducible, and a run that was
killed continues where it stopped: pairs are appended one fsync'd line at a time, and a rerun regenerates
the last round and writes only what is missing. The settings are kept beside the file
(``FILE.settings.json``); a rerun with different settings is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textenv.files import parse_json
from textenv.jsonl import drop_partial_line, iter_lines, write_records
from textenv.models import DEFAULT_MODEL
from textenv.preferences import PreferencePair, write_preferences

LABELS = ("deterministic", "bt")
RESUME_FIELDS = ("gen_round", "gen_index")
MAX_ROWS = 4096  # sequences sampled together in a round (prompts_per_batch * k): checked before anything is built


@dataclass
class PairConfig:
    """Settings of :func:`generate_pairs` (all but ``pairs`` must match when a file is resumed)."""

    env: str = field(default="MossText-v0", metadata={"help": "registered textenv env id"})
    policy: str = field(default=DEFAULT_MODEL, metadata={"help": "causal LM: built-in name or directory"})
    pairs: int = field(default=1000, metadata={"help": "pairs wanted in the file (a rerun tops it up)"})
    gold: Any = field(default="sentiment", metadata={"help": "gold reward: any rewards.make spec"})
    k: int = field(default=2, metadata={"help": "completions per prompt; each round gives k(k-1)/2 pairs per prompt"})
    labels: str = field(default="deterministic", metadata={"help": "'deterministic' or 'bt' (Bradley-Terry draw)"})
    temperature: float = field(default=1.0, metadata={"help": "Bradley-Terry temperature of the gold gap (> 0)"})
    label_noise: float = field(default=0.0, metadata={"help": "probability of flipping each label, in [0, 1)"})
    min_gap: float = field(
        default=0.0,
        metadata={"help": "drop pairs whose gold scores differ by less than this (>= 0; 0 keeps all but deterministic "
                  "ties)."},
    )
    seed: int = field(default=0, metadata={"help": "seed of prompt order, sampling and labels"})
    prompts: Any = field(default=None, metadata={"help": "prompt source overriding the env's (e.g. builtin:train)"})
    sampling_temperature: float = field(default=1.0, metadata={"help": "policy sampling temperature (> 0)"})
    prompts_per_batch: int = field(default=8, metadata={"help": "prompts per round; the env has this times k rows"})
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "other env arguments"})

    def __post_init__(self) -> None:
        checks = [
            ("pairs", self.pairs, isinstance(self.pairs, int) and self.pairs >= 1, "an int >= 1"),
            ("k", self.k, isinstance(self.k, int) and self.k >= 2, "an int >= 2"),
            ("labels", self.labels, self.labels in LABELS, f"one of {LABELS}"),
            ("temperature", self.temperature, _positive(self.temperature), "a number > 0"),
            ("label_noise", self.label_noise, _number(self.label_noise) and 0 <= self.label_noise < 1, "in [0, 1)"),
            ("min_gap", self.min_gap, _number(self.min_gap) and self.min_gap >= 0, "a number >= 0"),
            ("sampling_temperature", self.sampling_temperature, _positive(self.sampling_temperature), "a number > 0"),
            ("prompts_per_batch", self.prompts_per_batch, isinstance(self.prompts_per_batch, int)
             and self.prompts_per_batch >= 1, "an int >= 1"),
            ("seed", self.seed, isinstance(self.seed, int) and self.seed >= 0, "an int >= 0"),
        ]
        for name, value, ok, expected in checks:
            if not ok or isinstance(value, bool):
                raise ValueError(f"{name}={value!r}; expected {expected}")
        if self.k * self.prompts_per_batch > MAX_ROWS:
            raise ValueError(
                f"k={self.k} completions for each of prompts_per_batch={self.prompts_per_batch} prompts is "
                f"{self.k * self.prompts_per_batch:,} sequences sampled at once (and {self.pairs_per_round:,} pairs); "
                f"expected k * prompts_per_batch <= {MAX_ROWS}"
            )

    @property
    def pairs_per_round(self) -> int:
        return self.prompts_per_batch * self.k * (self.k - 1) // 2

    def settings(self) -> dict[str, Any]:
        """The settings that fix the file's content (JSON; everything but ``pairs``; ``min_gap`` only when it is set,
        so files written before it existed resume as before)."""
        values = {key: value for key, value in asdict(self).items()
                  if key != "pairs" and not (key == "min_gap" and value == 0)}
        return json.loads(json.dumps(values, default=repr))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def settings_path(out: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(out)}.settings.json")


def round_seed(seed: int, round_: int, purpose: str) -> int:
    """A seed drawn from ``(seed, round, purpose)``."""
    tag = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little")
    return int(np.random.SeedSequence([seed, round_, tag]).generate_state(1, dtype=np.uint32)[0] >> 1)


def label_pair(gold_a: float, gold_b: float, u_label: float, u_noise: float, config: PairConfig) -> bool | None:
    """Whether ``a`` is chosen over ``b`` (``None``: a deterministic tie, dropped). ``u_label`` and ``u_noise`` are
    uniform draws in [0, 1): the Bradley–Terry draw and the noise flip."""
    if config.labels == "deterministic":
        if gold_a == gold_b:
            return None
        a_wins = gold_a > gold_b
    else:
        a_wins = u_label < 0.5 * (1.0 + math.tanh((gold_a - gold_b) / (2.0 * config.temperature)))  # sigmoid
    return a_wins != (u_noise < config.label_noise)


class PairGenerator:
    """Samples and labels pairs round by round (see the module docstring).

    Args:
        config: the settings.
        model: the policy as a loaded causal LM (default: ``load_causal_lm(config.policy)``).
    """

    def __init__(self, config: PairConfig, model: Any = None) -> None:
        import gymnasium as gym

        import textenv  # noqa: F401  (registers the env ids)
        from agents.lm.rollout import RolloutEngine
        from textenv.registration import with_reward

        self.config = config
        if model is None:
            from textenv.models import load_causal_lm

            model = load_causal_lm(config.policy, seed=config.seed)
        env_kwargs = with_reward(config.env_kwargs, config.gold)  # the env's own reward_kwargs are not the gold's
        if config.prompts is not None:
            env_kwargs["prompts"] = config.prompts
        self.env = gym.make_vec(
            config.env,
            num_envs=config.prompts_per_batch * config.k,
            vectorization_mode="vector_entry_point",
            autoreset_mode=gym.vector.AutoresetMode.DISABLED,
            **env_kwargs,
        )
        self.engine = RolloutEngine(self.env, model, temperature=config.sampling_temperature)
        self.num_prompts = len(self.engine.task.prompts)
        self.dropped = {"tie": 0, "identical": 0, "blank": 0, "small_gap": 0}

    def prompt_indices(self, round_: int) -> np.ndarray:
        """The round's prompts: consecutive positions of a sequence that visits every prompt once per epoch, in
        an order drawn from ``(seed, epoch)``."""
        b, n = self.config.prompts_per_batch, self.num_prompts
        indices = []
        for position in range(round_ * b, round_ * b + b):
            epoch, offset = divmod(position, n)
            order = np.random.default_rng(round_seed(self.config.seed, epoch, "prompt-order")).permutation(n)
            indices.append(int(order[offset]))
        return np.asarray(indices, dtype=np.int64)

    def round_pairs(self, round_: int) -> list[PreferencePair]:
        """Every labelled pair of round ``round_`` (the same pairs for the same settings, every time)."""
        import torch

        cfg = self.config
        generator = torch.Generator(device=self.engine.device).manual_seed(round_seed(cfg.seed, round_, "sampling"))
        rows = np.repeat(self.prompt_indices(round_), cfg.k)
        rollout = self.engine.collect(generator, seed=round_seed(cfg.seed, round_, "env"), prompt_indices=rows)
        gold = rollout.scores.double().cpu().tolist()
        combos = list(itertools.combinations(range(cfg.k), 2))
        count = cfg.pairs_per_round
        draws = np.random.default_rng(round_seed(cfg.seed, round_, "labels")).random((count, 2))
        pairs = []
        for index in range(count):
            group, combo = divmod(index, len(combos))
            a, b = (group * cfg.k + member for member in combos[combo])
            text_a, text_b = rollout.completions[a], rollout.completions[b]
            if not text_a.strip() or not text_b.strip():
                self.dropped["blank"] += 1
                continue
            if text_a == text_b:
                self.dropped["identical"] += 1
                continue
            if abs(gold[a] - gold[b]) < cfg.min_gap:
                self.dropped["small_gap"] += 1
                continue
            a_wins = label_pair(gold[a], gold[b], *draws[index], cfg)
            if a_wins is None:
                self.dropped["tie"] += 1
                continue
            chosen, rejected = (a, b) if a_wins else (b, a)
            pairs.append(
                PreferencePair(
                    chosen=rollout.completions[chosen],
                    rejected=rollout.completions[rejected],
                    prompt=rollout.prompts[a],
                    gold_chosen=gold[chosen],
                    gold_rejected=gold[rejected],
                    metadata={"gen_round": round_, "gen_index": index},
                )
            )
        return pairs

    def close(self) -> None:
        self.env.close()


def resume_point(out: Path, config: PairConfig) -> tuple[int, tuple[int, int] | None]:
    """``(pairs already in the file, (round, index) of the last one)``, after cutting a partial last line and
    checking that the file was written with the same settings. Writes nothing for a new file (its settings are
    written with its first pair)."""
    stored = settings_path(out)
    if out.is_dir():
        raise ValueError(f"{out} is a folder; expected a JSONL file to write pairs to")
    if not out.exists() or out.stat().st_size == 0:
        return 0, None
    if not stored.exists():
        raise ValueError(
            f"{out} exists but has no {stored.name} beside it, so it was not written by `textenv pairs`; "
            "choose another output file"
        )
    previous = parse_json(stored.read_bytes(), str(stored))
    if not isinstance(previous, dict):
        raise ValueError(f"{stored} is not a settings file (a JSON object)")
    current = config.settings()
    changed = {
        key: (previous.get(key), current.get(key)) for key in {**previous, **current}
        if previous.get(key) != current.get(key)
    }
    if changed:
        described = ", ".join(f"{key}: {old!r} in the file, {new!r} now" for key, (old, new) in changed.items())
        raise ValueError(f"{out} was generated with other settings ({described}); use the same ones or another file")
    drop_partial_line(out)
    count, last = 0, None
    for number, raw in iter_lines(out):
        record = parse_json(raw, f"{out}:{number}")
        if not isinstance(record, dict) or not all(isinstance(record.get(name), int) for name in RESUME_FIELDS):
            raise ValueError(f"{out}:{number}: no {' and '.join(RESUME_FIELDS)}; not a file written by `textenv pairs`")
        count, last = count + 1, (record["gen_round"], record["gen_index"])
    return count, last


def generate_pairs(
    config: PairConfig, out: str | os.PathLike, *, model: Any = None, progress: bool = True
) -> dict[str, Any]:
    """Append labelled pairs to ``out`` until it holds ``config.pairs`` (resuming a partial file).

    Returns a summary: pairs in the file, pairs written now, rounds sampled, pairs dropped by reason, seconds.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"cannot write {out}: a part of its folder path is a file") from None
    existing, last = resume_point(out, config)
    started, written, rounds, empty_rounds = time.perf_counter(), 0, 0, 0
    round_ = 0 if last is None else last[0]
    generator = None
    with tqdm(total=config.pairs, initial=min(existing, config.pairs), unit="pair", disable=not progress) as bar:
        while existing + written < config.pairs:
            if generator is None:
                generator = PairGenerator(config, model)
            pairs = [
                pair for pair in generator.round_pairs(round_)
                if last is None or (round_, pair.metadata["gen_index"]) > last
            ]
            rounds += 1
            empty_rounds = 0 if pairs else empty_rounds + 1
            if empty_rounds >= 20:
                raise ValueError(
                    f"20 rounds in a row gave no usable pair (dropped so far: {generator.dropped}); the gold reward "
                    f"{config.gold!r} cannot tell these completions apart"
                )
            for pair in pairs[: config.pairs - existing - written]:
                if existing + written == 0:  # the file's first pair: its settings first, beside it
                    write_records(settings_path(out), [config.settings()])
                write_preferences(out, [pair], append=True)
                written += 1
                bar.update(1)
            round_ += 1
    if generator is not None:
        generator.close()
    return {
        "out": str(out),
        "pairs": existing + written,
        "written": written,
        "rounds": rounds,
        "dropped": generator.dropped if generator is not None else {},
        "seconds": round(time.perf_counter() - started, 2),
    }
