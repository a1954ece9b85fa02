"""Reward-model overoptimization, gold vs proxy (Gao, Schulman, Hilton 2022), on a CPU.

1. **Pairs**: the policy samples ``k`` completions per ``builtin:train`` prompt; a gold reward plugin (default VADER
   ``sentiment``) labels every pair of them (``agents.preferences.pairs``).
2. **Proxies**: one reward model per ``N`` in ``pair_counts``, trained on the first ``N`` pairs; an ensemble of
   ``ensemble_members`` (default 3; 0 turns it off) on the largest ``N`` (other seeds), combined as
   ``mean - lam * std``.
3. **Best-of-n** on held-out ``builtin:test`` prompts: ``max_n`` samples per prompt from the initial policy; for
   each ``n = 1, 2, 4, ... max_n`` the expected gold and proxy score of the sample the proxy ranks best among ``n``
   (the unbiased estimator over all ``n``-subsets of the ``max_n`` samples), at ``KL_bon = log n - (n-1)/n``.
4. **RL** (GRPO and LM-PPO from :mod:`agents.lm`) against each proxy (``rl_pair_counts``); every ``rl_eval_every``
   iterations the held-out gold and proxy scores and the KL to the initial policy (``sum_t log pi - log pi_0`` over
   sampled completions).
5. **Fits** by least squares in ``d = sqrt(KL)``: ``R_bon(d) = d (alpha - beta d)`` and
   ``R_RL(d) = d (alpha - beta log d)``, gold and proxy centred on the initial policy's mean; a table of alpha,
   beta, the peak gold and the ``d`` where it peaks, per method and ``N``; a PNG of gold and proxy against ``d``.

Every part is timed (``timings`` in ``results.json``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.reward_model.trainer import json_safe

RL_ALGORITHMS = ("grpo", "lm-ppo")
BON_FORM, RL_FORM = "bon", "rl"
COMMAND = "overoptimization"  # the command whose output folder ``out`` is (agents.checkpoint.claim_output_dir)
OUTPUT_FILES = ("partial_results.json",)  # written by every run that got past training: marks an earlier output
MAX_ROWS = 4096  # sequences sampled in one batch (k per prompt, best-of-n samples, RL episodes): checked up front


@dataclass
class OveroptimizationConfig:
    """Settings of the experiment. The defaults are sized for about an hour on 2 CPU cores (timed in
    experiments/overoptimization/REPORT.md)."""

    out: str = field(default="runs/overoptimization", metadata={"help": "output directory"})
    policy: str = field(default="smollm2-135m-instruct", metadata={"help": "the policy: built-in name or directory"})
    rm_model: str | None = field(default=None, metadata={"help": "base of the proxy reward models (default: policy)"})
    gold: Any = field(default="sentiment", metadata={"help": "the gold reward: any rewards.make spec"})
    env: str = field(default="MossText-v0", metadata={"help": "the env id"})
    max_new_tokens: int = field(default=24, metadata={"help": "completion budget in tokens"})
    seed: int = field(default=0, metadata={"help": "seed of everything"})
    # pairs and proxies
    pair_counts: tuple[int, ...] = field(default=(100, 300, 900), metadata={"help": "N: pairs per proxy RM"})
    k: int = field(default=4, metadata={"help": "completions per prompt when generating pairs (k(k-1)/2 pairs)"})
    pairs_file: str | None = field(
        default=None,
        metadata={"help": "gold-labelled pairs to use instead of generating them (a `textenv pairs` file from the "
                  "same policy, gold and builtin:train prompts); the first N are each proxy's"},
    )
    rm_epochs: int = field(default=2, metadata={"help": "proxy training epochs"})
    rm_trainable_blocks: int = field(default=4, metadata={"help": "top blocks trained in each proxy"})
    rm_learning_rate: float = field(default=1e-4, metadata={"help": "proxy learning rate"})
    rm_pooling: str = field(
        default="mean",
        metadata={"help": "proxy pooling: 'last' or 'mean' (RewardModelConfig; mean: +0.05 accuracy on VADER pairs)"},
    )
    ensemble_members: int = field(
        default=3,
        metadata={"help": "with >= 2: this many proxies on the largest N (other seeds), and best-of-n against their "
                  "mean - ensemble_lam * std (Coste et al. 2024)"},
    )
    ensemble_lam: float = field(default=1.0, metadata={"help": "lam of the mean - lam * std ensemble"})
    # best-of-n
    bon_prompts: int = field(default=16, metadata={"help": "held-out prompts for best-of-n"})
    bon_max_n: int = field(default=64, metadata={"help": "largest n (a power of 2); samples per prompt"})
    # RL
    rl_algorithms: tuple[str, ...] = field(default=RL_ALGORITHMS, metadata={"help": "grpo and/or lm-ppo"})
    rl_pair_counts: tuple[int, ...] | None = field(
        default=None, metadata={"help": "the proxies RL optimises (default: every N in pair_counts)"}
    )
    rl_iterations: int = field(default=12, metadata={"help": "RL iterations per run"})
    rl_eval_every: int = field(default=3, metadata={"help": "held-out evaluation every this many iterations"})
    rl_num_envs: int = field(default=16, metadata={"help": "episodes per RL iteration"})
    rl_learning_rate: float = field(default=2e-4, metadata={"help": "policy learning rate"})
    rl_trainable_blocks: int = field(default=8, metadata={"help": "top policy (and critic) blocks trained"})
    eval_prompts: int = field(default=40, metadata={"help": "held-out prompts per RL evaluation (builtin:test)"})

    @classmethod
    def smoke(cls, out: str) -> OveroptimizationConfig:
        """The end-to-end check on the tiny random model (seconds)."""
        return cls(
            out=out, policy="tiny-random-smollm2", max_new_tokens=6, pair_counts=(12, 24), k=4, rm_epochs=1,
            rm_trainable_blocks=2, rm_learning_rate=1e-3, bon_prompts=3, bon_max_n=8, rl_iterations=2,
            rl_eval_every=1, rl_num_envs=4, rl_trainable_blocks=2, rl_learning_rate=1e-3, eval_prompts=4,
            ensemble_members=2,
        )

    def validate(self) -> None:
        """Check every setting (types, ranges, sizes, the env id, the gold reward, the models and files named), so
        that a bad value fails before any pair is sampled or model trained."""
        counts = list(self.pair_counts)
        if not counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 4 for n in counts):
            raise ValueError(f"pair_counts={self.pair_counts!r}; expected integers >= 4")
        for name, low, high in (
            ("k", 2, MAX_ROWS), ("rm_epochs", 1, 10**6), ("bon_prompts", 1, MAX_ROWS), ("bon_max_n", 1, MAX_ROWS),
            ("rl_num_envs", 2, MAX_ROWS), ("eval_prompts", 1, MAX_ROWS), ("max_new_tokens", 1, 10**6),
            ("rl_eval_every", 1, 10**9), ("rl_iterations", 0, 10**9), ("ensemble_members", 0, 64),
            ("rm_trainable_blocks", 1, 10**6), ("rl_trainable_blocks", 1, 10**6), ("seed", 0, 2**32 - 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name}={value!r}; expected an int in [{low}, {high}]")
        for name in ("rm_learning_rate", "rl_learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name}={value!r}; expected a finite number > 0")
        lam = self.ensemble_lam
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam < math.inf:
            raise ValueError(f"ensemble_lam={lam!r}; expected a finite number >= 0")
        if self.bon_max_n & (self.bon_max_n - 1):
            raise ValueError(f"bon_max_n={self.bon_max_n!r}; expected a power of 2")
        unknown = [a for a in self.rl_algorithms if a not in RL_ALGORITHMS]
        if unknown:
            raise ValueError(f"rl_algorithms has {unknown}; expected some of {RL_ALGORITHMS}")
        missing = [n for n in (self.rl_pair_counts or ()) if n not in counts]
        if missing:
            raise ValueError(f"rl_pair_counts {missing} are not in pair_counts {counts}")
        for name in ("k", "rm_epochs", "bon_prompts", "rl_num_envs", "eval_prompts", "max_new_tokens", "rl_eval_every"):
            if getattr(self, name) < (2 if name == "k" else 1):
                raise ValueError(f"{name}={getattr(self, name)!r} is too small")
        if self.rl_num_envs % 2:
            raise ValueError(f"rl_num_envs={self.rl_num_envs}; expected an even number (GRPO groups of 2+)")
        self._validate_names()

    def _validate_names(self) -> None:
        """The env id, the gold reward, the models and the pairs file name things that exist."""
        import rewards
        from rewards.builtin.reward_model import POOLINGS
        from textenv.models import resolve_model_path
        from textenv.registration import ENV_IDS

        if self.rm_pooling not in POOLINGS:
            raise ValueError(f"rm_pooling={self.rm_pooling!r}; expected one of {POOLINGS}")
        if self.env not in ENV_IDS:
            raise ValueError(f"env={self.env!r} is not a textenv env; expected one of {', '.join(ENV_IDS)}")
        try:
            rewards.make(self.gold)
        except (ValueError, TypeError, ImportError) as err:
            raise ValueError(f"gold={self.gold!r}: {err}") from err
        for name in ("policy", "rm_model"):
            value = getattr(self, name)
            if value is not None:
                try:
                    resolve_model_path(value)
                except (OSError, TypeError) as err:
                    raise ValueError(f"{name}: {err}") from err
        if self.pairs_file is not None and not Path(self.pairs_file).is_file():
            raise ValueError(f"pairs_file={self.pairs_file!r} does not exist")


# -- Gao et al.'s functional forms -----------------------------------------------------------------------------
def gao_features(d: np.ndarray, form: str) -> np.ndarray:
    """The two regressors of ``R(d) = alpha * f1(d) - beta * f2(d)``: ``(d, d^2)`` for best-of-n and
    ``(d, d log d)`` for RL (``d log d`` -> 0 at ``d = 0``)."""
    d = np.asarray(d, dtype=np.float64)
    if form == BON_FORM:
        second = d**2
    elif form == RL_FORM:
        second = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
    else:
        raise ValueError(f"form={form!r}; expected {BON_FORM!r} or {RL_FORM!r}")
    return np.stack([d, -second], axis=1)


def fit_gao(d: Any, reward: Any, form: str) -> dict[str, float]:
    """Least-squares ``alpha, beta`` of Gao et al.'s form and the fitted peak: ``d*`` and ``R(d*)`` (``nan``
    when the fit has no interior maximum, beta <= 0)."""
    d, reward = np.asarray(d, dtype=np.float64), np.asarray(reward, dtype=np.float64)
    if len(d) < 2:
        return {"alpha": math.nan, "beta": math.nan, "fit_peak_d": math.nan, "fit_peak": math.nan}
    (alpha, beta), *_ = np.linalg.lstsq(gao_features(d, form), reward, rcond=None)
    peak_d = peak = math.nan
    if beta > 0:
        peak_d = alpha / (2 * beta) if form == BON_FORM else math.exp(alpha / beta - 1.0)
        peak = float(gao_curve(np.array([peak_d]), alpha, beta, form)[0])
    return {"alpha": float(alpha), "beta": float(beta), "fit_peak_d": float(peak_d), "fit_peak": float(peak)}


def gao_curve(d: np.ndarray, alpha: float, beta: float, form: str) -> np.ndarray:
    return gao_features(d, form) @ np.array([alpha, beta])


# -- best-of-n ---------------------------------------------------------------------------------------------------
def kl_best_of_n(n: int) -> float:
    """The KL of best-of-n sampling to the base policy, ``log n - (n-1)/n``."""
    return math.log(n) - (n - 1) / n


def best_of_n_expectation(proxy: np.ndarray, value: np.ndarray, n: int) -> float:
    """Expected ``value`` of the proxy's best among ``n`` samples drawn without replacement from the ``m`` samples
    of each prompt (rows), averaged over prompts: the sample of proxy rank ``i`` (1 = lowest) is the best of a
    random ``n``-subset with probability ``C(i-1, n-1) / C(m, n)`` (ties broken by order)."""
    proxy, value = np.atleast_2d(proxy), np.atleast_2d(value)
    m = proxy.shape[1]
    weights = np.array([math.comb(i - 1, n - 1) for i in range(1, m + 1)], dtype=np.float64) / math.comb(m, n)
    order = np.argsort(proxy, axis=1, kind="stable")
    ranked = np.take_along_axis(value, order, axis=1)
    return float((ranked @ weights).mean())


# -- the experiment ----------------------------------------------------------------------------------------------
class Experiment:
    """Runs the parts in order; ``results`` collects everything ``results.json`` holds."""

    def __init__(self, config: OveroptimizationConfig) -> None:
        from agents.checkpoint import claim_output_dir

        config.validate()
        self.config = config
        self.out = claim_output_dir(config.out, COMMAND, markers=OUTPUT_FILES)  # refuses anything but our own
        self.timings: dict[str, float] = {}
        self.frozen_cache: Any = None  # shared by the proxies (same base model and trainable blocks)
        self.proxies: dict[str, Any] = {}
        self.results: dict[str, Any] = {"config": json_safe(dataclasses.asdict(config)), "timings": self.timings}
        torch.manual_seed(config.seed)

    def timed(self, key: str, function: Any, *args: Any) -> Any:
        started = time.perf_counter()
        value = function(*args)
        self.timings[key] = round(time.perf_counter() - started, 2)
        print(f"[overoptimization] {key}: {self.timings[key]:.1f} s", flush=True)
        return value

    def run(self) -> dict[str, Any]:
        cfg = self.config
        from textenv.models import load_causal_lm

        self.reference = load_causal_lm(cfg.policy, seed=cfg.seed).eval().requires_grad_(False)
        pairs = self.timed("pairs", self.make_pairs)
        self.proxies = {str(n): self.timed(f"proxy_N{n}", self.train_proxy, pairs[:n], n) for n in cfg.pair_counts}
        if cfg.ensemble_members >= 2:
            largest = max(cfg.pair_counts)
            members = [self.proxies[str(largest)]] + [
                self.timed(f"proxy_N{largest}_seed{i}", self.train_proxy, pairs[:largest], largest, i)
                for i in range(1, cfg.ensemble_members)
            ]
            self.proxies[f"{largest}-ensemble"] = members
        self.write_partial()
        self.results["best_of_n"] = self.timed("best_of_n", self.best_of_n)
        self.write_partial()
        self.results["rl"] = {}
        for algorithm in cfg.rl_algorithms:
            for n in cfg.rl_pair_counts or cfg.pair_counts:
                key = f"{algorithm}_N{n}"
                self.results["rl"][key] = self.timed(f"rl_{key}", self.rl, algorithm, str(n))
                self.write_partial()
        self.results["fits"] = self.fits()
        self.timings["total"] = round(sum(v for k, v in self.timings.items() if k != "total"), 2)
        (self.out / "results.json").write_text(json.dumps(json_safe(self.results), indent=2))
        (self.out / "table.md").write_text(table_markdown(self.results["fits"]))
        self.plot()
        return self.results

    def write_partial(self) -> None:
        """``partial_results.json``: what the finished parts have produced so far (a killed run keeps it)."""
        tmp = self.out / "partial_results.json.tmp"
        tmp.write_text(json.dumps(json_safe({**self.results, "proxies_trained": self.proxies}),
                                  indent=2))
        tmp.replace(self.out / "partial_results.json")

    # -- parts -------------------------------------------------------------------------------------------------
    def make_pairs(self) -> list[Any]:
        from agents.preferences.pairs import PairConfig, generate_pairs
        from textenv.preferences import load_preferences

        cfg = self.config
        if cfg.pairs_file is not None:
            pairs = load_preferences(cfg.pairs_file)
            unlabelled = next((p for p in pairs if p.gold_chosen is None or p.gold_rejected is None), None)
            if len(pairs) < max(cfg.pair_counts) or unlabelled is not None:
                raise ValueError(
                    f"pairs_file={cfg.pairs_file!r} has {len(pairs)} pairs"
                    + (f" and {unlabelled.source} has no gold scores" if unlabelled is not None else "")
                    + f"; expected at least {max(cfg.pair_counts)} gold-labelled pairs"
                )
            self.results["pairs"] = {"out": cfg.pairs_file, "pairs": len(pairs), "reused": True}
            return pairs
        path = self.out / "pairs.jsonl"
        pair_config = PairConfig(
            env=cfg.env, policy=cfg.policy, pairs=max(cfg.pair_counts), gold=cfg.gold, k=cfg.k, seed=cfg.seed,
            prompts="builtin:train", env_kwargs={"max_new_tokens": cfg.max_new_tokens},
        )
        summary = generate_pairs(pair_config, path, model=copy.deepcopy(self.reference), progress=False)
        self.results["pairs"] = summary
        return load_preferences(path)

    def train_proxy(self, pairs: list[Any], n: int, member: int = 0) -> str:
        """Train the proxy on ``pairs`` (``member`` > 0: an ensemble member with another seed); its directory."""
        from agents.reward_model import RewardModelConfig, RewardModelTrainer

        cfg = self.config
        directory = self.out / (f"rm_N{n}" + (f"_seed{member}" if member else ""))
        config = RewardModelConfig(
            model=cfg.rm_model or cfg.policy, seed=cfg.seed + member, num_train_epochs=cfg.rm_epochs,
            trainable_blocks=cfg.rm_trainable_blocks, learning_rate=cfg.rm_learning_rate, output_dir=str(directory),
            progress_bar=False, pooling=cfg.rm_pooling,
        )
        trainer = RewardModelTrainer(pairs, config, frozen_cache=self.frozen_cache)
        self.frozen_cache = trainer.frozen_cache or self.frozen_cache  # the frozen blocks are every proxy's
        result = trainer.train()
        self.results.setdefault("proxies", {})[directory.name] = {
            "held_out_accuracy": result.best_eval_accuracy, "steps": result.steps,
            "train_seconds": round(result.train_seconds, 2), "path": str(directory),
        }
        return str(directory)

    def sample(self, policy: Any, prompt_count: int, per_prompt: int, seed: int) -> Any:
        """``per_prompt`` completions of each of the first ``prompt_count`` held-out prompts: a rollout whose
        scores are the gold reward (the env's reward)."""
        import gymnasium as gym

        import textenv
        from agents.lm.rollout import RolloutEngine
        from textenv.registration import with_reward

        cfg = self.config
        prompts = [p.text for p in textenv.load_prompts("builtin:test")][:prompt_count]
        rows = len(prompts) * per_prompt
        env = gym.make_vec(
            cfg.env, num_envs=min(rows, 64), vectorization_mode="vector_entry_point",
            autoreset_mode=gym.vector.AutoresetMode.DISABLED,
            **with_reward({"prompts": prompts, "max_new_tokens": cfg.max_new_tokens}, cfg.gold),
        )
        engine = RolloutEngine(env, policy, temperature=1.0)
        order = np.repeat(np.arange(len(prompts)), per_prompt)
        rollouts = []
        generator = torch.Generator().manual_seed(seed)
        for start in range(0, rows, env.num_envs):
            chunk = order[start : start + env.num_envs]
            if len(chunk) < env.num_envs:  # the env has a fixed width: pad with repeats, dropped below
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], env.num_envs - len(chunk))])
            rollouts.append((engine.collect(generator, seed=seed + start, prompt_indices=chunk), start))
        env.close()
        texts = [(r.prompts[i], r.completions[i]) for r, _ in rollouts for i in range(r.num_sequences)][:rows]
        gold = np.concatenate([r.scores.double().cpu().numpy() for r, _ in rollouts])[:rows]
        return texts, gold, [r for r, _ in rollouts], engine.allowed

    def proxy_spec(self, label: str) -> dict[str, Any]:
        """The reward spec of proxy ``label``: ``"N"`` (one reward model) or ``"N-ensemble"``."""
        proxy = self.proxies[label]
        if isinstance(proxy, list):
            kwargs = {"paths": proxy, "aggregate": "mean_minus_std", "lam": self.config.ensemble_lam}
            return {"name": "reward_model", "kwargs": kwargs}
        return {"name": "reward_model", "kwargs": {"path": proxy}}

    def proxy_scores(self, label: str, texts: list[tuple[str, str]]) -> np.ndarray:
        import rewards

        proxy = rewards.make(self.proxy_spec(label))
        return proxy([p for p, _ in texts], [c for _, c in texts])

    def best_of_n(self) -> dict[str, Any]:
        cfg = self.config
        m = cfg.bon_max_n
        texts, gold, _, _ = self.sample(self.reference, cfg.bon_prompts, m, cfg.seed + 1)
        gold = gold.reshape(-1, m)
        ns = [2**i for i in range(int(math.log2(m)) + 1)]
        curves = {}
        for label in self.proxies:
            proxy = self.proxy_scores(label, texts).reshape(-1, m)
            gold0, proxy0 = float(gold.mean()), float(proxy.mean())
            curves[label] = {
                "n": ns,
                "kl": [kl_best_of_n(n) for n in ns],
                "gold": [best_of_n_expectation(proxy, gold, n) for n in ns],
                "proxy": [best_of_n_expectation(proxy, proxy, n) for n in ns],
                "gold_initial": gold0,
                "proxy_initial": proxy0,
            }
        return curves

    def rl(self, algorithm: str, label: str) -> dict[str, Any]:
        from agents import lm
        from agents.reward_model.scoring import freeze_lower_blocks
        from textenv.registration import with_reward

        cfg = self.config
        policy = copy.deepcopy(self.reference).requires_grad_(True)
        freeze_lower_blocks(policy, cfg.rl_trainable_blocks)
        common = dict(
            seed=cfg.seed, num_envs=cfg.rl_num_envs, learning_rate=cfg.rl_learning_rate, progress_bar=False,
            num_minibatches=2, reference_metrics=False,
        )
        if algorithm == "grpo":
            config: Any = lm.GRPOConfig(num_generations=4 if cfg.rl_num_envs % 4 == 0 else 2, **common)
            trainer_class: Any = lm.GRPOTrainer
        else:  # MOSS-RLHF's critic-from-RM: the value model starts as the proxy reward model
            config = lm.LMPPOConfig(value_model_init=self.proxies[label], critic_learning_rate=1e-4, **common)
            trainer_class = lm.LMPPOTrainer
        env_kwargs = with_reward({"prompts": "builtin:train", "max_new_tokens": cfg.max_new_tokens},
                                 self.proxy_spec(label))
        trainer = trainer_class(cfg.env, policy, config, env_kwargs=env_kwargs)
        if algorithm == "lm-ppo":
            critic = trainer.accelerator.unwrap_model(trainer.value_model)
            freeze_lower_blocks(critic.backbone, cfg.rl_trainable_blocks, head=critic.head)
        points = []
        try:
            for iteration in range(0, cfg.rl_iterations + 1):
                if iteration % cfg.rl_eval_every == 0 or iteration == cfg.rl_iterations:
                    points.append({"iteration": iteration, **self.evaluate_policy(trainer.unwrapped_policy, label)})
                if iteration < cfg.rl_iterations:
                    trainer.train(1)
        finally:
            trainer.close()
        gold0, proxy0 = points[0]["gold"], points[0]["proxy"]
        return {
            "iteration": [p["iteration"] for p in points],
            "kl": [p["kl"] for p in points],
            "gold": [p["gold"] for p in points],
            "proxy": [p["proxy"] for p in points],
            "gold_initial": gold0,
            "proxy_initial": proxy0,
        }

    @torch.no_grad()
    def evaluate_policy(self, policy: Any, label: str) -> dict[str, float]:
        """Held-out gold, proxy and ``KL(pi || pi_0)`` (mean over completions of the summed log-ratio)."""
        from agents.lm.rollout import sequence_logprobs

        cfg = self.config
        was_training = policy.training
        policy.eval()
        texts, gold, rollouts, allowed = self.sample(policy, cfg.eval_prompts, 1, cfg.seed + 2)
        kl = torch.cat([
            ((sequence_logprobs(policy, r, allowed=allowed) - sequence_logprobs(self.reference, r, allowed=allowed))
             * r.mask).sum(1)
            for r in rollouts
        ])[: len(texts)]
        policy.train(was_training)
        proxy = float(self.proxy_scores(label, texts).mean())
        return {"gold": float(gold.mean()), "proxy": proxy, "kl": float(kl.mean())}

    # -- fits, table, plot -------------------------------------------------------------------------------------
    def fits(self) -> list[dict[str, Any]]:
        rows = []
        curves = [("best-of-n", BON_FORM, key, c) for key, c in self.results["best_of_n"].items()]
        for key, c in self.results["rl"].items():
            algorithm, _, n = key.rpartition("_N")
            curves.append((algorithm, RL_FORM, n, c))
        for method, form, n, curve in curves:
            d = np.sqrt(np.clip(curve["kl"], 0.0, None))
            gold = np.asarray(curve["gold"]) - curve["gold_initial"]
            proxy = np.asarray(curve["proxy"]) - curve["proxy_initial"]
            peak = int(np.argmax(gold))
            row = {"method": method, "N": n, "gold_initial": curve["gold_initial"]}
            for name, values in (("gold", gold), ("proxy", proxy)):
                fit = fit_gao(d, values, form)
                row.update({f"{name}_{k}": v for k, v in fit.items()})
            row.update({"peak_gold": float(gold[peak]), "peak_gold_d": float(d[peak]), "final_d": float(d[-1])})
            rows.append(row)
        return rows

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [("best-of-n", BON_FORM, self.results["best_of_n"])]
        for algorithm in self.config.rl_algorithms:
            runs = {k.rpartition("_N")[2]: c for k, c in self.results["rl"].items() if k.startswith(algorithm + "_N")}
            panels.append((algorithm, RL_FORM, runs))
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
        fits = {(r["method"], r["N"]): r for r in self.results["fits"]}
        for ax, (method, form, curves) in zip(axes[0], panels):
            for i, (n, curve) in enumerate(curves.items()):
                color = f"C{i}"
                d = np.sqrt(np.clip(curve["kl"], 0.0, None))
                grid = np.linspace(0, max(float(d.max()), 1e-3), 100)
                fit = fits[(method, n)]
                for name, style in (("gold", "-"), ("proxy", "--")):
                    values = np.asarray(curve[name]) - curve[f"{name}_initial"]
                    ax.plot(d, values, "o" if name == "gold" else "x", color=color,
                            label=f"N={n} {name}" if name == "gold" or i == 0 else None)
                    if math.isfinite(fit[f"{name}_alpha"]):
                        ax.plot(grid, gao_curve(grid, fit[f"{name}_alpha"], fit[f"{name}_beta"], form), style,
                                color=color, alpha=0.7)
            ax.set_title(f"{method} ({'d(a - b d)' if form == BON_FORM else 'd(a - b log d)'} fits)")
            ax.set_xlabel("d = sqrt(KL to the initial policy)")
            ax.set_ylabel("score - initial mean (gold: o, proxy: x / dashed)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(self.out / "overoptimization.png", dpi=110)
        plt.close(fig)


def table_markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| method | N | gold alpha | gold beta | proxy alpha | proxy beta | peak gold (seen) | d at peak "
        "| fitted peak gold | fitted d* |\n"
    )
    head += "|---|---|---|---|---|---|---|---|---|---|\n"
    for r in rows:
        head += (
            f"| {r['method']} | {r['N']} | {r['gold_alpha']:.3f} | {r['gold_beta']:.3f} | {r['proxy_alpha']:.3f} | "
            f"{r['proxy_beta']:.3f} | {r['peak_gold']:+.3f} | {r['peak_gold_d']:.2f} | {r['gold_fit_peak']:+.3f} | "
            f"{r['gold_fit_peak_d']:.2f} |\n"
        )
    return head


# -- command line ----------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true", help="the tiny random model, seconds end to end (tests)")
    defaults = OveroptimizationConfig()
    for f in dataclasses.fields(OveroptimizationConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
        if isinstance(default, tuple) or f.name == "rl_pair_counts":
            kind = str if f.name == "rl_algorithms" else int
            parser.add_argument(flag, nargs="+", type=kind, default=None, help=help_text)
        elif f.name == "gold":
            parser.add_argument(flag, default=None, help=help_text + "; JSON for a spec with arguments")
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(flag, type=kind, default=None, help=help_text)


def config_from_args(args: argparse.Namespace) -> OveroptimizationConfig:
    overrides = {}
    for f in dataclasses.fields(OveroptimizationConfig):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if isinstance(value, list):
            value = tuple(value)
        if f.name == "gold" and value.lstrip().startswith(("{", "[")):
            value = json.loads(value)
        overrides[f.name] = value
    if args.smoke:
        base = OveroptimizationConfig.smoke(overrides.get("out", "runs/overoptimization_smoke"))
    else:
        base = OveroptimizationConfig()
    return dataclasses.replace(base, **overrides)


def run(config: OveroptimizationConfig) -> dict[str, Any]:
    """Run the experiment; return a summary (the table rows and the timings)."""
    results = Experiment(config).run()
    summary = {"out": results["config"]["out"], "timings": results["timings"], "proxies": results.get("proxies")}
    return json_safe({**summary, "fits": results["fits"]})


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Run the experiment as the command line asks; return a summary (the table rows and the timings)."""
    return run(config_from_args(args))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    summary = run_from_args(parser.parse_args(argv))
    print(json.dumps(json_safe(summary), indent=2))
