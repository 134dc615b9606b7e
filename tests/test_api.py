"""The public API: load_encoder / load_decoder, encode, compress, logits, save."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arc_jax
from arc_jax.model import ARCEncoder, EncoderConfig, pack_encoder_inputs
from arc_jax.model.inputs import splice_segments
from arc_jax.tools.roundtrip import random_params, tiny_configs


@pytest.fixture(scope="module")
def models():
    encoder_cfg, decoder_cfg = tiny_configs()
    enc_params, dec_params = random_params(encoder_cfg, decoder_cfg, seed=3)
    return (arc_jax.Encoder(encoder_cfg, enc_params), arc_jax.DecoderLM(decoder_cfg, dec_params))


TEXTS = [list(range(1, 38)), [5, 6, 7], [9] * 10, list(range(40, 60))]


def test_encode_lengths_follow_the_pooling_schedule(models):
    enc, _ = models
    assert [o.shape for o in enc.encode(TEXTS)] == [(10, 64), (1, 64), (3, 64), (5, 64)]


def test_batched_encode_equals_one_text_at_a_time(models):
    # The batch packs several texts per row; segments must never see each other.
    enc, _ = models
    batched = enc.encode(TEXTS)
    for text, out in zip(TEXTS, batched):
        np.testing.assert_allclose(out, enc.encode([text])[0], atol=1e-5, rtol=1e-5)


def test_compress_appends_the_projected_special_vector_per_text(models):
    enc, _ = models
    raw = enc.encode(TEXTS)
    for task, name in (("continuation", "cont_tok"), ("reconstruction", "rec_tok")):
        out = enc.compress(TEXTS, decoder=1, task=task)
        head = jax.device_get(enc.params["decoder_1"])
        for r, o in zip(raw, out):
            full = np.concatenate([r, head[name][None]])
            expected = full @ head["layer1"] @ head["layer2"]
            assert o.shape == (len(r) + 1, 96)
            np.testing.assert_allclose(o, expected, atol=2e-5, rtol=1e-5)


def test_compress_without_special_vectors(models):
    enc, _ = models
    cfg = EncoderConfig(**{**enc.config.__dict__, "rec_tok": False, "cont_tok": False})
    params = {k: v for k, v in enc.params.items()}
    params = {**params, **{f"decoder_{d}": {k: v for k, v in params[f"decoder_{d}"].items() if k in ("layer1", "layer2")}
                           for d in range(cfg.n_decoders)}}
    plain = arc_jax.Encoder(cfg, params)
    out = plain.compress(TEXTS[:1])
    assert out[0].shape == (10, 96)


def test_decoder_logits_only_for_text_tokens_and_splice_matches_embedding(models):
    # A block made of the decoder's own token embeddings must give the plain-text logits.
    _, dec = models
    text = [3, 14, 15, 92, 65, 35]
    table = np.asarray(dec.params["tok_embeddings"]["embedding"])
    block = table[text[2:4]]
    plain = dec.logits([text])
    spliced = dec.logits([text[:2], block, text[4:]])
    assert spliced.shape == (4, 256)
    np.testing.assert_allclose(spliced, plain[[0, 1, 4, 5]], atol=1e-5)


def test_insertion_offsets_are_relative_to_the_previous_insertion():
    a, b = np.zeros((2, 4)), np.ones((3, 4))
    pieces = splice_segments([10, 11, 12, 13], [a, b], [0, 2])
    assert pieces[0] is a and pieces[1] == [10, 11] and pieces[2] is b and pieces[3] == [12, 13]
    with pytest.raises(ValueError, match="outside"):
        splice_segments([10, 11], [a, b], [1, 5])


def test_bfloat16_models_run_and_stay_close(models):
    enc, dec = models
    enc16 = arc_jax.Encoder(enc.config, enc.params, dtype="bfloat16")
    out16, out32 = enc16.compress(TEXTS[:2]), enc.compress(TEXTS[:2])
    assert all(o.dtype == np.float32 for o in out16)
    for a, b in zip(out16, out32):
        assert np.abs(a - b).max() < 0.1 * np.abs(b).max()
    dec16 = arc_jax.DecoderLM(dec.config, dec.params, dtype=jnp.bfloat16)
    assert dec16.logits([[1, 2, 3]]).dtype == np.float32


def test_bad_inputs_are_reported(models):
    enc, dec = models
    with pytest.raises(ValueError, match=r"ids\[1\] is empty"):
        enc.encode([[1, 2], []])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        enc.encode([[1, 256]])
    with pytest.raises(ValueError, match="decoder=2"):
        enc.compress([[1, 2]], decoder=2)
    with pytest.raises(ValueError, match="width 64"):
        dec.logits([[1, 2], np.zeros((2, 64), np.float32)])


def test_arc_jax_checkpoint_round_trip_is_bit_exact(models, tmp_path):
    enc, dec = models
    enc.save(tmp_path / "enc")
    dec.save(tmp_path / "dec")
    enc2, dec2 = arc_jax.load_encoder(tmp_path / "enc"), arc_jax.load_decoder(tmp_path / "dec")
    assert enc2.config == enc.config and dec2.config == dec.config
    for a, b in zip(jax.tree.leaves(enc.params) + jax.tree.leaves(dec.params),
                    jax.tree.leaves(enc2.params) + jax.tree.leaves(dec2.params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_loading_an_encoder_as_a_decoder_is_a_clear_error(models, tmp_path):
    from arc_jax.convert import ConversionError

    enc, _ = models
    enc.save(tmp_path / "enc")
    with pytest.raises(ConversionError, match="arc_jax encoder, not a decoder"):
        arc_jax.load_decoder(tmp_path / "enc")


def test_memory_token_encoder_keeps_the_memory_outputs():
    encoder_cfg, _ = tiny_configs()
    cfg = EncoderConfig(backbone=encoder_cfg.backbone, projectors=encoder_cfg.projectors[:1], compress_rates=(),
                        n_memory_tokens=3, causal=True)
    inputs, _ = pack_encoder_inputs([[[1, 2, 3]]], cfg)
    params = nn.unbox(jax.jit(ARCEncoder(cfg).init)(jax.random.key(0), inputs)["params"])
    enc = arc_jax.Encoder(cfg, params)
    out = enc.encode(TEXTS)
    assert [o.shape for o in out] == [(3, 64)] * 4
    for text, o in zip(TEXTS, out):
        np.testing.assert_allclose(o, enc.encode([text])[0], atol=1e-5, rtol=1e-5)


def test_load_decoder_drops_llama31_rope_scaling_unless_asked(models, tmp_path):
    import dataclasses

    from arc_jax.model.config import RopeScaling

    _, dec = models
    scaled = arc_jax.DecoderLM(dataclasses.replace(dec.config, rope_scaling=RopeScaling()), dec.params)
    scaled.save(tmp_path / "dec")
    assert arc_jax.load_decoder(tmp_path / "dec").config.rope_scaling is None
    kept = arc_jax.load_decoder(tmp_path / "dec", keep_rope_scaling=True)
    assert kept.config.rope_scaling == RopeScaling()
    long_text = list(range(1, 200))
    assert not np.allclose(kept.logits([long_text]), arc_jax.load_decoder(tmp_path / "dec").logits([long_text]))


def test_splash_attention_models_match_the_reference_path(models):
    # 100-token inputs fill 128-slot rows, the splash kernel's block (interpreted on CPU).
    enc, dec = models
    rng = np.random.default_rng(5)
    texts = [rng.integers(1, 256, n).tolist() for n in (100, 21)]
    enc_splash = arc_jax.Encoder(enc.config, enc.params, attention_impl="splash")
    for a, b in zip(enc_splash.compress(texts), enc.compress(texts)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)
    dec_splash = arc_jax.DecoderLM(dec.config, dec.params, attention_impl="splash")
    pieces = [texts[0][:40], enc.compress(texts[1:])[0], texts[0][40:]]
    np.testing.assert_allclose(dec_splash.logits(pieces), dec.logits(pieces), atol=1e-4, rtol=1e-5)


def test_compress_masks_rows_of_one_text_by_lengths(models, monkeypatch):
    """With "jax_nn", calls whose rows each hold one text attend by lengths (no dense bias on
    cuDNN), calls that pack several texts in a row by segments; both equal the "xla" path."""
    from arc_jax.model import attention

    enc, _ = models
    by_lengths = []
    real = attention._jax_nn_attention_by_lengths
    monkeypatch.setattr(attention, "_jax_nn_attention_by_lengths",
                        lambda q, k, *a: by_lengths.append((q.shape[1], k.shape[1])) or real(q, k, *a))
    rng = np.random.default_rng(6)
    one_per_row = [rng.integers(1, 256, n).tolist() for n in (40, 35, 30)]  # no two fit a 64-slot row
    packed = [rng.integers(1, 256, n).tolist() for n in (40, 20, 3)]
    for texts, expect_lengths in ((one_per_row, True), (packed, False)):
        by_lengths.clear()
        fused = arc_jax.Encoder(enc.config, enc.params, attention_impl="jax_nn")  # traced afresh
        for a, b in zip(fused.compress(texts), enc.compress(texts), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
        # Both kinds of layer (64 slots attending 64; a pooling layer's 24 query slots attending 64)
        # attend by lengths, or none does.
        assert set(by_lengths) == ({(64, 64), (24, 64)} if expect_lengths else set()), (texts, by_lengths)
