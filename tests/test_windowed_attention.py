"""Windowed attention over packed rows (arc_jax/model/attention.py): when no text of a row is longer
than the span, each query chunk attends only its window of key chunks. Outputs and gradients must
equal an independent per-text softmax attention and the dense path's."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arc_jax.model.attention import block_causal_chunk, dot_product_attention, keys_per_query, span_window
from one_step import random_params


def _packed_rows(rng, rows: int, row_len: int, span: int):
    """Segment ids and per-text positions of rows packed with texts of 1..span slots, padding at
    the end of each row (and one row of a single text exactly `span` long, ending mid-row)."""
    seg = np.zeros((rows, row_len), np.int32)
    pos = np.zeros((rows, row_len), np.int32)
    for r in range(rows):
        cursor, s = 0, 1
        lengths = [span] if r == 0 else []
        while True:
            n = lengths.pop() if lengths else int(rng.integers(1, span + 1))
            if cursor + n > row_len - (r % 3):  # leave some rows a padded tail
                break
            seg[r, cursor:cursor + n] = s
            pos[r, cursor:cursor + n] = np.arange(n)
            cursor, s = cursor + n, s + 1
    return seg, pos


def _per_text_attention(q, k, v, seg, pos, causal):
    """Softmax attention computed text by text in float64: the independent reference."""
    b, t, h, d = q.shape
    group = h // k.shape[2]
    out = np.zeros((b, t, h, d))
    for r in range(b):
        for s in set(seg[r].tolist()) - {0}:
            idx = np.flatnonzero(seg[r] == s)
            for head in range(h):
                qs, ks, vs = q[r, idx, head], k[r, idx, head // group], v[r, idx, head // group]
                logits = qs.astype(np.float64) @ ks.T.astype(np.float64) / np.sqrt(d)
                if causal:
                    logits = np.where(pos[r, idx][None, :] <= pos[r, idx][:, None], logits, -np.inf)
                p = np.exp(logits - logits.max(-1, keepdims=True))
                out[r, idx, head] = (p / p.sum(-1, keepdims=True)) @ vs
    return out


def _random_case(seed: int, b: int, row_len: int, span: int, heads: int, kv_heads: int, d: int = 8):
    """Packed rows (`_packed_rows`), random q, k, v, the real slots and a loss weight on them."""
    rng = np.random.default_rng(seed)
    seg, pos = _packed_rows(rng, b, row_len, span)
    q = rng.normal(size=(b, row_len, heads, d)).astype(np.float32)
    k, v = (rng.normal(size=(b, row_len, kv_heads, d)).astype(np.float32) for _ in range(2))
    real = seg > 0
    weight = rng.normal(size=(b, row_len, heads, d)).astype(np.float32) * real[..., None, None]
    return seg, pos, q, k, v, real, weight


def test_span_window_covers_the_longest_text_with_the_fewest_keys():
    # causal, texts <= 81 slots of 512-slot rows: chunks of 32 and the 80 slots before (112 keys;
    # chunks of 64 would read 144)
    assert span_window(512, 81, causal=True) == (32, 80)
    # bidirectional, <= 64: chunks of 32, 63 slots each side rounded up to pieces of 16 (160 keys)
    assert span_window(512, 64, causal=False) == (32, 64)
    # pieces of 14 for chunks of 42 (a 168-slot row): 39 slots each side rounded up to 42
    assert span_window(168, 40, causal=False) == (42, 42)
    # no gain: a span as long as the row, no span, or a window as wide as the row
    assert span_window(512, 512, causal=True) is None
    assert span_window(512, 0, causal=True) is None
    assert span_window(128, 100, causal=False) is None
    # nor where the window would be cut in over 32 slices: chunks of 37 (pieces of 1) or 74 (of 2)
    assert span_window(148, 40, causal=True) is None
    assert span_window(160, 40, causal=True) == (40, 40)  # pieces of 10; 80 keys as (32, 48): the larger chunk
    for row_len, span, causal in [(512, 81, True), (512, 64, False), (384, 130, True), (168, 40, False)]:
        chunk, reach = span_window(row_len, span, causal)
        assert row_len % chunk == 0 and reach >= span - 1


@pytest.mark.parametrize("causal,row_len,span,heads,kv_heads", [
    (True, 128, 20, 4, 2), (False, 128, 20, 4, 4), (True, 96, 33, 2, 1), (False, 160, 40, 4, 2),
    (True, 168, 30, 4, 2), (False, 168, 40, 2, 2)])  # the last two in pieces of 14
def test_windowed_attention_equals_per_text_attention_and_the_dense_path(causal, row_len, span, heads, kv_heads):
    seg, pos, q, k, v, real, weight = _random_case(row_len + span, 3, row_len, span, heads, kv_heads)
    assert span_window(row_len, span, causal) is not None  # the windowed path is the one tested

    @functools.partial(jax.jit, static_argnums=3)  # one compile: op by op, each case took 7-27 s
    def attend(q, k, v, span):
        return dot_product_attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos,
                                     kv_positions=pos, causal=causal, same_sequence=True, span=span)

    windowed = np.asarray(attend(q, k, v, span))
    np.testing.assert_allclose(windowed[real], _per_text_attention(q, k, v, seg, pos, causal)[real], atol=2e-6)
    assert np.isfinite(windowed).all()

    # gradients of a loss reading the real queries: equal to the dense path's
    loss = lambda span: jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v, span) * weight), argnums=(0, 1, 2))
    for got, want in zip(loss(span)(q, k, v), loss(0)(q, k, v)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)


def test_block_causal_chunks_and_their_keys():
    # at most 8 chunks of at least 16 slots: 96 = 6 x 16, 84 = 4 x 21; 24 and 31 cannot be cut so
    assert [block_causal_chunk(n) for n in (512, 256, 224, 96, 84, 64, 31, 24)] == [64, 32, 28, 16, 21, 16, None, None]
    # 8 chunks of 32: queries of chunk j read 32 (j + 1) keys, 144 on average; 8 of 64: 288
    assert keys_per_query(256, 0, causal=True) == 144 and keys_per_query(512, 0, causal=True) == 288
    assert keys_per_query(256, 0, causal=False) == 256  # bidirectional rows stay dense
    assert keys_per_query(512, 81, causal=True) == 112  # a window, where one applies, wins


@pytest.mark.parametrize("row_len,span,heads,kv_heads", [(256, 256, 4, 2), (192, 120, 2, 2), (128, 20, 2, 1), (84, 84, 4, 2)])
def test_block_causal_attention_equals_per_text_attention_and_dense_gradients(row_len, span, heads, kv_heads):
    """Rows of several texts (one as long as `span`, crossing chunk boundaries), no span given:
    the "xla" path scores query chunk j against key chunks 0..j only."""
    seg, pos, q, k, v, real, weight = _random_case(row_len, 2, row_len, span, heads, kv_heads)
    assert block_causal_chunk(row_len) is not None  # the block-causal path is the one tested

    @functools.partial(jax.jit, static_argnums=3)  # one compile: op by op, each case took 12-28 s
    def attend(q, k, v, implementation):
        return dot_product_attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos,
                                     kv_positions=pos, causal=True, same_sequence=True, implementation=implementation)

    blocked = np.asarray(attend(q, k, v, "xla"))
    np.testing.assert_allclose(blocked[real], _per_text_attention(q, k, v, seg, pos, True)[real], atol=2e-6)
    # gradients against jax.nn.dot_product_attention's dense XLA implementation
    grads = lambda impl: jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v, impl) * weight), argnums=(0, 1, 2))(q, k, v)
    for got, want in zip(grads("xla"), grads("jax_nn")):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)


def test_a_text_longer_than_the_span_loses_keys():
    """The span is a promise the packer keeps (arc_jax/data/packing.py): a longer text is cut off
    from part of itself, which is why it is enforced there."""
    rng = np.random.default_rng(0)
    t, span = 128, 20
    seg = np.ones((1, t), np.int32)
    pos = np.arange(t, dtype=np.int32)[None]
    q, k, v = (rng.normal(size=(1, t, 2, 8)).astype(np.float32) for _ in range(3))
    attend = jax.jit(lambda q, k, v, span: dot_product_attention(
        q, k, v, q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos, kv_positions=pos, causal=True,
        same_sequence=True, span=span), static_argnums=3)
    assert not np.allclose(attend(q, k, v, span), attend(q, k, v, 0), atol=1e-3)


def _sample(context_len: int, text_len: int):
    from arc_jax.data.tasks import Sample

    x = tuple(range(1, text_len + 1))
    return Sample("continuation", (tuple(range(1, context_len + 1)),), x, x, (True,) * text_len, (0,), "cont")


def test_the_packer_keeps_texts_within_the_spans_and_counts_what_it_cuts():
    from arc_jax.data.packing import PackingShape, pack_batch
    from arc_jax.model.config import BackboneConfig, EncoderConfig, ProjectorConfig

    backbone = BackboneConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=8, hidden_dim=32, vocab_size=64)
    cfg = EncoderConfig(backbone=backbone, projectors=(ProjectorConfig(16, 16, 16),), compress_rates=(-4,))
    shape = PackingShape(encoder_rows=2, encoder_len=128, decoder_rows=2, decoder_len=128, encoder_span=40,
                         decoder_span=60)
    samples = [_sample(50, 20), _sample(30, 59), _sample(30, 20)]
    batch, leftover, stats = pack_batch(samples, cfg, shape)
    assert stats.counts["context_truncated"] == 1 and stats.counts["sample_too_long"] == 1 and not leftover
    for seg_ids, span in ((batch.encoder.segment_ids, 40), (batch.segment_ids, 60)):
        lengths = [np.sum(row == s) for row in np.asarray(seg_ids) for s in set(row.tolist()) - {0}]
        assert lengths and max(lengths) <= span


def test_a_train_step_with_spans_and_unrolled_layers_equals_the_dense_scanned_step(tmp_path):
    """The tiny config at rows long enough for windows on both sides (encoder rows of 256 slots,
    contexts <= 64; decoder rows of 336, samples <= 81): one step's loss and gradients (Adam's
    first moments) equal those of dense attention in scanned stacks, on the same batches."""
    import dataclasses
    from pathlib import Path

    from arc_jax.config_loading import load_config
    from arc_jax.model import ARCEncoder, BackboneConfig, Decoder, EncoderConfig
    from arc_jax.train.optimizer import OptimizerConfig
    from arc_jax.train.run_config import parse_run_config, run_batches
    from arc_jax.train.step import StepConfig, init_state, train_step

    shape = {"encoder_rows": 2, "encoder_len": 256, "decoder_rows": 2, "decoder_len": 336,
             "max_contexts_per_row": 8, "encoder_span": 64, "decoder_span": 81}
    config = load_config(Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py",
                         [f"--config.data.dir={tmp_path}"] + [f"--config.data.shape.{k}={v}" for k, v in shape.items()])
    assert span_window(256, 64, causal=False) and span_window(336, 81, causal=True)  # both sides windowed
    batch = next(run_batches(parse_run_config(config, device_count=1)))[0]
    enc_cfg = EncoderConfig.from_dict(config.model.encoder.to_dict())
    dec_cfg = BackboneConfig.from_dict(config.model.decoders[0].backbone.to_dict())
    encoder, decoder = ARCEncoder(enc_cfg), Decoder(dec_cfg)
    params, dec_params = random_params(encoder, decoder, batch)
    opt = OptimizerConfig(encoder_lr=1e-3, special_lr=1e-3, projector_lr=1e-3, weight_decay=0.0, warmup_steps=1,
                          max_steps=10, initial_lr=1e-4, final_lr=1e-4)

    def one_step(encoder, decoder):
        state = init_state(jax.tree.map(jnp.array, params))
        return jax.device_get(jax.jit(lambda s, b: train_step(s, dec_params, b, cfg=StepConfig(
            encoder, decoder, 0, opt)))(state, batch))

    dense, m_dense = one_step(encoder, decoder)
    fast, m_fast = one_step(dataclasses.replace(encoder, attention_span=64, unroll_layers=True),
                            dataclasses.replace(decoder, attention_span=81, unroll_layers=True))
    np.testing.assert_allclose(float(m_fast["loss"]), float(m_dense["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m_fast["grad_norm"]), float(m_dense["grad_norm"]), rtol=1e-5)
    for x, y in zip(jax.tree.leaves(fast.opt.adam), jax.tree.leaves(dense.opt.adam), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5 * max(np.abs(y).max(), 1e-30))


def test_executed_flops_count_the_windows_only_where_the_xla_path_attends_them():
    from arc_jax.data.packing import PackingShape
    from arc_jax.model.config import BackboneConfig, EncoderConfig, ProjectorConfig
    from arc_jax.train import flops

    backbone = BackboneConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16, hidden_dim=128, vocab_size=64)
    enc = EncoderConfig(backbone=backbone, projectors=(ProjectorConfig(64, 64, 64),), compress_rates=(-4,))
    dense = PackingShape(encoder_rows=2, encoder_len=256, decoder_rows=2, decoder_len=512)
    spans = dataclasses_replace(dense, encoder_span=64, decoder_span=81)
    # A = 2 rows x 2 matmuls x 2 FLOPs x queries x keys x (heads x head_dim = 64), 3x for forward and
    # both gradients. Against whole rows (the kernels' count): one plain encoder layer reads 160 keys of
    # 256 (bidirectional, span 64) and two decoder layers 112 of 512 (causal, span 81); without spans
    # the decoder is block-causal, 8 chunks of 64: 288 keys a query
    scores = lambda layers, q_len, keys: 3 * layers * (2 * 2 * 2 * q_len * keys * 64)
    kernels = flops.train_step_flops(enc, backbone, spans, attention_impl="jax_nn")
    assert kernels == flops.train_step_flops(enc, backbone, dense, attention_impl="jax_nn")
    w, d = flops.train_step_flops(enc, backbone, spans), flops.train_step_flops(enc, backbone, dense)
    saved = scores(1, 256, 256 - 160) + scores(2, 512, 512 - 112)
    assert kernels["total"] - w["total"] == saved and kernels["attention"] - w["attention"] == saved
    assert kernels["total"] - d["total"] == scores(2, 512, 512 - 288)


def dataclasses_replace(x, **kw):
    import dataclasses

    return dataclasses.replace(x, **kw)
