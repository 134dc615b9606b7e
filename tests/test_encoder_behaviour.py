"""ARC encoder behaviour: pooling groups, parity of the Flax encoder with the independent float64
reference (tests/reference_encoder.py) on released-layout checkpoints, packing, special vectors."""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import pytest

import reference_encoder as ref
from arc_jax.convert import released
from arc_jax.convert.layout import encoder_backbone_from_meta
from arc_jax.model import ARCEncoder, pack_encoder_inputs, pool_groups
from arc_jax.model.inputs import splice_segments
from arc_jax.model.pooling import pooled_length

TOLERANCE = 1e-5  # float32 Flax against the float64 reference
LENGTHS = (37, 10, 5, 16, 3, 1, 8, 9)

# Variants of the released config (reference_encoder.make_config arguments).
CASES = {
    "mean_8": {},
    "mean_4": dict(compress_rates=[-4]),
    "mean_2_2": dict(compress_rates=[-2, -2]),
    "last_8": dict(pool_type="last_pooled_queries"),
    "causal_mean_8": dict(causal=True),
    "causal_last_2_2": dict(causal=True, pool_type="last_pooled_queries", compress_rates=[-2, -2]),
    "memory_tokens": dict(compress_rates=[], memory_tokens=4, pool_type="mean"),
    "every_layer_pools": dict(compress_rates=[-2, -2, -2]),
    "two_decoders": dict(n_decoders=2, rec_tok=True, cont_tok=True),
    # Qwen2 / Qwen3 backbones (q/k/v biases; per-head q/k RMSNorm with head_dim 16 != dim / n_heads).
    "qwen2_mean_4": dict(compress_rates=[-4], qkv_bias=True),
    "qwen3_mean_2_2": dict(compress_rates=[-2, -2], qk_norm=True, head_dim=16),
}
BACKBONE_OPTIONS = ("qkv_bias", "qk_norm")


def test_group_sizes_follow_the_spec_examples():
    assert pool_groups(37, 8) == [8, 8, 7, 7, 7]
    assert pool_groups(5, 4) == [3, 2]
    assert pool_groups(10, 8) == [5, 5]
    assert pool_groups(16, 8) == [8, 8]
    assert pool_groups(3, 8) == [3]
    assert pool_groups(1, 8) == [1]


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_group_sizes_match_the_reference_for_every_length(k):
    for n in range(1, 130):
        sizes = pool_groups(n, k)
        assert sizes == ref.group_sizes(n, k)
        assert sum(sizes) == n and max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
        assert len(sizes) == (1 if n < k else -(-n // k))


def test_pooled_length_chains_the_pooling_layers():
    assert pooled_length(37, (8,)) == 5
    assert pooled_length(37, (2, 2)) == 10  # 37 -> 19 -> 10
    assert pooled_length(5, (8,)) == 1
    assert pooled_length(64, (4, 2)) == 8


def _texts(seed=7, lengths=LENGTHS, vocab=64):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, n).tolist() for n in lengths]


@functools.cache
def _case(name: str, tmp_root: str):
    """(config.json dict, weights, EncoderConfig, params) of a released folder written and read back."""
    config = ref.make_config(**CASES[name])
    weights = ref.random_weights(config, seed=len(name))
    options = {k: True for k in BACKBONE_OPTIONS if config["model_args"].get(k)}
    if not options:
        cfg, params = released.read(ref.write_released(f"{tmp_root}/{name}", config, weights))
        return config, weights, cfg, params
    # No released encoder has these options: the Llama part goes through a released folder, then
    # the whole backbone is read again from the same Meta-named tensors with the options set.
    llama = {k: v for k, v in weights.items() if not k.endswith(("bias", "q_norm.weight", "k_norm.weight"))}
    model_args = {k: v for k, v in config["model_args"].items() if k not in BACKBONE_OPTIONS}
    cfg, params = released.read(ref.write_released(f"{tmp_root}/{name}", config | {"model_args": model_args}, llama))
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, **options))
    return config, weights, cfg, params | encoder_backbone_from_meta(weights.__getitem__, cfg, name, "embedder.")


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("released"))


def _run(cfg, params, rows, positions=None):
    """Raw encoder output and every decoder head's (projected output, projected [<Rec>, <Cont>])."""
    inputs, layout = pack_encoder_inputs(rows, cfg)
    if positions is not None:
        inputs = inputs._replace(stages=(inputs.stages[0]._replace(positions=positions(inputs)),) + inputs.stages[1:])

    def apply(module, x):
        h, _ = module.encode(x)
        return h, [head(h) for head in module.heads]

    h, heads = jax.jit(lambda p, x: ARCEncoder(cfg).apply({"params": p}, x, method=apply))(params, inputs)
    return np.asarray(h), [(np.asarray(y), np.asarray(s)) for y, s in heads], layout


def _per_text(array, layout):
    return [array[p.row, p.start:p.start + p.length] for p in layout]


@pytest.mark.parametrize("name", list(CASES))
def test_flax_encoder_matches_the_reference(name, tmp_root):
    config, weights, cfg, params = _case(name, tmp_root)
    texts = _texts()
    h, heads, layout = _run(cfg, params, [[t] for t in texts])
    worst = 0.0
    for text, got in zip(texts, _per_text(h, layout)):
        expected = ref.encode(weights, config, text)
        n_out = cfg.n_memory_tokens or pooled_length(len(text), cfg.pooling_factors)
        assert got.shape == expected.shape == (n_out, cfg.backbone.dim)
        worst = max(worst, float(np.abs(got - expected).max()))
    # compress = project(concat(encoder outputs of the text, special vector)), per text, per decoder.
    for d, (projected, specials) in enumerate(heads):
        for text, got in zip(texts, _per_text(projected, layout)):
            for special, vector in (("rec", specials[0]), ("cont", specials[1])):
                expected = ref.compress(weights, config, text, decoder=d, special=special)
                worst = max(worst, float(np.abs(np.concatenate([got, vector[None]]) - expected).max()))
            without = ref.compress(weights, config, text, decoder=d, special=None)
            worst = max(worst, float(np.abs(got - without).max()))
    print(f"{name}: max |flax - reference| = {worst:.2e}")
    assert worst < TOLERANCE


@pytest.mark.parametrize("name", ["mean_8", "mean_2_2", "causal_last_2_2", "memory_tokens"])
def test_packing_several_texts_per_row_changes_nothing(name, tmp_root):
    _, _, cfg, params = _case(name, tmp_root)
    texts = _texts(seed=3)
    alone, _, alone_layout = _run(cfg, params, [[t] for t in texts])
    packed, _, packed_layout = _run(cfg, params, [texts[:3], texts[3:5], texts[5:]])
    assert len({p.row for p in packed_layout}) == 3
    for a, b in zip(_per_text(alone, alone_layout), _per_text(packed, packed_layout)):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)


def test_pooled_queries_at_group_positions_would_be_caught(tmp_root):
    """Queries at 0..m-1 (the reference's quirk): the alternative is far from arc_jax's output, so
    the parity test above would fail if arc_jax placed them elsewhere."""
    config, weights, cfg, params = _case("mean_8", tmp_root)
    texts = [t for t in _texts() if len(t) > 8]
    h, _, layout = _run(cfg, params, [[t] for t in texts])
    for text, got in zip(texts, _per_text(h, layout)):
        wrong = ref.encode(weights, config, text, pooled_query_positions="group_start")
        assert np.abs(got - wrong).max() > 1e-2
    # And the Flax model reads the positions it is given: moving them moves the output.
    def group_starts(inputs):
        starts = np.zeros_like(inputs.stages[0].positions)
        for r in range(len(starts)):
            first = np.unique(inputs.stages[0].group_ids[r], return_index=True)[1]
            n = int((inputs.stages[0].segment_ids[r] > 0).sum())
            starts[r, :n] = first[:n]
        return starts
    moved, _, _ = _run(cfg, params, [[t] for t in texts], positions=group_starts)
    assert np.abs(moved - h).max() > 1e-2


def test_causal_pooling_uses_the_top_left_mask(tmp_root):
    config, weights, cfg, params = _case("causal_mean_8", tmp_root)
    texts = [t for t in _texts() if len(t) > 8]
    h, _, layout = _run(cfg, params, [[t] for t in texts])
    for text, got in zip(texts, _per_text(h, layout)):
        own_group = ref.encode(weights, config, text, causal_pool_mask="own_group")
        assert np.abs(got - own_group).max() > 1e-2
        np.testing.assert_allclose(got, ref.encode(weights, config, text), atol=TOLERANCE, rtol=0)


def test_memory_tokens_keep_only_their_final_states(tmp_root):
    _, _, cfg, params = _case("memory_tokens", tmp_root)
    texts = _texts()
    h, _, layout = _run(cfg, params, [[t] for t in texts])
    assert all(p.length == cfg.n_memory_tokens for p in layout)
    # The memory tokens read the text: two texts give two different sets of states.
    a, b = _per_text(h, layout)[:2]
    assert np.abs(a - b).max() > 1e-2


def test_insertion_offsets_are_relative_to_the_previous_insertion():
    text = [10, 11, 12, 13, 14, 15]
    a, b = np.zeros((2, 4)), np.ones((3, 4))
    pieces = splice_segments(text, [a, b], [0, 2])
    assert pieces[0] is a and pieces[1] == [10, 11] and pieces[2] is b and pieces[3] == [12, 13, 14, 15]
    pieces = splice_segments(text, [a, b], [3, 3])
    assert pieces[0] == [10, 11, 12] and pieces[1] is a and pieces[2] == [13, 14, 15] and pieces[3] is b
    assert len(pieces) == 4
    with pytest.raises(ValueError):
        splice_segments(text, [a, b], [4, 3])
    with pytest.raises(ValueError):
        splice_segments(text, [a], [0, 2])
