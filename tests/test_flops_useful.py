"""Useful FLOPs of a packed train batch (arc_jax/train/flops.py) against hand counts on tiny shapes.

Every expected number below is written out from the convention (2 FLOPs per multiply-add, real
tokens only, attention over the (query, key) pairs the masks allow; forward + backward: encoder
3x, projector 3x, frozen decoder 2x weights + 3x attention), not computed by the code under test.

Tiny encoder: D=4, H=2, K=1, d=2 (H·d=4, K·d=2), F=8; one plain layer, then one pooling layer.
Projector 4 -> 6 -> 6. Tiny decoder: D=6, H=3, K=1, d=2 (H·d=6, K·d=2), F=8, V=10, one layer.
Per block, W(t, s) = 2[t·D·Hd + 2·s·D·Kd + t·Hd·D + 3·t·D·F] and attention 2·2·pairs·Hd.
"""

import dataclasses

import numpy as np
import pytest

from arc_jax.data.packing import PackingShape, pack_batch
from arc_jax.data.tasks import Sample
from arc_jax.model.attention import attention_mask
from arc_jax.model.config import BackboneConfig, EncoderConfig, ProjectorConfig
from arc_jax.train import flops

ENC_BACKBONE = BackboneConfig(dim=4, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=2, hidden_dim=8, vocab_size=16)
ENCODER = EncoderConfig(backbone=ENC_BACKBONE, projectors=(ProjectorConfig(4, 6, 6),), compress_rates=(-2,))
DECODER = BackboneConfig(dim=6, n_layers=1, n_heads=3, n_kv_heads=1, head_dim=2, hidden_dim=8, vocab_size=10)

# One encoder row of 10 slots, two contexts (3 and 5 tokens), pooled by 2 into 2 and 3 vectors in a
# pooled row of 7 slots (PackingShape.stage_lens: min(10, 10/2 + 2 contexts)). One decoder row of 16
# slots: the sample's 2 + <Cont> + 3 + <Cont> compressed slots, then its 6 text tokens, 4 of them
# with loss; 13 real slots, 3 padding.
SHAPE = PackingShape(encoder_rows=1, encoder_len=10, decoder_rows=1, decoder_len=16, max_contexts_per_row=2)
SAMPLE = Sample(task="continuation", contexts=((1, 2, 3), (4, 5, 6, 7, 8)), x=(1, 2, 3, 4, 5, 6),
                y=(2, 3, 4, 5, 6, 7), loss_mask=(False, False, True, True, True, True), insertions=(0, 0),
                special="cont")


def packed(cfg: EncoderConfig = ENCODER, shape: PackingShape = SHAPE, sample: Sample = SAMPLE):
    batch, leftover, _ = pack_batch([sample], cfg, shape)
    assert not leftover
    return batch


def encoder_weights(t, s):  # W(t, s) of the tiny encoder
    return 2 * (t * 4 * 4 + 2 * s * 4 * 2 + t * 4 * 4 + 3 * t * 4 * 8)


def decoder_weights(t):  # W(t, t) of the tiny decoder
    return 2 * (t * 6 * 6 + 2 * t * 6 * 2 + t * 6 * 6 + 3 * t * 6 * 8)


def test_the_batch_is_laid_out_as_the_hand_counts_assume():
    batch = packed()
    assert batch.encoder.segment_ids.tolist() == [[1, 1, 1, 2, 2, 2, 2, 2, 0, 0]]
    (stage,) = batch.encoder.stages
    assert stage.segment_ids.tolist() == [[1, 1, 2, 2, 2, 0, 0]]
    assert batch.segment_ids.tolist() == [[1] * 13 + [0] * 3]
    assert (batch.compressed_index[0, :7] >= 0).all() and (batch.compressed_index[0, 7:] < 0).all()
    assert len(set(batch.compressed_index[0, :7].tolist())) == 6  # 5 vectors and the one <Cont>
    assert batch.loss_mask.sum() == 4


def test_useful_flops_by_hand():
    batch = packed()
    useful = flops.useful_train_flops(ENCODER, DECODER, batch)
    # Encoder: the plain layer on 8 real tokens, attention within each text, both ways: 3² + 5²
    # pairs; the pooling layer's 2 + 3 queries on those 8 keys: 2·3 + 3·5 pairs.
    plain = encoder_weights(8, 8) + 2 * 2 * (3 * 3 + 5 * 5) * 4
    pooling = encoder_weights(5, 8) + 2 * 2 * (2 * 3 + 3 * 5) * 4
    assert (plain, pooling) == (2304 + 544, 1536 + 336)
    # Projector: the 6 table rows the decoder reads (5 vectors and <Cont>).
    projector = 2 * 6 * (4 * 6 + 6 * 6)
    # Decoder: 13 real slots, causal within the sample: 13·14/2 pairs; output head on the 4 loss tokens.
    dec_weights = decoder_weights(13) + 2 * 4 * 6 * 10
    dec_attention = 2 * 2 * (13 * 14 // 2) * 6
    assert (dec_weights, dec_attention) == (6240 + 480, 2184)
    expected = {"encoder": 3 * (plain + pooling), "projector": 3 * projector,
                "decoder": 2 * dec_weights + 3 * dec_attention}
    for part, value in expected.items():
        assert useful[part] == value, part
    assert useful["total"] == 3 * 4720 + 3 * 720 + 19992 == 36312
    assert useful["attention"] == 3 * (544 + 336) + 3 * 2184


def test_executed_flops_by_hand_and_above_useful():
    executed = flops.train_step_flops(ENCODER, DECODER, SHAPE)
    # The static shapes: 10 x 10 encoder slots, 7 pooled queries on 10 keys, a table of 7 + 2 rows,
    # 16 x 16 decoder slots with the head on all 16.
    encoder = encoder_weights(10, 10) + 2 * 2 * 10 * 10 * 4 + encoder_weights(7, 10) + 2 * 2 * 7 * 10 * 4
    projector = 2 * 9 * (4 * 6 + 6 * 6)
    decoder = 2 * (decoder_weights(16) + 2 * 16 * 6 * 10) + 3 * 2 * 2 * 16 * 16 * 6
    assert executed["total"] == 3 * encoder + 3 * projector + decoder
    useful = flops.useful_train_flops(ENCODER, DECODER, packed())
    for part in ("encoder", "projector", "decoder", "total", "attention"):
        assert useful[part] < executed[part], part


def test_causal_encoder_counts_the_triangles():
    causal = dataclasses.replace(ENCODER, causal=True)
    useful = flops.useful_train_flops(causal, DECODER, packed(causal))
    # Plain layer: a text of n tokens, causal, has n(n+1)/2 pairs: 6 + 15. Pooling layer: query g
    # (0-based) of a text attends its keys at positions <= g ("top-left" causal): 1 + 2 and 1 + 2 + 3.
    plain = encoder_weights(8, 8) + 2 * 2 * (6 + 15) * 4
    pooling = encoder_weights(5, 8) + 2 * 2 * (3 + 6) * 4
    assert useful["encoder"] == 3 * (plain + pooling)


def test_counts_and_fills():
    counts = flops.batch_counts(packed())
    assert counts == {"encoder_tokens": 8, "encoder_slots": 10, "decoder_tokens": 13, "decoder_slots": 16,
                      "text_tokens": 6, "loss_tokens": 4}


def test_full_rows_differ_from_executed_only_by_the_convention():
    """One text filling its encoder row, pooled by 1 (so the pooled row is full too), one sample
    filling its decoder row: the encoder's useful count is the executed one exactly. The rest can
    never be equal, by convention: the executed count runs the causal decoder's attention dense
    (T² pairs for T(T+1)/2 allowed), its output head on every slot (useful: the loss tokens), and
    the projector on both special vectors (this sample reads <Cont> only)."""
    cfg = dataclasses.replace(ENCODER, compress_rates=(-1,))
    shape = PackingShape(encoder_rows=1, encoder_len=6, decoder_rows=1, decoder_len=11, max_contexts_per_row=1)
    sample = Sample(task="continuation", contexts=((1, 2, 3, 4, 5, 6),), x=(1, 2, 3, 4), y=(2, 3, 4, 5),
                    loss_mask=(False, True, True, True), insertions=(0,), special="cont")
    batch = packed(cfg, shape, sample)
    assert (batch.encoder.segment_ids > 0).all() and (batch.encoder.stages[0].segment_ids > 0).all()
    assert (batch.segment_ids > 0).all()  # 6 vectors, <Cont>, 4 text tokens
    useful = flops.useful_train_flops(cfg, DECODER, batch)
    executed = flops.train_step_flops(cfg, DECODER, shape)
    assert useful["encoder"] == executed["encoder"]
    assert executed["projector"] - useful["projector"] == 3 * 2 * 1 * (4 * 6 + 6 * 6)  # the unread <Rec>
    masked_pairs = 11 * 11 - 11 * 12 // 2
    non_loss_slots = 11 - 3
    assert executed["decoder"] - useful["decoder"] == 3 * 2 * 2 * masked_pairs * 6 + 2 * 2 * non_loss_slots * 6 * 10


def test_stacked_micro_batches_add_up():
    batch = packed()
    stacked = type(batch)(*[np.stack([x, x]) if isinstance(x, np.ndarray) else x for x in batch])
    stacked = stacked._replace(encoder=type(batch.encoder)(
        *[np.stack([x, x]) if isinstance(x, np.ndarray) else x for x in batch.encoder])._replace(
        stages=tuple(type(s)(*[np.stack([x, x]) for x in s]) for s in batch.encoder.stages)))
    one, two = flops.useful_train_flops(ENCODER, DECODER, batch), flops.useful_train_flops(ENCODER, DECODER, stacked)
    assert all(two[k] == 2 * one[k] for k in one)
    assert flops.batch_counts(stacked) == {k: 2 * v for k, v in flops.batch_counts(batch).items()}
    frozen = flops.useful_train_flops(ENCODER, DECODER, batch, encoder_frozen=True)
    assert frozen["encoder"] == one["encoder"] / 3 and frozen["decoder"] == one["decoder"]


@pytest.mark.parametrize("causal", [False, True])
def test_allowed_pairs_is_the_mask_sum(causal):
    rng = np.random.default_rng(0)
    q_seg = np.sort(rng.integers(0, 4, (3, 9)), axis=1)
    kv_seg = np.sort(rng.integers(0, 4, (3, 12)), axis=1)

    def positions(seg):
        return np.array([[int((row[:i] == row[i]).sum()) for i in range(len(row))] for row in seg])

    q_pos, kv_pos = positions(q_seg), positions(kv_seg)
    expected = int(np.asarray(attention_mask(q_seg, kv_seg, q_pos, kv_pos, causal)).sum())
    assert flops.allowed_pairs(q_seg, q_pos, kv_seg, kv_pos, causal) == expected


@pytest.mark.parametrize("cfg", [ENCODER, dataclasses.replace(ENCODER, causal=True, compress_rates=(-2, -2)),
                                 dataclasses.replace(ENCODER, compress_rates=(), n_memory_tokens=2)],
                         ids=["pooled", "causal-two-pooling-layers", "memory-tokens"])
def test_random_batches_never_exceed_executed(cfg):
    rng = np.random.default_rng(1)
    shape = PackingShape(encoder_rows=3, encoder_len=24, decoder_rows=2, decoder_len=40, max_contexts_per_row=3)
    samples = []
    for _ in range(12):
        contexts = tuple(tuple(int(t) for t in rng.integers(1, 16, rng.integers(1, 9))) for _ in range(rng.integers(1, 3)))
        n = int(rng.integers(1, 8))
        samples.append(Sample(task="continuation", contexts=contexts, x=tuple(range(1, n + 1)), y=tuple(range(2, n + 2)),
                              loss_mask=tuple(bool(b) for b in rng.integers(0, 2, n)), insertions=(0,) * len(contexts),
                              special="cont"))
    batch, _, stats = pack_batch(samples, cfg, shape)
    assert stats.samples > 1
    useful, executed = flops.useful_train_flops(cfg, DECODER, batch), flops.train_step_flops(cfg, DECODER, shape)
    for part in ("encoder", "projector", "decoder", "total", "attention"):
        assert 0 < useful[part] < executed[part], part
    counts = flops.batch_counts(batch)
    assert (counts["encoder_tokens"], counts["decoder_tokens"]) == (stats.encoder_tokens, stats.decoder_tokens)


def test_skipped_attention_flops_of_splash_by_hand():
    """The splash kernel's rows are padded to its 128-slot blocks and it computes the blocks holding
    an allowed pair, where the static count takes each row's own slots whole. Two samples of 128
    decoder slots each (7 compressed slots, 121 text tokens) fill a 256-slot row on blocks 0 and 1:
    2 of the 4 blocks, against 256² pairs counted. Their contexts (8 tokens each) take one 10-slot
    encoder row each: one block each, against 10² pairs: the padding costs more than is skipped."""
    x = tuple(range(1, 122))
    sample = dataclasses.replace(SAMPLE, x=x, y=x, loss_mask=(True,) * 121)
    shape = PackingShape(encoder_rows=2, encoder_len=10, decoder_rows=1, decoder_len=256, max_contexts_per_row=2)
    batch, leftover, _ = pack_batch([sample, sample], ENCODER, shape)
    assert not leftover and batch.segment_ids.tolist() == [[1] * 128 + [2] * 128]
    per_pair_enc, per_pair_dec = 2 * 2 * 4, 2 * 2 * 6  # 2·2·Hd
    encoder = 3 * 1 * per_pair_enc * (2 * 10 * 10 - 2 * 128 * 128)  # 3 passes, the one plain layer
    decoder = 3 * 1 * per_pair_dec * (256 * 256 - 2 * 128 * 128)
    assert flops.skipped_attention_flops(ENCODER, DECODER, batch, attention_impl="splash") == encoder + decoder
    assert flops.skipped_attention_flops(ENCODER, DECODER, batch, attention_impl="splash",
                                         encoder_frozen=True) == encoder / 3 + decoder
    assert flops.skipped_attention_flops(ENCODER, DECODER, batch, attention_impl="xla") == 0.0
