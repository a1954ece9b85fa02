"""The tokenizers textenv loads behave the same under transformers 4.56+ and 5: padding, decoding, chat prompts."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from textenv import models
from textenv.task import TextTask

SPACED = "Hello , world . I do n't know ! it 's fine"


def make_task(tokenizer, **kwargs) -> TextTask:
    return TextTask(tokenizer, prompts=["Say hi"], reward="length", max_new_tokens=4, max_prompt_tokens=64, **kwargs)


@pytest.mark.parametrize("name", [models.DEFAULT_MODEL, "moss-words"])
def test_shipped_and_converted_tokenizers_pad_left_and_skip_the_clean_up(name):
    tokenizer = models.load_tokenizer(name)
    assert tokenizer.padding_side == "left" and tokenizer.clean_up_tokenization_spaces is False
    ids = tokenizer("red blue")["input_ids"]
    assert tokenizer.pad([{"input_ids": ids[:1]}, {"input_ids": ids}])["input_ids"][0] == [
        tokenizer.pad_token_id, ids[0]
    ]


def word_level_tokenizer() -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer (not BPE) whose decode joins words with spaces, so the clean-up has work to do."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {word: i for i, word in enumerate(["<unk>", "<eos>", *SPACED.split()])}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", eos_token="<eos>", clean_up_tokenization_spaces=True
    )


@pytest.mark.parametrize("kind", ["smollm2-bpe", "word-level"])
def test_task_decode_equals_tokenizer_decode_with_clean_up_on(kind):
    """With ``clean_up_tokenization_spaces=True`` TextTask's direct backend decode cleans up exactly when the
    tokenizer's own decode does (transformers 5 skips the clean-up for BPE models; 4.x applies it to all)."""
    if kind == "smollm2-bpe":
        path = models.resolve_model_path(models.DEFAULT_MODEL)
        tokenizer = AutoTokenizer.from_pretrained(path, clean_up_tokenization_spaces=True)
    else:
        tokenizer = word_level_tokenizer()
    task = make_task(tokenizer)
    assert task._fast_decode
    ids = tokenizer(SPACED, add_special_tokens=False)["input_ids"]
    assert tokenizer.backend_tokenizer.decode(ids) == SPACED  # the clean-up, if applied, changes the text
    expected = tokenizer.decode(ids, skip_special_tokens=True)
    assert task.decode(ids) == expected == task.decode_batch([ids, ids])[1]
    if kind == "word-level":
        assert expected == "Hello, world. I don't know! it's fine"


def test_chat_template_prompt_is_a_list_of_token_ids():
    tokenizer = models.load_tokenizer(models.DEFAULT_MODEL)
    ids = make_task(tokenizer, chat_template=True).encode_prompt(0)
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hi"}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert ids.dtype == np.int64 and ids.tolist() == list(expected)
    assert tokenizer.decode(ids.tolist()).endswith("<|im_start|>assistant\n")
