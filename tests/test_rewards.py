"""Reward plugins and the registry: built-ins on real text, real tiny models, composites, errors, pickling."""

from __future__ import annotations

import math
import pickle
import threading
import time

import numpy as np
import pytest

import rewards
from rewards import RewardModel, RewardPluginError, RewardResult, UnknownRewardError

POSITIVE = "This is a wonderful, excellent day and I love it!"
NEGATIVE = "This is a terrible, awful mess and I hate it."
NEUTRAL = "The train leaves the station at seven."


def score(spec, completions, prompts=None, **kwargs):
    model = rewards.make(spec, **kwargs) if not isinstance(spec, RewardModel) else spec
    prompts = prompts if prompts is not None else [""] * len(completions)
    return model(prompts, completions)


# -- plugins used by the tests ------------------------------------------------------------------------------
def exclaim_count(prompts, completions, **info):
    return [text.count("!") for text in completions]


def weighted_exclaims(prompts, completions, weight=1.0, **info):
    return [weight * text.count("!") for text in completions]


class ScaledLength:
    """Characters times ``factor``."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def __call__(self, prompts, completions, **info):
        return np.array([self.factor * len(text) for text in completions])


class Constant:
    def __init__(self, value):
        self.value = value

    def __call__(self, prompts, completions, **info):
        return [self.value] * len(completions)


def failing(prompts, completions, **info):
    raise KeyError("no such thing")


# -- built-ins ----------------------------------------------------------------------------------------------
def test_builtins_are_listed_with_docstrings_in_the_documented_shape():
    listed = rewards.available()
    for name in ("sentiment", "keyword", "length", "repetition", "classifier", "fluency"):
        assert listed[name] == "builtin"
        plugin_class = type(rewards.make(name, model="tiny-random-smollm2").plugin) if name == "fluency" else None
        doc = (plugin_class or rewards.registry._REGISTRY[name].obj).__doc__
        assert "Range:" in doc and "Arguments:" in doc and doc.index("Range:") < doc.index("Arguments:"), name


def test_sentiment_range_and_polarity():
    values = score("sentiment", [POSITIVE, NEGATIVE, NEUTRAL, ""])
    assert values.dtype == np.float64 and values.shape == (4,)
    assert values[0] > 0.5 and values[1] < -0.3
    assert abs(values[2]) < 0.3 and values[3] == 0.0
    assert np.all((values >= -1) & (values <= 1))


def test_sentiment_include_prompt_scores_the_prompt_too():
    prompts = [POSITIVE + " "]
    alone = score("sentiment", [NEUTRAL], prompts)
    with_prompt = score("sentiment", [NEUTRAL], prompts, include_prompt=True)
    assert with_prompt[0] > alone[0] + 0.3


def test_keyword_modes_whole_words_and_case():
    texts = ["Good food, GREAT service, good value.", "goodness, greatly loved", "nothing here", ""]
    kw = ("good", "great", "love")
    anyv = score("keyword", texts, keywords=kw)
    frac = score("keyword", texts, keywords=kw, mode="fraction")
    count = score("keyword", texts, keywords=kw, mode="count")
    assert anyv.tolist() == [1.0, 0.0, 0.0, 0.0]  # "goodness", "greatly", "loved" are not whole-word matches
    assert frac.tolist() == pytest.approx([2 / 3, 0, 0, 0])
    assert count.tolist() == [3.0, 0.0, 0.0, 0.0]
    sensitive = score("keyword", texts, keywords=kw, mode="count", case_sensitive=True)
    assert sensitive[0] == 1.0  # only the lower-case "good" matches; "Good" and "GREAT" do not
    assert set(anyv) <= {0.0, 1.0} and np.all((frac >= 0) & (frac <= 1)) and np.all(count >= 0)


def test_keyword_default_list_and_phrases():
    assert score("keyword", ["What a wonderful film", "meh"]).tolist() == [1.0, 0.0]
    assert score("keyword", ["see you later, alligator", "later"], keywords=["see you"]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="mode"):
        rewards.make("keyword", mode="most")


def test_length_words_peaks_at_target_and_decays():
    target = 5
    texts = [" ".join(["w"] * n) for n in (0, 3, 5, 7, 20)]
    values = score("length", texts, target=target)
    expected = [math.exp(-abs(n - target) / (target / 2)) for n in (0, 3, 5, 7, 20)]
    np.testing.assert_allclose(values, expected)
    assert values[2] == 1.0 and np.all((values > 0) & (values <= 1))
    assert values[1] == pytest.approx(values[3])  # symmetric around the target
    assert values[4] < values[3] < values[2]


def test_length_tokens_uses_completion_ids_and_needs_them():
    model = rewards.make("length", target=3, unit="tokens", scale=1.0)
    values = model(["p", "p"], ["anything", "else"], completion_ids=[[1, 2, 3], [1]])
    np.testing.assert_allclose(values, [1.0, math.exp(-2.0)])
    with pytest.raises(RewardPluginError, match="length.*completion_ids") as info:
        model(["p"], ["no ids"])
    assert isinstance(info.value.__cause__, ValueError)


def test_repetition_penalises_repeated_ngrams():
    texts = ["the cat sat on the mat", "the the the the", "a b a b a b", "", "one"]
    values = score("repetition", texts)

    def expected(text, n=2):
        words = text.lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        return len(set(grams)) / len(grams) - 1 if grams else 0.0

    np.testing.assert_allclose(values, [expected(t) for t in texts])
    assert values[0] == 0.0 and values[1] == pytest.approx(1 / 3 - 1) and values[3] == values[4] == 0.0
    assert np.all((values >= -1) & (values <= 0))
    assert score("repetition", ["a b a b a b"], n=1)[0] == pytest.approx(2 / 6 - 1)


def test_builtins_accept_and_ignore_unknown_info_keys():
    for name in ("sentiment", "keyword", "length", "repetition"):
        info = {"prompt_ids": [[1]], "completion_ids": [[2, 3]], "references": [None], "unknown_key": 1}
        out = rewards.make(name)(["p"], ["good text"], **info)
        assert out.shape == (1,)


# -- classifier ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from textenv.models import load_tokenizer

    tokenizer = load_tokenizer("tiny-random-smollm2")
    labels = ["negative", "neutral", "positive"]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.2,
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    path = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


CLASSIFIER_TEXTS = (
    ["Review:", "Q:", "", "Say something."],
    [" A lovely film with a great cast.", " meh", " short", " This is a much longer completion, with commas, to pad."],
)


def test_classifier_batched_equals_one_by_one(classifier_dir):
    prompts, completions = CLASSIFIER_TEXTS
    batched = rewards.make("classifier", model=str(classifier_dir), batch_size=4)
    single = rewards.make("classifier", model=str(classifier_dir), batch_size=1)
    together = batched(prompts, completions)
    one_by_one = np.array([single([p], [c])[0] for p, c in zip(prompts, completions)])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(single(prompts, completions), together, rtol=1e-4, atol=1e-5)
    assert np.ptp(together) > 1e-4  # the texts get different scores, so the comparison means something


def test_classifier_matches_a_direct_forward_pass(classifier_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    prompt, completion = "Review:", " A lovely film."
    tok = AutoTokenizer.from_pretrained(classifier_dir)
    net = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    with torch.no_grad():
        logits = net(**tok([prompt + completion], return_tensors="pt")).logits[0]
        logits_completion_only = net(**tok([completion], return_tensors="pt")).logits[0]
    probs = torch.softmax(logits, -1)

    path = str(classifier_dir)
    logit = score("classifier", [completion], [prompt], model=path, label=2)
    assert logit[0] == pytest.approx(float(logits[2]), abs=1e-5)
    by_name = score("classifier", [completion], [prompt], model=path, label="positive", output="probability")
    assert by_name[0] == pytest.approx(float(probs[2]), abs=1e-6)
    assert score("classifier", [completion], [prompt], model=path, label="NEGATIVE", output="probability")[0] == (
        pytest.approx(float(probs[0]), abs=1e-6)
    )
    no_prompt = score("classifier", [completion], [prompt], model=path, label=2, include_prompt=False)
    assert no_prompt[0] == pytest.approx(float(logits_completion_only[2]), abs=1e-5)


def test_classifier_probability_range_and_errors(classifier_dir, tmp_path):
    prompts, completions = CLASSIFIER_TEXTS
    probs = rewards.make("classifier", model=str(classifier_dir), output="probability", label=1)(prompts, completions)
    assert np.all((probs >= 0) & (probs <= 1))
    with pytest.raises(ValueError, match=r"'happy'.*\['negative', 'neutral', 'positive'\]"):
        rewards.make("classifier", model=str(classifier_dir), label="happy")
    with pytest.raises(ValueError, match="label=7"):
        rewards.make("classifier", model=str(classifier_dir), label=7)
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        rewards.make("classifier", model=str(missing))
    with pytest.raises(TypeError, match="classifier.*'temperature'"):
        rewards.make("classifier", model=str(classifier_dir), temperature=2)


def test_classifier_pickles_without_its_weights(classifier_dir):
    model = rewards.make("classifier", model=str(classifier_dir))
    prompts, completions = CLASSIFIER_TEXTS
    before = model(prompts, completions)
    data = pickle.dumps(model)
    clone = pickle.loads(data)
    assert clone.plugin._model is None and len(data) < 20_000
    np.testing.assert_allclose(clone(prompts, completions), before, rtol=1e-5, atol=1e-6)


def test_single_logit_classifier_uses_logit_zero_and_the_sigmoid(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from textenv.models import load_tokenizer

    tokenizer = load_tokenizer("tiny-random-smollm2")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, initializer_range=0.2, num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(1)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompts, completions = CLASSIFIER_TEXTS
    logits = score("classifier", completions, prompts, model=str(tmp_path), label=5)  # label is ignored
    probs = score("classifier", completions, prompts, model=str(tmp_path), output="probability")
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-5)


# -- fluency ------------------------------------------------------------------------------------------------
FLUENCY_PROMPTS = ["The weather today is", "Once upon a time", "", "Hello"]
FLUENCY_COMPLETIONS = [" sunny and warm.", " there was a small cat who liked fish", " Hi!", ""]


@pytest.fixture(scope="module")
def fluency():
    return rewards.make("fluency", model="tiny-random-smollm2", batch_size=8)


def test_fluency_range_and_batching(fluency):
    together = fluency(FLUENCY_PROMPTS, FLUENCY_COMPLETIONS)
    assert np.all(together <= 0) and np.all(np.isfinite(together))
    assert together[3] == 0.0  # empty completion
    single = rewards.make("fluency", model="tiny-random-smollm2", batch_size=1)
    one_by_one = [single([p], [c])[0] for p, c in zip(FLUENCY_PROMPTS, FLUENCY_COMPLETIONS)]
    np.testing.assert_allclose(together, one_by_one, rtol=1e-4, atol=1e-5)


def test_fluency_matches_a_hand_computed_log_softmax(fluency):
    import torch

    from textenv.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer("tiny-random-smollm2")
    net = load_causal_lm("tiny-random-smollm2").eval()
    prompt, completion = FLUENCY_PROMPTS[1], FLUENCY_COMPLETIONS[1]
    p_ids = tok(prompt)["input_ids"]
    c_ids = tok(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + c_ids])
    with torch.no_grad():
        logits = net(ids).logits[0]
    logprobs = [
        torch.log_softmax(logits[len(p_ids) + k - 1], -1)[c_ids[k]].item() for k in range(len(c_ids))
    ]
    expected_mean = sum(logprobs) / len(logprobs)
    got = fluency(FLUENCY_PROMPTS, FLUENCY_COMPLETIONS)
    assert got[1] == pytest.approx(expected_mean, abs=1e-4)
    total = rewards.make("fluency", model="tiny-random-smollm2", normalize=False)([prompt], [completion])
    assert total[0] == pytest.approx(sum(logprobs), abs=1e-3)


def test_fluency_pickles_without_the_model(fluency):
    fluency(["a"], [" b"])
    clone = pickle.loads(pickle.dumps(fluency))
    assert clone.plugin._model is None
    np.testing.assert_allclose(clone(["a"], [" b"]), fluency(["a"], [" b"]), atol=1e-6)


# -- composites ---------------------------------------------------------------------------------------------
def test_composite_weights_and_components():
    completions = [POSITIVE, NEGATIVE + " the the the the"]
    prompts = ["", ""]
    parts = {
        "sentiment": rewards.make("sentiment")(prompts, completions),
        "length": rewards.make("length", target=8)(prompts, completions),
        "repetition": rewards.make("repetition")(prompts, completions),
    }
    model = rewards.make(
        ["sentiment", ("repetition", 0.5), {"name": "length", "weight": -2.0, "kwargs": {"target": 8}}]
    )
    result = model.score(prompts, completions)
    assert isinstance(result, RewardResult) and list(result.components) == ["sentiment", "repetition", "length"]
    for name, value in parts.items():
        np.testing.assert_allclose(result.components[name], value)
    expected = parts["sentiment"] + 0.5 * parts["repetition"] - 2.0 * parts["length"]
    np.testing.assert_allclose(result.total, expected)
    np.testing.assert_allclose(model(prompts, completions), expected)


def test_composite_deduplicates_names_and_accepts_callables():
    model = rewards.make(["keyword", ("keyword", 2.0), {"name": "keyword", "kwargs": {"mode": "count"}}, exclaim_count])
    result = model.score(["", ""], ["good good!", "bad!!"])
    assert list(result.components) == ["keyword", "keyword_2", "keyword_3", "exclaim_count"]
    assert result.components["keyword_3"].tolist() == [2.0, 0.0]
    assert result.components["exclaim_count"].tolist() == [1.0, 2.0]
    np.testing.assert_allclose(result.total, [1 + 2 + 2 + 1, 0 + 0 + 0 + 2])


def test_single_plugin_components_hold_its_total():
    result = rewards.make("sentiment").score(["x"], [POSITIVE])
    assert list(result.components) == ["sentiment"]
    np.testing.assert_array_equal(result.components["sentiment"], result.total)


def test_composite_spec_errors():
    with pytest.raises(ValueError, match="empty"):
        rewards.make([])
    with pytest.raises(ValueError, match="weight"):
        rewards.make([("sentiment", float("nan"))])
    with pytest.raises(ValueError, match="unknown keys"):
        rewards.make([{"name": "sentiment", "wieght": 2}])
    with pytest.raises(TypeError, match="list"):
        rewards.make(["sentiment"], target=3)


# -- specs and registry -------------------------------------------------------------------------------------
def test_importing_rewards_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, rewards; rewards.available(); rewards.make('sentiment'); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_unknown_name_lists_the_known_names():
    with pytest.raises(UnknownRewardError) as info:
        rewards.make("sentimnet")
    message = str(info.value)
    assert "sentimnet" in message and all(n in message for n in ("sentiment", "keyword", "length", "fluency"))
    assert isinstance(info.value, ValueError)


def test_module_attr_specs():
    func = rewards.make(f"{__name__}:exclaim_count")
    assert func.name == "exclaim_count" and func(["", ""], ["a!", "b"]).tolist() == [1.0, 0.0]
    cls = rewards.make(f"{__name__}:ScaledLength", factor=2.0)
    assert cls.name == "ScaledLength" and cls(["x"], ["abc"]).tolist() == [6.0]
    with pytest.raises(UnknownRewardError, match="no_such_module_xyz"):
        rewards.make("no_such_module_xyz:thing")
    with pytest.raises(UnknownRewardError, match="has no attribute 'nothing_here'"):
        rewards.make(f"{__name__}:nothing_here")


def test_bad_kwargs_name_the_argument_and_the_plugin():
    with pytest.raises(TypeError, match=r"'length'.*'targte'"):
        rewards.make("length", targte=3)
    with pytest.raises(TypeError, match=r"'ScaledLength'.*'scale'"):
        rewards.make(ScaledLength, scale=3)
    with pytest.raises(TypeError, match=r"exclaim_count.*'bonus'"):
        rewards.make(exclaim_count, bonus=1)
    bound = rewards.make(weighted_exclaims, weight=3.0)  # a plugin function's own parameters can be bound
    assert bound.name == "weighted_exclaims" and bound(["x"], ["!!"]).tolist() == [6.0]
    assert pickle.loads(pickle.dumps(bound))(["x"], ["!"]).tolist() == [3.0]


def test_callables_and_reward_models_as_specs():
    assert rewards.make(exclaim_count).name == "exclaim_count"
    instance = rewards.make(ScaledLength(3.0))
    assert instance.name == "ScaledLength" and instance(["x"], ["ab"]).tolist() == [6.0]
    built = rewards.make(ScaledLength, factor=0.5)
    assert built(["x"], ["abcd"]).tolist() == [2.0]
    assert rewards.make(built) is built
    assert rewards.make(lambda p, c, **i: [0.0] * len(c)).name == "<lambda>"


def test_register_functions_and_classes():
    @rewards.register("test_rewards_shout")
    def shout(prompts, completions, **info):
        return [sum(ch.isupper() for ch in text) for text in completions]

    @rewards.register("test_rewards_const")
    class Const:
        def __init__(self, value: float = 1.0):
            self.value = value

        def __call__(self, prompts, completions, **info):
            return [self.value] * len(completions)

    listed = rewards.available()
    assert listed["test_rewards_shout"] == f"registered: {__name__}.test_register_functions_and_classes.<locals>.shout"
    assert listed["test_rewards_const"].startswith("registered: ") and listed["test_rewards_const"].endswith("Const")
    assert rewards.make("test_rewards_shout")(["x"], ["ABc"]).tolist() == [2.0]
    model = rewards.make("test_rewards_const", value=4)
    assert model.name == "test_rewards_const" and model(["x", "y"], ["a", "b"]).tolist() == [4.0, 4.0]
    assert rewards.make(Const).name == "test_rewards_const"  # the registered name follows the class
    with pytest.raises(ValueError, match="already registered"):
        rewards.register("test_rewards_shout")(shout)
    with pytest.raises(ValueError, match="already registered"):
        rewards.register("sentiment")(Const)


# -- validation of plugin output ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("plugin", "pattern"),
    [
        (Constant(float("nan")), r"'Constant'.*non-finite.*index 0: nan"),
        (Constant(float("inf")), r"'Constant'.*non-finite.*index 0: inf"),
        (Constant(-np.inf), r"'Constant'.*non-finite.*index 0: -inf"),
        (Constant("high"), r"'Constant'.*non-numeric.*index 0: 'high'"),
        (Constant(None), r"'Constant'.*non-numeric.*index 0: None"),
        (lambda p, c, **i: [1.0] * (len(c) + 1), r"'<lambda>' returned 3 values for 2 completions"),
        (lambda p, c, **i: 1.0, r"'<lambda>' returned float 1.0; expected a sequence of 2 floats"),
        (lambda p, c, **i: np.ones((2, 2)), r"'<lambda>'.*shape \(2, 2\)"),
        (lambda p, c, **i: [0.5, float("nan")], r"'<lambda>'.*non-finite.*index 1: nan"),
        (lambda p, c, **i: [1.0, 10**400], r"'<lambda>' returned a value that is not a float: int too large"),
    ],
)
def test_bad_plugin_output_raises_reward_plugin_error(plugin, pattern):
    with pytest.raises(RewardPluginError, match=pattern):
        rewards.make(plugin)(["a", "b"], ["x", "y"])


def test_plugin_exceptions_are_wrapped_and_chained():
    with pytest.raises(RewardPluginError, match=r"'failing' raised KeyError.*no such thing") as info:
        rewards.make(failing).score(["a"], ["b"])
    assert isinstance(info.value.__cause__, KeyError) and isinstance(info.value, RuntimeError)
    with pytest.raises(RewardPluginError, match="'failing'"):
        rewards.make(["sentiment", failing])(["a"], ["b"])


def test_batch_checks_and_accepted_outputs():
    model = rewards.make("sentiment")
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        model(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="completion_ids"):
        model(["a"], ["c"], completion_ids=[[1], [2]])
    empty = model.score([], [])
    assert empty.total.shape == (0,) and empty.total.dtype == np.float64
    import torch

    for output in ([1, 2], (1.5, True), np.array([1, 2], dtype=np.int32), torch.tensor([0.5, 1.0]), iter([1, 2])):
        out = rewards.make(lambda p, c, o=output, **i: o)(["a", "b"], ["c", "d"])
        assert out.dtype == np.float64 and out.shape == (2,)


def raising_generator(prompts, completions, **info):
    yield 1.0
    raise KeyError("missing score")


def test_a_generator_that_raises_while_read_is_a_reward_plugin_error():
    with pytest.raises(RewardPluginError, match=r"'raising_generator' raised KeyError: 'missing score'") as info:
        rewards.make(raising_generator)(["a", "b"], ["x", "y"])
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(RewardPluginError, match="raising_generator"):  # also as a part of a composite
        rewards.make(["length", raising_generator])(["a", "b"], ["x", "y"])


def test_interruptions_propagate_unwrapped():
    def interrupted(prompts, completions, **info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rewards.make(interrupted)(["a"], ["b"])
    with pytest.raises(KeyboardInterrupt):
        rewards.make(interrupted).with_timeout(5)(["a"], ["b"])  # raised in the worker, re-raised here


def test_an_overflowing_weighted_total_names_the_parts_and_weights():
    model = rewards.make([(exclaim_count, 1e308), ("keyword", 1e308)])
    with pytest.raises(
        RewardPluginError,
        match=r"'exclaim_count\+keyword': the weighted total of completion 0 is inf "
        r"\(1e\+308 \* exclaim_count \(1\) \+ 1e\+308 \* keyword \(1\)\); 1 of 2 totals",
    ):
        model(["a", "b"], ["good!", "bad"])
    with pytest.raises(RewardPluginError, match="is nan"):  # inf - inf
        rewards.make([(exclaim_count, 1e308), (exclaim_count, 1e308), (exclaim_count, -1e308)])(["a"], ["!!"])


def test_timeout_fails_a_slow_call_and_the_next_call_gets_a_fresh_worker():
    release = threading.Event()

    def slow(prompts, completions, **info):
        if completions[0] == "hang":
            release.wait(30)
        return [1.0] * len(completions)

    model = rewards.make(slow).with_timeout(0.2)
    assert model.timeout == 0.2 and rewards.make(slow).timeout is None  # a copy: the original has no limit
    started = time.monotonic()
    with pytest.raises(RewardPluginError, match=r"'slow' did not return within its timeout of 0.2 s"):
        model(["a"], ["hang"])
    assert time.monotonic() - started < 5
    assert model(["a"], ["fine"]).tolist() == [1.0]
    with pytest.raises(RewardPluginError, match="'failing' raised KeyError"):  # errors still name the plugin
        rewards.make(failing).with_timeout(5)(["a"], ["b"])
    composite = rewards.make(["length", slow]).with_timeout(0.2)
    with pytest.raises(RewardPluginError, match="'slow' did not return"):
        composite(["a"], ["hang"])
    release.set()
    clone = pickle.loads(pickle.dumps(rewards.make(exclaim_count).with_timeout(0.5)))  # a fresh worker there
    assert clone.timeout == 0.5 and clone(["a"], ["!!"]).tolist() == [2.0]
    for bad in (0, -1.0, float("inf"), float("nan"), True, "5"):
        with pytest.raises(ValueError, match="timeout must be None or a positive number"):
            rewards.make(slow).with_timeout(bad)


# -- pickling -----------------------------------------------------------------------------------------------
def test_reward_models_pickle_and_score_the_same():
    prompts, completions = ["a", "b"], [POSITIVE, NEGATIVE]
    for spec in ("sentiment", ["sentiment", ("repetition", 0.5), {"name": "keyword", "kwargs": {"mode": "count"}}]):
        model = rewards.make(spec)
        before = model.score(prompts, completions)
        clone = pickle.loads(pickle.dumps(model))
        after = clone.score(prompts, completions)
        np.testing.assert_array_equal(after.total, before.total)
        assert after.components.keys() == before.components.keys() and clone.name == model.name
    fresh = rewards.make("sentiment")
    assert pickle.loads(pickle.dumps(fresh))(prompts, completions).tolist() == fresh(prompts, completions).tolist()
    by_path = pickle.loads(pickle.dumps(rewards.make(f"{__name__}:ScaledLength", factor=2.0)))
    assert by_path(["x"], ["ab"]).tolist() == [4.0]
