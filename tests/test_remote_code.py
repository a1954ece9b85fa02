"""Nothing read from disk runs as code: every model, tokenizer or config load passes ``trust_remote_code``
explicitly (the user's choice, False by default), so transformers never asks on stdin whether to run the Python
file a directory ships, and such a directory is refused with one line.

Two checks: the source itself (every ``from_pretrained``/``from_config``/``pipeline`` call in ``textenv``, ``rewards``
and ``agents`` names ``trust_remote_code=``; every function taking it defaults to False), and every loader run on a
directory holding ``auto_map`` + an unknown ``model_type`` + a Python file that records that it ran.
"""

from __future__ import annotations

import ast
import builtins
import json
import shutil
from pathlib import Path

import pytest

from cli_util import assert_one_line_error, run_main

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("textenv", "rewards", "agents")
LOADERS = {"from_pretrained", "from_config", "pipeline"}
# calls named like a loader that take no trust_remote_code: (file, the receiver's source) and why
NO_REMOTE_CODE = {
    ("agents/modeling/token_pooling.py", "nn.Embedding"): "builds an embedding from a tensor, reads no path",
    # peft has no trust_remote_code: it reads adapter_config.json as data and the weights we check are safetensors
    ("agents/lm/lora.py", "peft.PeftModel"): "a LoRA adapter onto a base model loaded with trust_remote_code",
    ("rewards/builtin/reward_model.py", "PeftModel"): "a LoRA adapter onto a base model loaded with trust_remote_code",
}


def loader_calls() -> list[tuple[str, int, str, ast.Call]]:
    calls = []
    for package in LIBRARY:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = str(path.relative_to(REPO))
            for node in ast.walk(ast.parse(path.read_text(), relative)):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name not in LOADERS:
                    continue
                receiver = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
                calls.append((relative, node.lineno, receiver, node))
    return calls


def test_every_load_call_in_the_library_passes_trust_remote_code_explicitly():
    calls = loader_calls()
    assert len(calls) >= 15, "the walk found too few loader calls: is it still looking at the right files?"
    missing = [
        f"{file}:{line} {ast.unparse(call)[:90]}"
        for file, line, receiver, call in calls
        if (file, receiver) not in NO_REMOTE_CODE
        and not any(keyword.arg == "trust_remote_code" for keyword in call.keywords)
    ]
    assert not missing, "loads without an explicit trust_remote_code=:\n" + "\n".join(missing)


def test_every_trust_remote_code_parameter_defaults_to_false():
    wrong = []
    for package in LIBRARY:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                args = node.args
                positional = args.posonlyargs + args.args
                defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
                pairs = list(zip(positional, defaults)) + list(zip(args.kwonlyargs, args.kw_defaults))
                for arg, default in pairs:
                    if arg.arg != "trust_remote_code":
                        continue
                    no_default = default is None
                    if not no_default and not (isinstance(default, ast.Constant) and default.value is False):
                        wrong.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not wrong, "trust_remote_code defaults other than False: " + ", ".join(wrong)


# -- a directory that ships code ---------------------------------------------------------------------------------
@pytest.fixture(params=["config and tokenizer", "config only"])
def code_dir(request, tmp_path):
    """A model directory whose config (and tokenizer settings, or a plain tokenizer) name a Python file
    (``auto_map``) and whose ``model_type`` transformers does not know: loading it needs that file's code, which
    records that it ran. With a plain tokenizer, loaders that read the tokenizer first reach the model's config."""
    directory = tmp_path / "shipped_code"
    ran = tmp_path / "RAN"
    if request.param == "config only":
        from textenv.models import resolve_model_path

        shutil.copytree(resolve_model_path("moss-words"), directory)  # a word-level tokenizer, no code
    else:
        directory.mkdir()
        tokenizer = {"tokenizer_class": "EvilTokenizer",
                     "auto_map": {"AutoTokenizer": ["evil_code.EvilTokenizer", None]}}
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    auto_map = {name: "evil_code.EvilModel" for name in
                ("AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification")}
    auto_map["AutoConfig"] = "evil_code.EvilConfig"
    config = {"model_type": "evil-net", "architectures": ["EvilForSequenceClassification"], "num_labels": 1,
              "vocab_size": 49152, "auto_map": auto_map}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "evil_code.py").write_text(
        f"import pathlib\npathlib.Path({str(ran)!r}).write_text('the shipped code ran')\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil-net'\n"
    )
    return directory, ran, request.param


@pytest.fixture
def no_prompt(monkeypatch):
    """Fail the test if anything asks on stdin (transformers' "Do you wish to run the custom code? [y/N]")."""

    def prompted(*args, **kwargs):
        raise AssertionError(f"asked on stdin: {args[0] if args else ''!r:.120}")

    monkeypatch.setattr(builtins, "input", prompted)


def loaders(path: str) -> dict[str, object]:
    import rewards
    from agents.lm.value_model import ValueModel
    from agents.reward_model import RewardModelConfig, RewardModelTrainer, load_reward_model
    from agents.reward_model import value_model_from_reward_model
    from textenv.models import load_causal_lm, load_tokenizer
    from textenv.preferences import PreferencePair

    pairs = [PreferencePair(chosen="good", rejected="bad"), PreferencePair(chosen="yes", rejected="no")]
    made = {
        "reward_model plugin": lambda: rewards.make({"name": "reward_model", "kwargs": {"path": path}}),
        "classifier plugin": lambda: rewards.make({"name": "classifier", "kwargs": {"model": path}}),
        "fluency plugin": lambda: rewards.make({"name": "fluency", "kwargs": {"model": path}})([""], ["x"]),
        "load_reward_model": lambda: load_reward_model(path),
        "critic from a reward model": lambda: value_model_from_reward_model(path),
        "ValueModel.from_classifier": lambda: ValueModel.from_classifier(path),
        "load_causal_lm": lambda: load_causal_lm(path),
        "load_tokenizer": lambda: load_tokenizer(path),
        "train-rm --model": lambda: RewardModelTrainer(pairs, RewardModelConfig(model=path, progress_bar=False)),
    }
    assert list(made) == LOADER_NAMES
    return made


LOADER_NAMES = [
    "reward_model plugin", "classifier plugin", "fluency plugin", "load_reward_model", "critic from a reward model",
    "ValueModel.from_classifier", "load_causal_lm", "load_tokenizer", "train-rm --model",
]


@pytest.mark.parametrize("loader", LOADER_NAMES)
def test_a_directory_shipping_code_is_refused_without_running_or_asking(loader, code_dir, no_prompt):
    import rewards

    directory, ran, variant = code_dir
    if loader == "load_tokenizer" and variant == "config only":  # the tokenizer itself ships no code: it loads
        loaders(str(directory))[loader]()
        assert not ran.exists(), "the directory's Python file ran"
        return
    with pytest.raises((ValueError, OSError, rewards.RewardPluginError)) as raised:
        loaders(str(directory))[loader]()
    assert not ran.exists(), "the directory's Python file ran"
    message = str(raised.value)
    assert "\n" not in message and str(directory) in message, message


@pytest.fixture
def stdin_says_yes(monkeypatch):
    """stdin answers "y" to any question (a prompt would then run the shipped code, which the test sees).

    transformers' warnings are silenced meanwhile: its log handler may hold an earlier test's captured stderr,
    and a warning written there prints a logging traceback into this test's stderr."""
    import io
    import sys

    from transformers.utils import logging as hf_logging

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 8))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    yield
    hf_logging.set_verbosity(verbosity)


def test_the_cli_refuses_it_in_one_line_even_when_stdin_says_yes(code_dir, tmp_path, capsys, stdin_says_yes):
    directory, ran, _ = code_dir
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"chosen": "good", "rejected": "bad"}\n{"chosen": "yes", "rejected": "no"}\n')
    code, out, err = run_main(capsys, "train-rm", "--data", str(data), "--out", str(tmp_path / "rm"), "--model",
                              str(directory))
    assert_one_line_error(code, err, str(directory), "trust_remote_code")
    assert "Do you wish to run" not in out + err
    assert not ran.exists() and not (tmp_path / "rm").exists()


def test_the_reward_flag_of_sample_refuses_it_too(code_dir, capsys, stdin_says_yes):
    directory, ran, _ = code_dir
    spec = json.dumps({"name": "reward_model", "kwargs": {"path": str(directory)}})
    code, out, err = run_main(capsys, "sample", "--env", "MossWords-v0", "-n", "1", "--reward", spec)
    assert_one_line_error(code, err, str(directory))
    assert "Do you wish to run" not in out + err and not ran.exists()
