"""The analytic train-step FLOPs (arc_jax/train/flops.py) against XLA's own count, and the MFU helpers.

XLA's cost analysis counts every op (elementwise ones too), so it should sit a few percent above
the matmul-only analytic count, never below. It counts the body of a while loop once, whatever
its trip count, so the models here run one scanned (`nn.scan`) layer: the other layers are
pooling layers, which are unrolled.

The count is that of the lowered (not yet optimised) HLO: compiling the backward passes takes
5-7 s each on CPU, and on the forward the optimised program's count differs by < 1% (checked).
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from arc_jax.data.packing import PackingShape
from arc_jax.model.config import BackboneConfig, EncoderConfig, ProjectorConfig
from arc_jax.model.decoder import Decoder
from arc_jax.model.encoder import ARCEncoder
from arc_jax.model.inputs import pack_encoder_inputs
from arc_jax.train import flops

# XLA's total over the analytic matmul count: elementwise work on top, nothing missing.
MIN_RATIO, MAX_RATIO = 1.0, 1.10

SHAPE = PackingShape(encoder_rows=4, encoder_len=128, decoder_rows=4, decoder_len=256, max_contexts_per_row=4)
BACKBONE = BackboneConfig(dim=128, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=32, hidden_dim=256,
                          vocab_size=256)
# One scanned layer, then two pooling layers (128 -> 68 -> 38 positions a row).
POOLED = EncoderConfig(backbone=BACKBONE, projectors=(ProjectorConfig(128, 192, 96), ProjectorConfig(128, 64, 64)),
                       compress_rates=(-2, -2))
# The tiny_cpu.py encoder (one plain layer, one pooling by 4), at SHAPE.
TINY = EncoderConfig(
    backbone=BackboneConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=176,
                            vocab_size=1024),
    projectors=(ProjectorConfig(64, 96, 96),), compress_rates=(-4,))
MEMORY = EncoderConfig(backbone=dataclasses.replace(BACKBONE, n_layers=1), projectors=(ProjectorConfig(128, 96, 96),),
                       compress_rates=(), n_memory_tokens=4)
DECODER = BackboneConfig(dim=128, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=32, hidden_dim=256, vocab_size=256)


def encoder_inputs(cfg: EncoderConfig, shape: PackingShape, seed: int = 0):
    """Random texts laid out by the packer at the static shape of a training batch."""
    rng = np.random.default_rng(seed)
    room = shape.encoder_len - cfg.n_memory_tokens * shape.max_contexts_per_row
    rows = []
    for _ in range(shape.encoder_rows):
        lengths = rng.multinomial(room - 8, [1 / shape.max_contexts_per_row] * shape.max_contexts_per_row) + 1
        rows.append([list(rng.integers(1, cfg.backbone.vocab_size, n)) for n in lengths])
    inputs, _ = pack_encoder_inputs(rows, cfg, row_len=shape.encoder_len, stage_lens=shape.stage_lens(cfg),
                                    output_len=cfg.n_memory_tokens * shape.max_contexts_per_row or None)
    return inputs


def xla_flops(fn, *args, compiled: bool = False) -> float:
    lowered = jax.jit(fn).lower(*args)
    return (lowered.compile() if compiled else lowered).cost_analysis()["flops"]


def abstract_params(module: nn.Module, *args):
    return nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *args)["params"])


def encoder_case(cfg: EncoderConfig, decoder_index: int = 0):
    """(table fn, params shapes, inputs) of `ARCEncoder.compressed_table` on a SHAPE batch."""
    inputs = encoder_inputs(cfg, SHAPE)
    model = ARCEncoder(cfg)
    params = abstract_params(model, inputs)

    def table(p, x):
        return model.apply({"params": p}, x, decoder_index, method=ARCEncoder.compressed_table)

    return table, params, inputs


def encoder_forward(cfg: EncoderConfig, decoder_index: int = 0) -> float:
    w, a = flops.encoder_forward_flops(cfg, SHAPE)
    return w + a + flops.projector_forward_flops(cfg, SHAPE, decoder_index)


@pytest.mark.parametrize("cfg,decoder_index", [(POOLED, 0), (POOLED, 1), (TINY, 0), (MEMORY, 0)],
                         ids=["two-pooling-layers", "second-projector", "tiny-cpu", "memory-tokens"])
def test_encoder_forward_matches_xla(cfg, decoder_index):
    table, params, inputs = encoder_case(cfg, decoder_index)
    out_rows = jax.eval_shape(table, params, inputs).shape[0]
    assert out_rows == SHAPE.encoder_rows * flops.encoder_output_len(cfg, SHAPE) + 2
    if cfg.compress_rates:
        assert [s.segment_ids.shape[1] for s in inputs.stages] == flops.encoder_stage_lens(cfg, SHAPE)
    ratio = xla_flops(table, params, inputs) / encoder_forward(cfg, decoder_index)
    assert MIN_RATIO <= ratio <= MAX_RATIO, ratio


def test_pooled_layers_are_counted_on_pooled_positions():
    """Counting the pooling layers at full length would be far outside the tolerance."""
    table, params, inputs = encoder_case(POOLED)
    xla = xla_flops(table, params, inputs)
    b, n = POOLED.backbone, SHAPE.encoder_len
    w, a = flops.block_matmul_flops(b, SHAPE.encoder_rows, n, n)
    unpooled = b.n_layers * (w + a) + flops.projector_forward_flops(POOLED, SHAPE)
    assert xla / unpooled < MIN_RATIO / 1.3
    assert MIN_RATIO <= xla / encoder_forward(POOLED) <= MAX_RATIO


def test_encoder_backward_is_twice_forward():
    table, params, inputs = encoder_case(POOLED)
    forward = xla_flops(table, params, inputs)
    grad = xla_flops(jax.grad(lambda p, x: jnp.sum(jnp.square(table(p, x)))), params, inputs)
    assert 2.9 <= grad / forward <= 3.1, grad / forward
    counted = flops.train_step_flops(POOLED, DECODER, SHAPE)
    ratio = grad / (counted["encoder"] + counted["projector"])
    assert MIN_RATIO <= ratio <= MAX_RATIO, ratio


def decoder_case(cfg: BackboneConfig):
    """(logits fn, params shapes, table shape) of `Decoder.__call__` on a SHAPE batch."""
    rng = np.random.default_rng(0)
    b, t = SHAPE.decoder_rows, SHAPE.decoder_len
    n_table = SHAPE.encoder_rows * flops.encoder_output_len(POOLED, SHAPE) + 2
    tokens = rng.integers(1, cfg.vocab_size, (b, t)).astype(np.int32)
    segment_ids = np.ones((b, t), np.int32)
    positions = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy()
    compressed_index = np.full((b, t), -1, np.int32)
    compressed_index[:, :40] = rng.integers(0, n_table, (b, 40))
    table = jax.ShapeDtypeStruct((n_table, cfg.dim), jnp.float32)
    model = Decoder(cfg)
    params = abstract_params(model, tokens, segment_ids, positions, table, compressed_index)

    def logits(p, compressed, logit_slots=None):
        return model.apply({"params": p}, tokens, segment_ids, positions, compressed, compressed_index, logit_slots)

    return logits, params, table, tokens


def test_decoder_forward_matches_xla():
    logits, params, table, _ = decoder_case(DECODER)
    w, a = flops.decoder_forward_flops(DECODER, SHAPE)
    xla = xla_flops(logits, params, table)
    assert MIN_RATIO <= xla / (w + a) <= MAX_RATIO, xla / (w + a)
    assert xla_flops(logits, params, table, compiled=True) == pytest.approx(xla, rel=0.01)


def test_decoder_forward_with_a_loss_buffer_matches_xla():
    """The head on 32 listed slots a row instead of all 256 (a vocabulary large enough that the
    difference is far outside the tolerance)."""
    cfg = dataclasses.replace(DECODER, vocab_size=2048)
    shape = dataclasses.replace(SHAPE, loss_slots=32)
    logits, params, table, _ = decoder_case(cfg)
    slots = np.tile(np.arange(32, dtype=np.int32) * 7, (shape.decoder_rows, 1))
    listed = lambda p, compressed: logits(p, compressed, slots)
    w, a = flops.decoder_forward_flops(cfg, shape)
    xla = xla_flops(listed, params, table)
    assert MIN_RATIO <= xla / (w + a) <= MAX_RATIO, xla / (w + a)
    w_all, a_all = flops.decoder_forward_flops(cfg, SHAPE)
    assert xla / (w_all + a_all) < MIN_RATIO / 1.3


def test_frozen_decoder_backward_to_inputs():
    """Weight matmuls 2x forward, attention matmuls 3x (both operands are activations)."""
    logits, params, table, tokens = decoder_case(DECODER)

    def loss(compressed, p):  # differentiated with respect to the compressed table only, as in the train step
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, compressed), tokens).sum()

    xla = xla_flops(jax.grad(loss), table, params)
    counted = flops.train_step_flops(POOLED, DECODER, SHAPE)["decoder"]
    assert MIN_RATIO <= xla / counted <= MAX_RATIO, xla / counted
    w, a = flops.decoder_forward_flops(DECODER, SHAPE)
    assert xla / (2 * (w + a)) > MAX_RATIO  # "2x forward" would miss the attention input grads


def test_block_flops_by_hand():
    cfg = BackboneConfig(dim=4, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=2, hidden_dim=8, vocab_size=10)
    # wq 3*4*4 + wk, wv 2*5*4*2 + wo 3*4*4 + ffn 3*3*4*8, and 2 * (Q.K^T, P.V) 3*5*(2*2)
    assert flops.block_matmul_flops(cfg, rows=1, q_len=3, kv_len=5) == (2.0 * (48 + 80 + 48 + 288), 2.0 * 2 * 60)


def test_train_step_composition_and_layer_scaling():
    counted = flops.train_step_flops(POOLED, DECODER, SHAPE, decoder_index=1)
    assert counted["total"] == pytest.approx(counted["encoder"] + counted["projector"] + counted["decoder"])
    assert counted["projector"] == 3 * flops.projector_forward_flops(POOLED, SHAPE, 1)
    # The embedding lookup costs nothing; the output head counts (forward and input grads).
    w, a = flops.decoder_forward_flops(DECODER, SHAPE)
    # The decoder's rows of 256 are block-causal: 8 chunks of 32, each query scored against 144 keys.
    lw, la = flops.block_matmul_flops(DECODER, SHAPE.decoder_rows, SHAPE.decoder_len, SHAPE.decoder_len, keys=144)
    head = 2 * SHAPE.decoder_rows * SHAPE.decoder_len * DECODER.dim * DECODER.vocab_size
    assert (w, a) == (lw + head, la)

    # Doubling the decoder's layers doubles everything but its head.
    double = flops.train_step_flops(POOLED, dataclasses.replace(DECODER, n_layers=2), SHAPE)
    assert double["decoder"] - 2 * head == pytest.approx(2 * (counted["decoder"] - 2 * head))
    # Each extra plain encoder layer adds one full-length block, 3x for forward and backward.
    deeper = dataclasses.replace(POOLED, backbone=dataclasses.replace(BACKBONE, n_layers=5))
    ew, ea = flops.block_matmul_flops(BACKBONE, SHAPE.encoder_rows, SHAPE.encoder_len, SHAPE.encoder_len)
    gained = flops.train_step_flops(deeper, DECODER, SHAPE)["encoder"] - counted["encoder"]
    assert gained == pytest.approx(3 * 2 * (ew + ea))

    # The attention share: the encoder's attention 3x, the frozen decoder's attention 3x.
    _, enc_a = flops.encoder_forward_flops(POOLED, SHAPE)
    assert counted["attention"] == pytest.approx(3 * enc_a + 3 * a) and counted["attention"] < counted["total"]

    # Accumulation repeats the step's work; a frozen encoder only runs forward.
    accum = flops.train_step_flops(POOLED, DECODER, SHAPE, decoder_index=1, grad_accum=4, encoder_frozen=True)
    assert accum["decoder"] == 4 * counted["decoder"] and accum["projector"] == 4 * counted["projector"]
    assert accum["encoder"] == pytest.approx(4 / 3 * counted["encoder"])
    assert accum["attention"] == pytest.approx(4 * (enc_a + 3 * a))

    with pytest.raises(ValueError, match="grad_accum"):
        flops.train_step_flops(POOLED, DECODER, SHAPE, grad_accum=0)
    with pytest.raises(ValueError, match="decoder_index"):
        flops.train_step_flops(POOLED, DECODER, SHAPE, decoder_index=2)


def test_mfu():
    assert flops.mfu(6e12, 2.0, 1e13) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        flops.mfu(1.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        flops.mfu(1.0, 1.0, 0.0)


def test_measure_matmul_peak_on_cpu():
    peak = flops.measure_matmul_peak("float32", size=128, repeats=2, min_seconds=0.01)
    assert math.isfinite(peak) and peak > 0
