"""Preference data: validation errors naming file/line/field, dropped and skipped records, chat-template rendering,
durable writes, and the round trip with TRL's RewardTrainer in both directions."""

from __future__ import annotations

import json
import os
import warnings

import pytest

from textenv.preferences import (
    PreferenceDataError,
    PreferencePair,
    load_preferences,
    read_preferences,
    write_preferences,
)

GOOD = {"prompt": "The film was", "chosen": " wonderful.", "rejected": " dull."}
USER = [{"role": "user", "content": "Review the film in one line."}]


def write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


BAD_RECORDS = [
    ('{"chosen": "a", "rejected": ', None, "invalid JSON"),
    ([1, 2], None, "expected a JSON object"),
    ({"rejected": "b"}, "chosen", "missing"),
    ({"chosen": "a"}, "rejected", "missing"),
    ({"chosen": "a", "rejected": "   "}, "rejected", "empty text"),
    ({"chosen": "", "rejected": "b"}, "chosen", "empty text"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "prompt", "empty text"),
    ({"chosen": 5, "rejected": "b"}, "chosen", "expected a string or a list of chat messages, got int"),
    ({"chosen": "a", "rejected": "b", "margin": "big"}, "margin", "expected a finite number, got str"),
    ({"chosen": "a", "rejected": "b", "margin": True}, "margin", "expected a finite number, got bool"),
    ('{"chosen": "a", "rejected": "b", "margin": NaN}', "margin", "expected a finite number"),
    ({"chosen": "a", "rejected": "b", "gold_chosen": [1]}, "gold_chosen", "expected a finite number, got list"),
    ({"chosen": [], "rejected": "b"}, "chosen", "empty message list"),
    ({"chosen": [{"role": "assistant"}], "rejected": [{"role": "assistant", "content": "x"}]}, "chosen", "'content'"),
    ({"prompt": USER, "chosen": "a", "rejected": "b"}, "chosen", "mixes strings and chat-message lists"),
]


@pytest.mark.parametrize("bad, field, reason", BAD_RECORDS)
def test_bad_record_error_names_file_line_and_field(tmp_path, bad, field, reason):
    path = write_lines(tmp_path / "data.jsonl", [GOOD, "", bad, GOOD])  # a blank line still counts
    with pytest.raises(PreferenceDataError) as info:
        load_preferences(path)
    err = info.value
    assert (err.path, err.line, err.field) == (path, 3, field)
    assert str(err).startswith(f"{path}:3: ")
    assert reason in str(err)
    if field is not None:
        assert f"field {field!r}" in str(err)


def test_not_utf8_line_is_named(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"chosen": "\xff", "rejected": "b"}\n')
    with pytest.raises(PreferenceDataError, match=r"data.jsonl:2: not UTF-8"):
        load_preferences(path)


def test_chat_messages_need_a_tokenizer(tmp_path):
    path = write_lines(tmp_path / "chat.jsonl", [{"prompt": USER, "chosen": [{"role": "assistant", "content": "x"}],
                                                 "rejected": [{"role": "assistant", "content": "y"}]}])
    with pytest.raises(PreferenceDataError, match=r"chat.jsonl:1: field 'chosen': .*need a tokenizer"):
        load_preferences(path)


def test_missing_file_and_file_without_pairs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_preferences(tmp_path / "nope.jsonl")
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(PreferenceDataError, match="no usable preference pairs"):
        load_preferences(empty)


def test_identical_pairs_are_counted_and_dropped_with_a_warning(tmp_path):
    same = {"prompt": "p", "chosen": " same", "rejected": " same"}
    path = write_lines(tmp_path / "data.jsonl", [GOOD, same, same, {**GOOD, "chosen": " great."}])
    with pytest.warns(UserWarning, match=r"dropped 2 pair\(s\) .* identical"):
        pairs = load_preferences(path)
    assert [p.chosen for p in pairs] == [" wonderful.", " great."]
    assert read_preferences(path).identical == 2


def test_skip_invalid_reports_each_skipped_line(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", [GOOD, {"chosen": "a"}, "{oops", {**GOOD, "margin": "x"}, GOOD])
    with pytest.raises(PreferenceDataError, match=":2: field 'rejected'"):
        load_preferences(path)
    with pytest.warns(UserWarning) as caught:
        pairs = load_preferences(path, skip_invalid=True)
    assert len(pairs) == 2 and [p.source for p in pairs] == [f"{path}:1", f"{path}:5"]
    message = str(caught[0].message)
    assert message.startswith(f"skipped 3 invalid line(s) of {path}")
    for line, what in ((2, "field 'rejected': missing"), (3, "invalid JSON"), (4, "field 'margin'")):
        assert f"{path}:{line}: {what}" in message
    assert [(e.line, e.field) for e in read_preferences(path, skip_invalid=True).skipped] == [
        (2, "rejected"), (3, None), (4, "margin")
    ]


def test_fields_numbers_and_metadata_are_read(tmp_path):
    record = {**GOOD, "margin": 1, "gold_chosen": 0.5, "gold_rejected": -0.25, "gen_round": 3, "note": "x"}
    (pair,) = load_preferences(write_lines(tmp_path / "d.jsonl", [record]))
    metadata = {"gen_round": 3, "note": "x"}
    assert pair == PreferencePair(" wonderful.", " dull.", "The film was", 1.0, 0.5, -0.25, metadata)
    assert isinstance(pair.margin, float)
    no_prompt = {"chosen": "a b", "rejected": "a c", "prompt": None}
    (plain,) = load_preferences(write_lines(tmp_path / "e.jsonl", [no_prompt]))
    assert plain.prompt is None and plain.margin is None


def test_chat_messages_render_like_trl(tmp_path, tokenizer):
    """Explicit-prompt and implicit-prompt conversational records become the strings TRL renders: the prompt with
    the generation prompt, each completion as what the template adds after it."""
    chosen, rejected = [{"role": "assistant", "content": "Loved it."}], [{"role": "assistant", "content": "Meh."}]
    records = [
        {"prompt": USER, "chosen": chosen, "rejected": rejected},
        {"chosen": USER + chosen, "rejected": USER + rejected},
    ]
    explicit, implicit = load_preferences(write_lines(tmp_path / "chat.jsonl", records), tokenizer=tokenizer)

    prompt_text = tokenizer.apply_chat_template(USER, tokenize=False, add_generation_prompt=True)
    assert explicit.prompt == prompt_text and prompt_text.endswith("<|im_start|>assistant\n")
    assert explicit.prompt + explicit.chosen == tokenizer.apply_chat_template(USER + chosen, tokenize=False)
    assert explicit.chosen.startswith("Loved it.") and explicit.rejected.startswith("Meh.")
    assert implicit.prompt is None and implicit.chosen == tokenizer.apply_chat_template(USER + chosen, tokenize=False)

    trl_data = pytest.importorskip("trl.data_utils")
    rendered = trl_data.maybe_apply_chat_template(records[0], tokenizer)
    assert (rendered["prompt"], rendered["chosen"], rendered["rejected"]) == (
        explicit.prompt, explicit.chosen, explicit.rejected
    )
    # a tokenizer given by name is loaded
    (by_name, _) = load_preferences(tmp_path / "chat.jsonl", tokenizer="smollm2-135m-instruct")
    assert by_name == explicit


def test_write_then_load_round_trip_and_refusal(tmp_path):
    pairs = [
        PreferencePair(" good", " bad", "Film:", margin=0.5, gold_chosen=0.9, gold_rejected=0.1, metadata={"k": 1}),
        PreferencePair("whole a", "whole b", margin=0.0),
    ]
    path = tmp_path / "out.jsonl"
    assert write_preferences(path, pairs) == 2
    assert json.loads(path.read_text().splitlines()[0]) == {
        "prompt": "Film:", "chosen": " good", "rejected": " bad", "margin": 0.5, "gold_chosen": 0.9,
        "gold_rejected": 0.1, "k": 1,
    }
    assert load_preferences(path) == pairs
    before = path.read_bytes()
    with pytest.raises(PreferenceDataError, match="field 'chosen': empty text"):
        write_preferences(path, [pairs[0], PreferencePair(" ", "x", margin=1.0)])
    assert path.read_bytes() == before  # the atomic rewrite left the old file whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary left behind
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # an ordinary file, not mkstemp's owner-only one
    with pytest.raises(ValueError, match="1 of 2 pairs have a margin"):
        write_preferences(path, [pairs[0], PreferencePair("a", "b")])  # TRL cannot batch a margin column with holes


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_append_after_a_killed_write_loses_only_the_partial_line(tmp_path):
    path = tmp_path / "out.jsonl"
    write_preferences(path, [PreferencePair("a1", "b1")], append=True)
    write_preferences(path, [PreferencePair("a2", "b2")], append=True)
    with open(path, "a") as f:
        f.write('{"chosen": "a3", "rej')  # a writer killed mid-line
    write_preferences(path, [PreferencePair("a4", "b4")], append=True)
    assert [p.chosen for p in load_preferences(path)] == ["a1", "a2", "a4"]


def test_swapped_moves_gold_scores_with_their_texts():
    pair = PreferencePair("a", "b", "p", gold_chosen=1.0, gold_rejected=0.0)
    assert pair.swapped() == PreferencePair("b", "a", "p", gold_chosen=0.0, gold_rejected=1.0)


# -- TRL round trip -----------------------------------------------------------------------------------------
def trl_reward_train(path, tokenizer, tmp_path, steps=2):
    """Train a tiny random-init LlamaForSequenceClassification with TRL's RewardTrainer on ``path`` as TRL reads a
    JSONL file (datasets' json loader, nothing converted)."""
    pytest.importorskip("trl")
    import torch
    from datasets import load_dataset
    from transformers import LlamaConfig, LlamaForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from textenv.models import TINY_CONFIG

    dataset = load_dataset("json", data_files=str(path), split="train")
    config = LlamaConfig(vocab_size=len(tokenizer), num_labels=1, pad_token_id=tokenizer.pad_token_id, **TINY_CONFIG)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    args = RewardConfig(
        output_dir=str(tmp_path / "trl"), max_steps=steps, per_device_train_batch_size=2, report_to=[],
        save_strategy="no", logging_steps=1, use_cpu=True, disable_tqdm=True, bf16=False,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    return trainer


def test_file_written_by_textenv_trains_in_trl_reward_trainer(tmp_path, tokenizer):
    pairs = [
        PreferencePair(f" good {i}", f" bad {i}", "The film", margin=0.1 * i, gold_chosen=0.8, gold_rejected=0.2,
                       metadata={"gen_round": 0, "gen_index": i})
        for i in range(4)
    ]
    path = tmp_path / "pairs.jsonl"
    write_preferences(path, pairs)
    trainer = trl_reward_train(path, tokenizer, tmp_path)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(0 < loss < 10 for loss in losses)


@pytest.mark.parametrize("kind", ["plain", "conversational"])
def test_trl_format_file_loads_here_and_trains_in_trl(tmp_path, tokenizer, kind):
    """TRL's own formats (explicit prompt and implicit prompt) load here, and the same file trains in TRL."""
    if kind == "plain":
        records = [{"prompt": f"Film {i}:", "chosen": " great", "rejected": " awful"} for i in range(4)]
    else:
        records = [
            {"prompt": [{"role": "user", "content": f"Film {i}?"}],
             "chosen": [{"role": "assistant", "content": "Great."}],
             "rejected": [{"role": "assistant", "content": "Awful."}]}
            for i in range(4)
        ]
    path = write_lines(tmp_path / "trl.jsonl", records)
    pairs = load_preferences(path, tokenizer=tokenizer)
    assert len(pairs) == 4 and pairs[2].prompt.startswith("Film 2:" if kind == "plain" else "<|im_start|>system")
    if kind == "conversational":  # the text a reward model sees: prompt + completion, as TRL tokenizes it
        full = tokenizer.apply_chat_template(records[2]["prompt"] + records[2]["chosen"], tokenize=False)
        assert pairs[2].prompt + pairs[2].chosen == full
    assert trl_reward_train(path, tokenizer, tmp_path).state.global_step == 2
    # and textenv writes what it loaded back in TRL's (plain) format, which trains too
    write_preferences(tmp_path / "again.jsonl", pairs)
    assert load_preferences(tmp_path / "again.jsonl") == pairs
