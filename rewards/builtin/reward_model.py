"""``reward_model``: the score of a trained reward model, or of an ensemble of them (mean, min, mean - lam*std)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewards.builtin._models import check_model_path
from rewards.builtin._util import check_bool, check_choice, check_int
from rewards.registry import register

AGGREGATES = ("mean", "min", "mean_minus_std")
METADATA_FILE = "textenv_reward_model.json"  # written beside the weights by ``textenv train-rm``
TOKEN_SCORES_FILE = "token_scores.safetensors"  # a model trained with token_scores=True: one score per token id
TOKEN_SCORES_KEY = "token_scores"  # the tensor's name in that file
ADAPTER_CONFIG = "adapter_config.json"  # a reward model trained with a LoRA adapter: PEFT's adapter files, no weights
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # its weights: read only as safetensors (peft would unpickle a .bin)


def encode_prompt_completion(
    tokenizer: Any, prompt: str, completion: str, max_length: int
) -> tuple[list[int], list[int]]:
    """The token ids a reward model reads for one text: ``(prompt_ids, completion_ids)``.

    Prompt and completion are tokenized separately, without special tokens, and read as their concatenation (so a
    prompt shared by two completions has the same ids in both). Trailing pad tokens are dropped (the score is read
    at the last token, and transformers' sequence classifiers read it at the last token that is not the pad
    token). Texts longer than ``max_length`` tokens lose tokens from the left: the prompt's first, then the
    completion's, so the end of the completion is always seen. An empty text is one pad token.
    """
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else []
    completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"]) if completion else []
    pad = tokenizer.pad_token_id
    while completion_ids and completion_ids[-1] == pad:
        completion_ids.pop()
    if not completion_ids:
        while prompt_ids and prompt_ids[-1] == pad:
            prompt_ids.pop()
    excess = len(prompt_ids) + len(completion_ids) - max_length
    if excess > 0:
        cut = min(excess, len(prompt_ids))
        prompt_ids = prompt_ids[cut:]
        completion_ids = completion_ids[excess - cut :]
    if not prompt_ids and not completion_ids:
        completion_ids = [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0]
    return prompt_ids, completion_ids


POOLINGS = ("last", "mean")


def pad_prompt_completions(rows: Sequence[tuple[list[int], list[int]]], pad_token_id: int) -> tuple[Any, Any, Any]:
    """Right-pad ``(prompt_ids, completion_ids)`` rows (:func:`encode_prompt_completion`) read as their
    concatenation: ``(ids, mask, completion_mask)``, each ``(rows, longest)`` long, the last marking each row's
    completion tokens (what ``pooling="mean"`` averages over)."""
    import torch

    width = max(len(prompt) + len(completion) for prompt, completion in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros_like(mask)
    for i, (prompt, completion) in enumerate(rows):
        ids[i, : len(prompt) + len(completion)] = torch.as_tensor(prompt + completion)
        mask[i, : len(prompt) + len(completion)] = 1
        completion_mask[i, len(prompt) : len(prompt) + len(completion)] = 1
    return ids, mask, completion_mask


def pool_hidden(hidden: Any, mask: Any, pool_mask: Any, pooling: str) -> Any:
    """One vector per row of right-padded ``hidden`` ``(S, L, H)``: the hidden state at the last real token of
    ``mask`` (``"last"``), or the mean over the positions of ``pool_mask`` (``"mean"``)."""
    import torch

    if pooling == "last":
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, mask.sum(1) - 1]
    weights = pool_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def token_score_sum(table: Any, ids: Any, mask: Any) -> Any:
    """The token-score term of a reward model trained with ``token_scores=True``: the sum of ``table[id]``
    (``(vocab,)``) over the positions of ``ids`` ``(S, L)`` that ``mask`` marks (the completion's tokens), ``(S,)``."""
    return (table[ids] * mask.to(table.dtype)).sum(1)


def load_token_scores(path: str | os.PathLike, vocab_size: int) -> Any:
    """The token-score table of a reward-model directory whose metadata says ``token_scores: true``: a float32
    ``(vocab_size,)`` tensor read from ``token_scores.safetensors`` (safetensors only: data, never code), checked for
    its shape and for finite values. A damaged file raises ``ValueError`` naming it."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path) / TOKEN_SCORES_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path}/{METADATA_FILE} says token_scores=true, but {file} is missing")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{file}: not a readable safetensors file ({' '.join(str(err).split())})") from None
    table = tensors.get(TOKEN_SCORES_KEY)
    if table is None or tuple(table.shape) != (vocab_size,):
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        raise ValueError(f"{file}: expected one tensor {TOKEN_SCORES_KEY!r} of shape ({vocab_size},) (the model's "
                         f"vocabulary), found {found}")
    if not bool(torch.isfinite(table).all()):
        raise ValueError(f"{file}: the token scores hold NaN or infinite values")
    return table.float()


def classifier_from_backbone(config: Any, backbone_state: dict[str, Any], dtype: Any = None, seed: int = 0) -> Any:
    """A sequence classifier of ``config`` whose backbone holds ``backbone_state`` (a causal LM's
    ``base_model.state_dict()``; blocks beyond ``config``'s count are left out) and whose score head is drawn from
    ``seed``."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(
            config, dtype=dtype or torch.float32, trust_remote_code=False  # built from the known model type
        )
    wanted = model.base_model.state_dict()
    missing = sorted(set(wanted) - set(backbone_state))
    if missing:
        raise ValueError(f"backbone weights do not fit a {type(model).__name__}: missing {missing[:3]}")
    model.base_model.load_state_dict({name: backbone_state[name] for name in wanted})
    return model


def is_classifier_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a sequence classifier (its ``config.json`` says so)."""
    from textenv.files import parse_json

    config = Path(str(path)) / "config.json"
    if not config.is_file():
        return False
    saved = parse_json(config.read_bytes(), str(config))
    architectures = saved.get("architectures") if isinstance(saved, dict) else None
    return isinstance(architectures, list) and any(
        isinstance(a, str) and a.endswith("ForSequenceClassification") for a in architectures
    )


def load_classifier(
    path: str | os.PathLike, metadata: dict[str, Any], dtype: Any = None, *, trust_remote_code: bool = False
) -> Any:
    """The reward model of a directory: ``AutoModelForSequenceClassification.from_pretrained``, or -- for a model
    trained with a LoRA adapter (``adapter_config.json`` beside ``config.json``, no weights) -- the base model its
    metadata names, rebuilt as the classifier of ``config.json``, with the adapter (and the score head saved with it)
    merged in (needs ``peft``: ``pip install 'textenv[lora]'``). Nothing is run from disk unless
    ``trust_remote_code``; an adapter is read from safetensors only (never unpickled)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from textenv.models import from_pretrained, load_causal_lm

    trust = trust_remote_code
    if not (Path(path) / ADAPTER_CONFIG).is_file():
        return from_pretrained(AutoModelForSequenceClassification, path, dtype=dtype, trust_remote_code=trust)
    if not (Path(path) / ADAPTER_WEIGHTS).is_file():
        raise ValueError(f"reward_model reward: {path} holds {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS} (adapters are "
                         "read from safetensors only)")
    try:
        from peft import PeftModel
    except ImportError as err:
        raise ImportError(f"reward_model reward: {path} is a LoRA reward model; reading it needs the peft library: "
                          "pip install 'textenv[lora]'") from err
    lora = metadata.get("lora")
    if not isinstance(lora, dict) or not isinstance(lora.get("base_model"), str):
        raise ValueError(f"reward_model reward: {path} holds an adapter, but {METADATA_FILE} names no base model "
                         "(lora.base_model)")
    base, seed = lora["base_model"], lora.get("base_seed", 0)
    if is_classifier_dir(base):  # a reward model trained further
        backbone = load_classifier(base, read_metadata(base), dtype, trust_remote_code=trust).base_model
    else:
        backbone = load_causal_lm(base, seed=seed if isinstance(seed, int) else 0, dtype=dtype,
                                  trust_remote_code=trust).base_model
    config = from_pretrained(AutoConfig, path, trust_remote_code=trust)
    model = classifier_from_backbone(config, backbone.state_dict(), dtype)
    # peft reads adapter_config.json (data: no auto_map) and the safetensors checked above
    return PeftModel.from_pretrained(model, str(path), is_trainable=False).merge_and_unload()


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``textenv_reward_model.json`` of a reward-model directory, or ``{}`` for a directory without one.

    The fields that change how the model is read are checked (a damaged or edited file raises ``ValueError``
    naming it): ``pooling`` one of :data:`POOLINGS` (or the older ``"last_token"``), ``token_scores`` true or false
    (a JSON boolean), ``score_stats`` an object with a finite ``mean`` and a finite ``std`` > 0.
    """
    from textenv.files import parse_json

    file = Path(path) / METADATA_FILE
    if not file.is_file():
        return {}
    metadata = parse_json(file.read_bytes(), str(file))
    if not isinstance(metadata, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(metadata).__name__}")
    pooling = metadata.get("pooling", "last")
    if pooling not in (*POOLINGS, "last_token"):
        raise ValueError(f"{file}: pooling={pooling!r}; expected one of {POOLINGS}")
    if not isinstance(metadata.get("token_scores", False), bool):
        raise ValueError(f"{file}: token_scores={metadata['token_scores']!r}; expected true or false")
    stats = metadata.get("score_stats")
    if stats is not None:
        ok = isinstance(stats, dict) and all(_finite(stats.get(key)) for key in ("mean", "std"))
        if not ok or not stats["std"] > 0:
            raise ValueError(f"{file}: score_stats={stats!r:.120}; expected {{\"mean\": a finite number, "
                             "\"std\": a finite number > 0}")
    return metadata


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@register("reward_model")
class RewardModelReward:
    """The scalar score of a reward model (``AutoModelForSequenceClassification`` with one output, as written by
    ``textenv train-rm``), or the aggregate of an ensemble of them.

    Each text is ``prompt + completion``, tokenized as the trainer tokenizes it
    (:func:`encode_prompt_completion`), right-padded, scored in batches under ``torch.no_grad()`` in eval mode; the
    score is the model's logit at the last token (or, for a model trained with ``pooling="mean"`` -- its
    ``textenv_reward_model.json`` says so -- the score head applied to the mean hidden state over the completion's
    tokens); a model trained with ``token_scores=True`` adds the sum of its per-token scores
    (``token_scores.safetensors``) over the completion's tokens. With several ``paths`` each model scores every text
    and the scores are combined per text (Coste et al. 2024, "Reward Model Ensembles Help Mitigate Overoptimization"):
    ``"mean"``, ``"min"`` (worst case), or ``"mean_minus_std"`` (``mean - lam * std`` over the members, the
    uncertainty-weighted optimisation). With ``normalize`` each member's score is first standardised with the mean
    and standard deviation of its scores on its training texts (recorded by the trainer), so members of different
    scales weigh alike. Weights are loaded on the first call and are not pickled.

    Range:
        The real line (a Bradley-Terry reward has no fixed scale; only differences are meaningful).

    Arguments:
        path: one reward-model directory (give ``path`` or ``paths``).
        paths: several reward-model directories (an ensemble).
        aggregate: ``"mean"``, ``"min"`` or ``"mean_minus_std"`` (default ``"mean"``; one model: its score).
        lam: the weight of the standard deviation in ``"mean_minus_std"`` (default 1.0).
        normalize: standardise each member by its recorded training-score mean and std (default False).
        include_prompt: score ``prompt + completion`` rather than the completion alone (default True).
        batch_size: texts per forward pass (default 32).
        max_length: maximum tokens per text (default 512).
        device: torch device (default ``"cpu"``).
        trust_remote_code: let transformers run Python shipped in a directory (default False: a directory whose
            config asks for it is refused when the plugin is made, without asking).

    A damaged directory (unreadable ``config.json``, ``textenv_reward_model.json`` or token-score table) raises a
    ``ValueError`` naming the file.
    """

    def __init__(
        self,
        path: str | None = None,
        paths: Sequence[str] | None = None,
        aggregate: str = "mean",
        lam: float = 1.0,
        normalize: bool = False,
        include_prompt: bool = True,
        batch_size: int = 32,
        max_length: int = 512,
        device: str = "cpu",
        trust_remote_code: bool = False,
    ) -> None:
        self.trust_remote_code = check_bool("trust_remote_code", trust_remote_code)
        if (path is None) == (paths is None):
            raise ValueError("reward_model reward: give exactly one of path (one directory) or paths (an ensemble)")
        if paths is not None and (isinstance(paths, (str, bytes)) or not list(paths)):
            raise ValueError(f"reward_model reward: paths={paths!r}; expected a non-empty list of directories")
        members = [path] if path is not None else list(paths or [])
        self.paths = [self._check_dir(p) for p in members]
        self.aggregate = check_choice("aggregate", aggregate, AGGREGATES)
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
            raise ValueError(f"lam={lam!r}; expected a finite number >= 0")
        self.lam = float(lam)
        if not isinstance(normalize, bool) or not isinstance(include_prompt, bool):
            raise TypeError(f"normalize={normalize!r}, include_prompt={include_prompt!r}; expected True or False")
        self.normalize = normalize
        self.include_prompt = include_prompt
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.max_length = check_int("max_length", max_length, 1)
        self.device = str(device)
        self.stats = [self._score_stats(p) for p in self.paths] if normalize else None
        self._members: list[tuple[Any, Any, str, Any]] | None = None

    def _check_dir(self, path: Any) -> str:
        directory = check_model_path(path, "reward_model reward")
        config = Path(directory) / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"reward_model reward: {directory!r} is not a model directory (no config.json)")
        from transformers import AutoConfig

        from textenv.models import from_pretrained

        read_metadata(directory)  # a damaged metadata file is named now, not at the first call
        num_labels = from_pretrained(AutoConfig, directory, trust_remote_code=self.trust_remote_code).num_labels
        if num_labels != 1:
            raise ValueError(
                f"reward_model reward: {directory!r} has num_labels={num_labels}; expected a reward model with one "
                "output (for a multi-label classifier use the 'classifier' reward)"
            )
        return directory

    @staticmethod
    def _score_stats(path: str) -> tuple[float, float]:
        stats = read_metadata(path).get("score_stats")
        if not stats:
            raise ValueError(
                f"reward_model reward: normalize=True needs the score statistics in {path}/{METADATA_FILE}, "
                "written by textenv train-rm"
            )
        return float(stats["mean"]), float(stats["std"])  # read_metadata checked: finite, std > 0

    def _load(self) -> list[tuple[Any, Any, str, Any]]:
        if self._members is None:
            from transformers import AutoTokenizer

            from textenv.models import from_pretrained

            members = []
            for path in self.paths:
                metadata, table = read_metadata(path), None
                tokenizer = from_pretrained(AutoTokenizer, path, trust_remote_code=self.trust_remote_code)
                model = load_classifier(path, metadata, trust_remote_code=self.trust_remote_code)
                if tokenizer.pad_token_id is None:
                    tokenizer.pad_token = tokenizer.eos_token
                if model.config.pad_token_id is None:
                    model.config.pad_token_id = tokenizer.pad_token_id
                if metadata.get("token_scores"):
                    table = load_token_scores(path, model.get_input_embeddings().num_embeddings).to(self.device)
                members.append((tokenizer, model.to(self.device).eval(), self._pooling(path, metadata), table))
            self._members = members
        return self._members

    @staticmethod
    def _pooling(path: str, metadata: dict[str, Any]) -> str:
        """How the directory's model was trained to read its score (``pooling`` in its metadata; ``last`` for a
        directory without one, as transformers' sequence classifiers read it)."""
        pooling = metadata.get("pooling", "last")
        return "last" if pooling == "last_token" else pooling  # read_metadata checked it

    def member_scores(self, prompts: Sequence[str], completions: Sequence[str]) -> Any:
        """Every member's score of every text: a float64 array ``(members, texts)``."""
        import numpy as np
        import torch

        rows = []
        for tokenizer, model, pooling, table in self._load():
            encoded = [
                encode_prompt_completion(tokenizer, p if self.include_prompt else "", c, self.max_length)
                for p, c in zip(prompts, completions)
            ]
            scores: list[float] = []
            with torch.no_grad():
                for start in range(0, len(encoded), self.batch_size):
                    chunk = encoded[start : start + self.batch_size]
                    ids, mask, completion_mask = pad_prompt_completions(chunk, tokenizer.pad_token_id)
                    ids, mask = ids.to(self.device), mask.to(self.device)
                    if pooling == "last":
                        values = model(input_ids=ids, attention_mask=mask).logits[:, 0]
                    else:
                        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
                        pooled = pool_hidden(hidden, mask, completion_mask.to(self.device), pooling)
                        values = model.score(pooled)[:, 0]
                    if table is not None:
                        values = values + token_score_sum(table, ids, completion_mask.to(self.device))
                    scores.extend(values.double().cpu().tolist())
            rows.append(scores)
        values = np.asarray(rows, dtype=np.float64).reshape(len(self.paths), len(completions))
        if self.stats is not None:
            means, stds = np.asarray(self.stats).T
            values = (values - means[:, None]) / stds[:, None]
        return values

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
        values = self.member_scores(prompts, completions)
        if self.aggregate == "min":
            combined = values.min(axis=0)
        elif self.aggregate == "mean_minus_std":
            combined = values.mean(axis=0) - self.lam * values.std(axis=0)
        else:
            combined = values.mean(axis=0)
        return combined.tolist()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_members": None}

    def __repr__(self) -> str:
        return f"RewardModelReward(paths={self.paths!r}, aggregate={self.aggregate!r}, lam={self.lam})"
