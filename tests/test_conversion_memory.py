"""Conversions stream: writing any decoder layout needs little memory beyond the parameters
(so an 8B bf16 model converts on a 24 GB machine). A writer that copies the whole tree, as
Orbax's defaults and a plain torch.save do, adds at least the model's size.

Measured on the 569 MB model below (peak RssAnon above the loaded parameters, 2-core CI machine):
arc_jax 126-132 MB (300-350 MB with the 64 MB Orbax chunks used before, which failed a 0.6x bar
once under load), meta 160 MB, hf 68 MB; the bar is half the model."""

import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from arc_jax.convert import write_decoder
from arc_jax.model.config import BackboneConfig

PROBE = Path(__file__).with_name("conversion_memory_probe.py")


@pytest.fixture(scope="module")
def big_decoder(tmp_path_factory):
    """A 570 MB bf16 decoder in the Hugging Face layout."""
    c = BackboneConfig(dim=1024, n_layers=16, n_heads=8, n_kv_heads=4, head_dim=128, hidden_dim=4096,
                       vocab_size=16000)
    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.standard_normal(shape, np.float32).astype(ml_dtypes.bfloat16)

    L = c.n_layers
    params = {
        "tok_embeddings": {"embedding": w(c.vocab_size, c.dim)},
        "layers": {"block": {
            "attention": {"wq": w(L, c.dim, 8, 128), "wk": w(L, c.dim, 4, 128), "wv": w(L, c.dim, 4, 128),
                          "wo": w(L, 8, 128, c.dim)},
            "attention_norm": {"scale": w(L, c.dim)}, "ffn_norm": {"scale": w(L, c.dim)},
            "feed_forward": {"w1": w(L, c.dim, c.hidden_dim), "w3": w(L, c.dim, c.hidden_dim),
                             "w2": w(L, c.hidden_dim, c.dim)}}},
        "norm": {"scale": w(c.dim)}, "output": w(c.dim, c.vocab_size)}
    model_bytes = sum(a.nbytes for a in _leaves(params))
    path = tmp_path_factory.mktemp("big") / "hf"
    write_decoder(c, params, path, "hf")
    return path, model_bytes


def _leaves(tree):
    for v in tree.values():
        yield from (_leaves(v) if isinstance(v, dict) else [v])


@pytest.mark.parametrize("fmt", ["arc_jax", "meta", "hf"])
def test_writing_needs_a_fraction_of_the_model_in_extra_memory(big_decoder, tmp_path, fmt):
    src, model_bytes = big_decoder
    out = subprocess.run([sys.executable, str(PROBE), str(src), str(tmp_path / fmt), fmt],
                         capture_output=True, text=True, check=True)
    extra = int(out.stdout.strip().splitlines()[-1])
    assert extra < 0.5 * model_bytes, f"{fmt}: {extra / 1e6:.0f} MB extra for a {model_bytes / 1e6:.0f} MB model"
