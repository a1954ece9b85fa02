"""textenv.kv_cache: the KV cache goes in and comes out under the name the installed transformers uses."""

from __future__ import annotations

import warnings

import torch

from textenv.kv_cache import cache_kwargs, returned_cache
from textenv.models import load_causal_lm


class Wrapper(torch.nn.Module):
    """Stands where DistributedDataParallel would: the model is its ``.module``, its forward takes ``**kwargs``."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, **kwargs):
        return self.module(**kwargs)


def test_decoding_through_the_cache_equals_a_full_forward_without_deprecated_names():
    model = load_causal_lm("tiny-random-smollm2", seed=3).eval()
    ids = torch.tensor([[5, 9, 14, 2], [7, 7, 30, 11]])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a deprecated keyword or attribute would raise here
        full = model(input_ids=ids).logits
        for caller in (model, Wrapper(model)):
            out = caller(input_ids=ids[:, :2], use_cache=True)
            cache, logits = returned_cache(out), [out.logits[:, -1]]
            for t in (2, 3):
                out = caller(input_ids=ids[:, t : t + 1], **cache_kwargs(caller, cache), use_cache=True)
                cache = returned_cache(out)
                logits.append(out.logits[:, -1])
            assert cache.get_seq_length() == 4
            assert torch.allclose(torch.stack(logits, 1), full[:, 1:], atol=1e-5)
