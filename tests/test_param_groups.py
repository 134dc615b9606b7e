"""The encoder's parameter groups: each top-level key's group, and split / join as inverses."""

import numpy as np

from arc_jax.convert.fresh import fresh_encoder_from_decoder
from arc_jax.model import param_groups
from arc_jax.model.config import BackboneConfig

BACKBONE = BackboneConfig(dim=8, n_layers=4, n_heads=2, n_kv_heads=1, head_dim=4, hidden_dim=16, vocab_size=11)
DECODER = {"tok_embeddings": {"embedding": np.zeros((11, 8), np.float32)},
           "layers": {"block": {"w": np.arange(4 * 3, dtype=np.float32).reshape(4, 3)}}}


def tiny_tree(**kw) -> dict:
    return fresh_encoder_from_decoder(BACKBONE, DECODER, n_truncated_layers=1, out_dims=(6, 5), hidden_dim=4, **kw)[1]


def test_each_top_level_key_has_its_group():
    pooled = tiny_tree(compress_rates=(-2,))
    memory = tiny_tree(compress_rates=(), n_memory_tokens=3)
    assert set(pooled) == {"tok_embeddings", "layers", "pooling_layers_0", "decoder_0", "decoder_1"}
    assert "memory_tokens" in memory
    expected = {"tok_embeddings": "shared", "layers": "shared", "pooling_layers_0": "shared",
                "memory_tokens": "shared", "decoder_0": "decoder_0", "decoder_1": "decoder_1"}
    for key in {**pooled, **memory}:
        assert param_groups.group_of(key) == expected[key], key
    assert (param_groups.head(0), param_groups.head(1), param_groups.SHARED) == ("decoder_0", "decoder_1", "shared")
    assert set(param_groups.SPECIAL) == set(pooled["decoder_0"]) - {"layer1", "layer2"}


def test_split_then_join_gives_the_tree_back():
    tree = tiny_tree(compress_rates=(-2,))
    parts = param_groups.split(tree)
    assert list(parts) == ["shared", "decoder_0", "decoder_1"]
    assert set(parts["shared"]) == {"tok_embeddings", "layers", "pooling_layers_0"}
    assert parts["decoder_1"] is tree["decoder_1"]
    joined = param_groups.join(parts)
    assert joined.keys() == tree.keys() and all(joined[k] is tree[k] for k in tree)
    heads_only = {k: v for k, v in tree.items() if param_groups.is_head(k)}
    assert param_groups.split(heads_only)["shared"] == {}
    assert param_groups.join(param_groups.split(heads_only)) == heads_only
