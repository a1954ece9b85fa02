"""``classifier``: the score of a sequence-classification model (e.g. a trained RLHF reward model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.builtin._models import check_model_path
from rewards.builtin._util import check_bool, check_choice, check_int, joined
from rewards.builtin.reward_model import read_metadata
from rewards.registry import register

OUTPUTS = ("logit", "probability")


def _refuse_other_readings(model: str) -> None:
    """A reward model that ``textenv train-rm`` trained to be read otherwise than at the last token (mean pooling,
    a token-score table) would be scored wrongly here: refuse it, naming the plugin that reads it."""
    metadata = read_metadata(model)  # {} for a hub id or any directory without textenv's metadata
    pooling, table = metadata.get("pooling", "last"), bool(metadata.get("token_scores"))
    if pooling not in ("last", "last_token") or table:
        raise ValueError(
            f"classifier reward: {model} is a textenv reward model trained with pooling={pooling!r}, "
            f"token_scores={table}; this plugin reads only the score head at the last token, so use the "
            "'reward_model' reward, which reads it as trained"
        )


@register("classifier")
class ClassifierReward:
    """The logit or probability of one label under an ``AutoModelForSequenceClassification``.

    This is how a trained reward model plugs in: any local directory or (cached) hub id that transformers
    loads as a sequence classifier. Texts are scored in batches of ``batch_size`` under ``torch.no_grad()``
    with the model in eval mode, right-padded with an attention mask; texts longer than ``max_length`` tokens
    are truncated from the left, so the end of the completion is always seen. The text is
    ``prompt + completion`` (concatenated as is) when ``include_prompt``, else the completion. The config is
    read when the plugin is made (so a bad path or label fails early); the weights are loaded on the first
    call and are not pickled.

    Range:
        ``output="logit"``: the real line. ``output="probability"``: [0, 1] (softmax over the labels; the
        sigmoid for single-logit and multi-label models).

    Arguments:
        model: model directory or hub id (required).
        label: the label to score, an index or a name from ``config.label2id`` (default 1). Single-logit
            models always use logit 0.
        output: ``"logit"`` or ``"probability"`` (default ``"logit"``).
        include_prompt: score ``prompt + completion`` rather than the completion alone (default True).
        batch_size: texts per forward pass (default 32).
        max_length: maximum tokens per text (default 512).
        device: torch device (default ``"cpu"``).
        trust_remote_code: passed to ``from_pretrained`` (default False).
    """

    def __init__(
        self,
        model: str,
        label: int | str = 1,
        output: str = "logit",
        include_prompt: bool = True,
        batch_size: int = 32,
        max_length: int = 512,
        device: str = "cpu",
        trust_remote_code: bool = False,
    ) -> None:
        self.model = check_model_path(model, "classifier reward")
        _refuse_other_readings(self.model)
        self.output = check_choice("output", output, OUTPUTS)
        self.include_prompt = check_bool("include_prompt", include_prompt)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.max_length = check_int("max_length", max_length, 1)
        self.device = str(device)
        self.trust_remote_code = check_bool("trust_remote_code", trust_remote_code)
        self.label = label
        config = self._load_config()
        self.num_labels = int(config.num_labels)
        self.sigmoid = self.num_labels == 1 or getattr(config, "problem_type", None) == "multi_label_classification"
        self.label_index = self._resolve_label(label, config)
        self._model: Any = None
        self._tokenizer: Any = None

    # -- loading ------------------------------------------------------------------------------------------
    def _load_config(self) -> Any:
        from transformers import AutoConfig

        from textenv.models import from_pretrained

        try:
            return from_pretrained(AutoConfig, self.model, trust_remote_code=self.trust_remote_code)
        except OSError as err:
            raise FileNotFoundError(
                f"classifier reward: could not load model {self.model!r}: it is neither an existing model "
                f"directory nor a hub id in the local cache ({err})"
            ) from err

    def _resolve_label(self, label: int | str, config: Any) -> int:
        if self.num_labels == 1:
            return 0
        if isinstance(label, str):
            label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
            if label in label2id:
                return label2id[label]
            folded = {k.casefold(): v for k, v in label2id.items()}
            if label.casefold() in folded:
                return folded[label.casefold()]
            raise ValueError(
                f"classifier reward: label {label!r} is not a label of {self.model!r}; "
                f"its labels are {sorted(label2id, key=label2id.get)}"
            )
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < self.num_labels:
            raise ValueError(
                f"classifier reward: label={label!r}; expected a label name or an index in [0, {self.num_labels})"
            )
        return int(label)

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            from textenv.models import from_pretrained

            tokenizer = from_pretrained(AutoTokenizer, self.model, trust_remote_code=self.trust_remote_code)
            tokenizer.padding_side = "right"
            tokenizer.truncation_side = "left"
            if tokenizer.pad_token_id is None:
                fallback = tokenizer.eos_token or tokenizer.unk_token
                if fallback is None:
                    raise ValueError(f"classifier reward: the tokenizer of {self.model!r} has no pad, eos or unk token")
                tokenizer.pad_token = fallback
            model = from_pretrained(
                AutoModelForSequenceClassification, self.model, trust_remote_code=self.trust_remote_code
            )
            if model.config.pad_token_id is None:
                model.config.pad_token_id = tokenizer.pad_token_id
            model.to(self.device).eval()
            self._tokenizer, self._model = tokenizer, model
        return self._tokenizer, self._model

    # -- scoring ------------------------------------------------------------------------------------------
    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
        import torch

        tokenizer, model = self._load()
        texts = joined(prompts, completions, self.include_prompt)
        filler = next(
            (t for t in (tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id) if t is not None), 0
        )
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                encoded = tokenizer(chunk, truncation=True, max_length=self.max_length)
                rows = [dict(zip(encoded.keys(), values)) for values in zip(*encoded.values())]
                for row in rows:  # a text with no tokens at all gets one filler token to be classified
                    if not row["input_ids"]:
                        row.update({k: [0] for k in row})
                        row["input_ids"], row["attention_mask"] = [filler], [1]
                batch = tokenizer.pad(rows, padding=True, return_tensors="pt").to(self.device)
                logits = model(**batch).logits.float()
                if self.output == "probability":
                    probs = torch.sigmoid(logits) if self.sigmoid else torch.softmax(logits, dim=-1)
                    values = probs[:, self.label_index]
                else:
                    values = logits[:, self.label_index]
                scores.extend(values.double().cpu().tolist())
        return scores

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    def __repr__(self) -> str:
        return (
            f"ClassifierReward(model={self.model!r}, label={self.label!r}, output={self.output!r}, "
            f"include_prompt={self.include_prompt})"
        )


