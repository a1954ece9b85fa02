"""The parts of a text-generation task shared by the single and the vector environment.

:class:`TextTask` holds the tokenizer, the prompts (tokenised lazily, once each), the reward model and the
sizes, and builds the observation and action spaces. The environments only keep episode state.

Observation layout (both environments): a sequence of ``max_prompt_tokens + max_new_tokens`` token ids.
The prompt is **left-padded** into the first ``max_prompt_tokens`` slots, so every prompt ends at slot
``max_prompt_tokens - 1``; completion token ``t`` is written at slot ``max_prompt_tokens + t`` and the rest
is right padding. Padding slots hold ``pad_token_id`` and have ``attention_mask`` 0. This is the layout a
causal LM decodes a batch in (left-padded prompts, completions in lockstep), so LM agents can feed the
observation to the model unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

import rewards
from rewards.base import check_timeout
from textenv.models import DEFAULT_MODEL, load_tokenizer
from textenv.prompts import Prompt, PromptSource, load_prompts
from textenv.user_warnings import warn_caller

TRUNCATION_MODES = ("left", "error")

# Size limits, checked before anything is allocated. One sequence holds at most MAX_TOKENS prompt slots and
# MAX_TOKENS completion slots (a million tokens is beyond any causal LM's context); the vector env's buffer holds
# at most MAX_BUFFER_TOKENS slots in all (num_envs * sequence length; 16 bytes each for ids and mask, so 4 GiB,
# copied into every observation); the action space has at most MAX_VOCAB_SIZE tokens.
MAX_TOKENS = 1_000_000
MAX_BUFFER_TOKENS = 2**28
MAX_VOCAB_SIZE = 2**24


class TextTask:
    """Tokenizer + prompts + reward + sizes of one text-generation task (see the module docstring).

    Args:
        tokenizer: a built-in model name, a local directory or hub id, or a tokenizer object.
        prompts: a prompt source (:func:`textenv.prompts.load_prompts`).
        reward: a reward spec (:func:`rewards.make`).
        reward_kwargs: keyword arguments for the reward plugin.
        max_new_tokens: completion budget; reaching it truncates the episode.
        max_prompt_tokens: prompt slots in the observation.
        prompt_truncation: ``"left"`` keeps the last ``max_prompt_tokens`` tokens of a longer prompt and
            warns; ``"error"`` refuses it.
        chat_template: wrap each prompt as a user turn with the tokenizer's chat template.
        system_prompt: optional system message when ``chat_template`` is on.
        eos_token_ids: tokens that end an episode (default: the tokenizer's EOS).
        allowed_token_ids: if given, the only tokens :meth:`action_mask` allows.
        vocab_size: size of the action space (default ``len(tokenizer)``; set it to a model's embedding
            size when that is larger).
        trust_remote_code: passed to transformers when the tokenizer is loaded by name.
        reward_timeout: seconds one reward-plugin call may take before it fails with
            ``rewards.RewardPluginError`` (``None``, the default: no limit). See
            :meth:`rewards.RewardModel.with_timeout`.

    Raises:
        ValueError: a size is not a positive int or above its limit (:data:`MAX_TOKENS`, :data:`MAX_VOCAB_SIZE`).
    """

    def __init__(
        self,
        tokenizer: Any = DEFAULT_MODEL,
        prompts: PromptSource = None,
        reward: Any = "sentiment",
        reward_kwargs: dict[str, Any] | None = None,
        max_new_tokens: int = 24,
        max_prompt_tokens: int = 32,
        prompt_truncation: str = "left",
        chat_template: bool = False,
        system_prompt: str | None = None,
        eos_token_ids: Sequence[int] | None = None,
        allowed_token_ids: Iterable[int] | None = None,
        vocab_size: int | None = None,
        trust_remote_code: bool = False,
        reward_timeout: float | None = None,
    ) -> None:
        check_size("max_new_tokens", max_new_tokens, MAX_TOKENS)
        check_size("max_prompt_tokens", max_prompt_tokens, MAX_TOKENS)
        if vocab_size is not None:
            check_size("vocab_size", vocab_size, MAX_VOCAB_SIZE)
        check_timeout(reward_timeout, "reward_timeout")
        if prompt_truncation not in TRUNCATION_MODES:
            raise ValueError(f"prompt_truncation={prompt_truncation!r}; expected one of {TRUNCATION_MODES}")
        self.tokenizer_name = tokenizer if isinstance(tokenizer, str) else None
        self.trust_remote_code = trust_remote_code
        self.tokenizer = self._load_tokenizer() if isinstance(tokenizer, str) else tokenizer
        self.prompts: Sequence[Prompt] = load_prompts(prompts)
        self.reward_model = rewards.make(reward, **(reward_kwargs or {}))
        if reward_timeout is not None:
            self.reward_model = self.reward_model.with_timeout(reward_timeout)
        self.max_new_tokens = int(max_new_tokens)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.seq_len = self.max_prompt_tokens + self.max_new_tokens
        self.prompt_truncation = prompt_truncation
        self.chat_template = chat_template
        self.system_prompt = system_prompt

        self.vocab_size = int(vocab_size) if vocab_size is not None else len(self.tokenizer)
        check_size("vocab_size", self.vocab_size, MAX_VOCAB_SIZE)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else (self.tokenizer.eos_token_id or 0))
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"the tokenizer's pad id {self.pad_token_id} is outside vocab_size={self.vocab_size}; "
                "expected vocab_size above every token id the tokenizer uses"
            )
        if eos_token_ids is None:
            eos = self.tokenizer.eos_token_id
            eos_token_ids = [] if eos is None else [eos]
        self.eos_token_ids = tuple(self._check_token_ids("eos_token_ids", eos_token_ids))
        self.is_eos = np.zeros(self.vocab_size, dtype=bool)
        self.is_eos[list(self.eos_token_ids)] = True
        self.eos_token_set = frozenset(self.eos_token_ids)
        self.allowed = np.ones(self.vocab_size, dtype=bool)
        if allowed_token_ids is not None:
            self.allowed[:] = False
            self.allowed[self._check_token_ids("allowed_token_ids", allowed_token_ids)] = True
        self.all_allowed = bool(self.allowed.all())  # lets check_action(s) skip the mask lookup
        self._encoded: dict[int, np.ndarray] = {}
        self._fast_decode = _plain_fast_tokenizer(self.tokenizer)
        self._clean_up = _decode_cleans_up(self.tokenizer)

    # -- spaces -------------------------------------------------------------------------------------------
    def observation_space(self) -> spaces.Dict:
        """``Dict(input_ids=Box(0, vocab-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))``."""
        return spaces.Dict(
            {
                "input_ids": spaces.Box(0, self.vocab_size - 1, shape=(self.seq_len,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, shape=(self.seq_len,), dtype=np.int64),
            }
        )

    def action_space(self) -> spaces.Discrete:
        return spaces.Discrete(self.vocab_size)

    # -- prompts ------------------------------------------------------------------------------------------
    def encode_prompt(self, index: int) -> np.ndarray:
        """Token ids of prompt ``index`` (chat template applied, truncated per ``prompt_truncation``)."""
        ids = self._encoded.get(index)
        if ids is None:
            ids = self._encode(self.prompts[index].text, f"prompt #{index}")
            self._encoded[index] = ids
        return ids

    def encode_text(self, text: str) -> np.ndarray:
        """Token ids of a prompt given as text (for ``reset(options={"prompt": ...})``)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"options['prompt'] must be a non-empty str, got {text!r}")
        return self._encode(text, "options['prompt']")

    def _encode(self, text: str, where: str) -> np.ndarray:
        if self.chat_template:
            messages = [{"role": "user", "content": text}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        else:
            ids = self.tokenizer(text)["input_ids"]
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            raise ValueError(f"{where} ({text!r}) encodes to no tokens")
        if ids.max() >= self.vocab_size:
            raise ValueError(
                f"{where} ({text[:60]!r}) holds token id {ids.max()}, outside vocab_size={self.vocab_size}; "
                "expected vocab_size above every token id the tokenizer uses"
            )
        if ids.size > self.max_prompt_tokens:
            if self.prompt_truncation == "error":
                raise ValueError(
                    f"{where} is {ids.size} tokens long, more than max_prompt_tokens={self.max_prompt_tokens}: "
                    f"{text[:60]!r}... Raise max_prompt_tokens or pass prompt_truncation='left'."
                )
            warn_caller(
                f"{where} is {ids.size} tokens long; keeping its last max_prompt_tokens={self.max_prompt_tokens}"
            )
            ids = ids[-self.max_prompt_tokens :]
        return ids

    def choose_prompt(
        self, rng: np.random.Generator, prompt: str | None = None, prompt_index: Any = None, reference: Any = None
    ) -> tuple[np.ndarray, int, str, str | None]:
        """Pick an episode's prompt: the given text, the given index, or one drawn uniformly with ``rng``.

        Returns ``(token_ids, prompt_index, prompt_text, reference)``; ``prompt_index`` is -1 for a prompt
        given as text.
        """
        if prompt is not None:
            return self.encode_text(prompt), -1, prompt, reference
        if prompt_index is None:
            prompt_index = int(rng.integers(len(self.prompts)))
        if (
            isinstance(prompt_index, (bool, np.bool_))
            or not isinstance(prompt_index, (int, np.integer))
            or not 0 <= prompt_index < len(self.prompts)
        ):
            raise ValueError(f"prompt_index={prompt_index!r}; expected an int in [0, {len(self.prompts)})")
        chosen = self.prompts[int(prompt_index)]
        return self.encode_prompt(int(prompt_index)), int(prompt_index), chosen.text, chosen.reference

    def write_prompt(self, input_ids: np.ndarray, attention_mask: np.ndarray, prompt_ids: np.ndarray) -> None:
        """Fill one observation row: left-padded prompt, empty completion slots."""
        start = self.max_prompt_tokens - prompt_ids.size
        input_ids.fill(self.pad_token_id)
        attention_mask.fill(0)
        input_ids[start : self.max_prompt_tokens] = prompt_ids
        attention_mask[start : self.max_prompt_tokens] = 1

    def final_info(
        self, prompt: str, completion: str, completion_ids: list[int], reference: str | None, result: Any, row: int
    ) -> dict[str, Any]:
        """The ``info`` of an episode's last step (row ``row`` of a batched reward result)."""
        return {
            "prompt": prompt,
            "completion": completion,
            "completion_ids": completion_ids,
            "reward_components": {name: float(values[row]) for name, values in result.components.items()},
            "reference": reference,
        }

    # -- actions and rewards ------------------------------------------------------------------------------
    def check_action(self, action: Any) -> int:
        """Return ``action`` as a token id, or raise a ``ValueError``/``TypeError`` saying what was expected."""
        kind = type(action)
        if kind is int or kind is np.int64:  # fast path: an in-range, allowed plain int
            if 0 <= action < self.vocab_size and (self.all_allowed or self.allowed[action]):
                return int(action)
        if isinstance(action, np.ndarray):
            if action.size != 1:
                raise ValueError(
                    f"action must be one token id (an int, or a 0-d or 1-element integer array), got an array of "
                    f"shape {action.shape}: {action!r}"
                )
            action = action.reshape(())
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer, np.ndarray)):
            raise TypeError(
                f"action must be an integer token id in [0, {self.vocab_size}), got {type(action).__name__}: {action!r}"
            )
        if isinstance(action, np.ndarray) and not np.issubdtype(action.dtype, np.integer):
            raise TypeError(f"action must be an integer token id in [0, {self.vocab_size}), got {action!r}")
        token = int(action)
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"action {token} is out of range; expected a token id in [0, {self.vocab_size})")
        if not self.allowed[token]:
            raise ValueError(f"action {token} is masked out by allowed_token_ids (see action_masks())")
        return token

    def check_actions(self, actions: Any, num_envs: int) -> np.ndarray:
        """Vector form of :meth:`check_action`: ``actions`` must be ``num_envs`` integer token ids."""
        array = actions if type(actions) is np.ndarray else np.asarray(actions)
        if array.shape != (num_envs,) or array.dtype.kind not in "iu":  # "b" (bool), "f", "U", "O" refused
            raise TypeError(
                f"actions must be {num_envs} integer token ids (shape ({num_envs},)), got dtype {array.dtype} "
                f"shape {array.shape}: {actions!r}"
            )
        array = array.astype(np.int64, copy=False)
        # one comparison finds negatives too: as uint64 they are huge
        if (array.view(np.uint64) >= self.vocab_size).any():
            bad = np.flatnonzero((array < 0) | (array >= self.vocab_size))
            raise ValueError(
                f"actions[{bad[0]}] = {array[bad[0]]} is out of range; expected token ids in [0, {self.vocab_size})"
            )
        if not self.all_allowed and not self.allowed[array].all():
            masked = np.flatnonzero(~self.allowed[array])
            raise ValueError(f"actions[{masked[0]}] = {array[masked[0]]} is masked out by allowed_token_ids")
        return array

    def decode(self, token_ids: Sequence[int] | np.ndarray) -> str:
        """Completion text: the tokens other than EOS, special tokens skipped.

        Equal to ``tokenizer.decode(ids, skip_special_tokens=True)``; for a plain ``PreTrainedTokenizerFast``
        it calls the Rust backend directly (and applies the tokenizer's clean-up the same way), skipping
        transformers' per-call conversions, which cost more than the decoding itself.
        """
        if isinstance(token_ids, np.ndarray):
            return self.decode_ids(token_ids.tolist())
        return self.decode_ids([int(t) for t in token_ids])

    def decode_ids(self, ids: list[int]) -> str:
        """:meth:`decode` for a list of Python ints (what ``ndarray.tolist()`` gives), used as given."""
        eos = self.eos_token_set
        if not eos.isdisjoint(ids):
            ids = [t for t in ids if t not in eos]
        tokenizer = self.tokenizer
        if not self._fast_decode:
            return tokenizer.decode(ids, skip_special_tokens=True)
        text = tokenizer._tokenizer.decode(ids, skip_special_tokens=True)
        return tokenizer.clean_up_tokenization(text) if self._clean_up else text

    def decode_batch(self, batch: list[list[int]]) -> list[str]:
        """:meth:`decode_ids` for many completions at once (one call into the Rust backend when possible)."""
        if not self._fast_decode:
            return [self.decode_ids(ids) for ids in batch]
        eos = self.eos_token_set
        batch = [ids if eos.isdisjoint(ids) else [t for t in ids if t not in eos] for ids in batch]
        tokenizer = self.tokenizer
        texts = tokenizer._tokenizer.decode_batch(batch, skip_special_tokens=True)
        if self._clean_up:
            texts = [tokenizer.clean_up_tokenization(text) for text in texts]
        return texts

    def score(
        self, prompts: list[str], completions: list[str], completion_ids: list[list[int]], references: list[Any]
    ) -> rewards.RewardResult:
        """One batched reward-plugin call for finished episodes."""
        return self.reward_model.score(
            prompts, completions, completion_ids=completion_ids, references=references
        )

    # -- helpers ------------------------------------------------------------------------------------------
    def _load_tokenizer(self) -> Any:
        return load_tokenizer(self.tokenizer_name, trust_remote_code=self.trust_remote_code)

    def _check_token_ids(self, name: str, ids: Iterable[int]) -> list[int]:
        checked = []
        for token in ids:
            if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < self.vocab_size:
                raise ValueError(f"{name} holds {token!r}; expected token ids in [0, {self.vocab_size})")
            checked.append(int(token))
        return checked

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.tokenizer_name is not None:  # reload by name in the new process (cached there)
            state["tokenizer"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.tokenizer is None:
            self.tokenizer = self._load_tokenizer()
        self._fast_decode = _plain_fast_tokenizer(self.tokenizer)
        self._clean_up = _decode_cleans_up(self.tokenizer)


def _plain_fast_tokenizer(tokenizer: Any) -> bool:
    """Whether ``tokenizer.decode`` is transformers' own fast-tokenizer decode (backend + clean-up), unchanged
    by a subclass, so :meth:`TextTask.decode` may call the backend itself."""
    if "transformers" not in sys.modules:  # not a transformers tokenizer (and no need to import it)
        return False
    from transformers import PreTrainedTokenizerFast
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    kind = type(tokenizer)
    return (
        isinstance(tokenizer, PreTrainedTokenizerFast)
        and kind.decode is PreTrainedTokenizerBase.decode
        and kind._decode is PreTrainedTokenizerFast._decode
        and hasattr(tokenizer, "_tokenizer")
    )


def _decode_cleans_up(tokenizer: Any) -> bool:
    """Whether the fast-tokenizer decode applies ``clean_up_tokenization`` (``" ."`` -> ``"."``) by default.

    transformers 5 skips the clean-up for BPE models (it would delete real spaces) unless the tokenizer sets
    ``clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output``; transformers 4 has no such
    attribute and applies it whenever ``clean_up_tokenization_spaces`` is set.
    """
    if not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return False
    force = getattr(tokenizer, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", None)
    if force is None or force:
        return True
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is None or type(backend.model).__name__ != "BPE"


def check_size(name: str, value: Any, limit: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int in ``[1, limit]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if value > limit:
        raise ValueError(f"{name}={value} is above the limit of {limit:,}")
