"""``fluency``: log-probability of the completion under a reference causal LM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.builtin._util import check_bool, check_int
from rewards.registry import register


@register("fluency")
class FluencyReward:
    """Log-probability of the completion given the prompt under a reference causal LM.

    The prompt and the completion are tokenized separately (the prompt with the tokenizer's special tokens,
    the completion without) and concatenated; the batch is right-padded with an attention mask and scored in
    one forward pass, and only the completion tokens' log-probabilities are summed (``normalize=False``) or
    averaged (``normalize=True``, the mean log-probability per token). An empty prompt is replaced by the
    BOS (or EOS) token as context. Sequences longer than ``max_length`` tokens keep their last ``max_length``
    tokens, and only the completion tokens inside that window are scored. An empty completion scores 0.0.
    The model is loaded on the first call (``textenv.models.load_causal_lm``) and is not pickled.

    Range:
        (-inf, 0].

    Arguments:
        model: a built-in name of ``textenv.models`` (default ``"smollm2-135m-instruct"``; the tiny
            ``"tiny-random-smollm2"`` is for tests), a model directory, or a cached hub id.
        normalize: mean log-probability per completion token (True, default) or the total (False).
        batch_size: sequences per forward pass (default 8).
        max_length: maximum tokens per prompt+completion sequence (default 1024).
        device: torch device (default ``"cpu"``).
        trust_remote_code: passed to transformers (default False).
    """

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        normalize: bool = True,
        batch_size: int = 8,
        max_length: int = 1024,
        device: str = "cpu",
        trust_remote_code: bool = False,
    ) -> None:
        from rewards.builtin._models import check_model_path

        self.model = check_model_path(model, "fluency reward")
        self.normalize = check_bool("normalize", normalize)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.max_length = check_int("max_length", max_length, 2)
        self.device = str(device)
        self.trust_remote_code = check_bool("trust_remote_code", trust_remote_code)
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from textenv.models import load_causal_lm, load_tokenizer

            # the tokenizer is a shared, cached object: read it, never modify it
            tokenizer = load_tokenizer(self.model, trust_remote_code=self.trust_remote_code)
            model = load_causal_lm(self.model, device=self.device, trust_remote_code=self.trust_remote_code)
            model.eval()
            self._tokenizer, self._model = tokenizer, model
        return self._tokenizer, self._model

    def sequences(self, prompts: Sequence[str], completions: Sequence[str]) -> list[tuple[list[int], int]]:
        """Token ids of each prompt+completion and the index of its first scored token (``len(ids)`` if none)."""
        tokenizer, _ = self._load()
        context_token = next((t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id) if t is not None), None)
        out = []
        for prompt, completion in zip(prompts, completions):
            completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"]) if completion else []
            prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
            if not prompt_ids and context_token is not None:
                prompt_ids = [context_token]
            ids = prompt_ids + completion_ids
            first = len(prompt_ids)
            if len(ids) > self.max_length:
                cut = len(ids) - self.max_length
                ids, first = ids[cut:], max(first - cut, 1)
            out.append((ids, max(first, 1) if completion_ids else len(ids)))
        return out

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **info: Any) -> list[float]:
        import torch

        tokenizer, model = self._load()
        pad = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
        sequences = self.sequences(prompts, completions)
        scores: list[float] = [0.0] * len(sequences)
        todo = [i for i, (ids, first) in enumerate(sequences) if first < len(ids)]
        with torch.no_grad():
            for start in range(0, len(todo), self.batch_size):
                rows = todo[start : start + self.batch_size]
                width = max(len(sequences[i][0]) for i in rows)
                input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
                attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    ids = sequences[i][0]
                    input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[r, : len(ids)] = 1
                logits = model(
                    input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device)
                ).logits
                for r, i in enumerate(rows):
                    ids, first = sequences[i]
                    # token t is predicted by the logits at t - 1
                    step_logits = logits[r, first - 1 : len(ids) - 1].float()
                    targets = input_ids[r, first : len(ids)].to(step_logits.device)
                    logprobs = torch.log_softmax(step_logits, dim=-1).gather(-1, targets[:, None])[:, 0]
                    total = logprobs.double().sum()
                    scores[i] = float(total / len(targets) if self.normalize else total)
        return scores

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    def __repr__(self) -> str:
        return f"FluencyReward(model={self.model!r}, normalize={self.normalize})"
