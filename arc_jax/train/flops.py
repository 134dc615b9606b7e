"""Model FLOPs of one train step, counted analytically, and the measured matmul peak for MFU.

Convention (the MaxText / PaLM one, specialised to this model):

- A matmul [a, b] x [b, c] costs 2abc FLOPs. Only matmuls are counted: norms, softmax, RoPE,
  masking, pooling (a segment mean), SwiGLU's elementwise product, gathers and the loss are
  ignored. Embedding lookups are gathers and cost nothing (their gradient is a scatter-add).
- Executed counts (`train_step_flops`) are over the full static shapes of the batch
  (`PackingShape`): padding slots and masked attention entries are counted, because the hardware
  does that work too. Attention is counted as the "xla" implementation (arc_jax/model/attention.py)
  computes it: dense [q_len x kv_len] scores per row and head, whatever the causal or segment mask,
  or [q_len x window] where the shape's spans make it attend windows, or for causal rows without
  a window the chunks up to each query's own (block-causal): `keys_per_query`.
  Useful counts (`useful_train_flops`, below) keep only the real tokens and allowed pairs.

Notation: rows B, query positions t, key/value positions s, model dim D, heads H, kv heads K,
head dim d, feed-forward width F. The forward matmul FLOPs of one block are

    W(t, s) = 2B [t·D·H·d (wq) + 2·s·D·K·d (wk, wv) + t·H·d·D (wo) + 3·t·D·F (w1, w3, w2)]
    A(t, s) = 2B · 2·t·s·H·d                                         (Q·K^T and P·V)

Encoder (L layers, the last P = len(compress_rates) pooling; n = encoder_len; row lengths
m_1 .. m_P after each pooling layer as the packer fixes them, `PackingShape.stage_lens`): its
L - P ordinary layers run at t = s = n; pooling layer i runs its queries, output projection and
feed-forward on t = m_i pooled positions while its keys and values stay on s = m_{i-1}
(m_0 = n). The memory-token baseline has no pooling layers: all L run at t = s = n.

Projector of the decoder in use (in -> hidden -> out), on the compressed table of
N = encoder_rows · out_len + 2 rows (out_len = m_P, or n_memory_tokens · max_contexts_per_row
for the memory-token baseline; + 2 for <Rec>, <Cont>):

    P = 2N (in·hidden + hidden·out)

Decoder (T = decoder_len on decoder_rows rows, L_dec layers, vocabulary V; the output head runs on
T_head = T slots a row, or on the shape's loss buffer, T_head = loss_slots, when it has one):
W_dec = L_dec · W(T, T) + 2·B·T_head·D·V (output head), A_dec = L_dec · A(T, T).

One train step:

    encoder   = 3 (W_enc + A_enc)         forward, input grads, weight grads
    projector = 3 P
    decoder   = 2 W_dec + 3 A_dec         forward and input grads only: the decoder is frozen
    total     = encoder + projector + decoder

times the number of micro-batches with gradient accumulation. A frozen encoder (`encoder_frozen`,
only the decoder's head trains) costs its forward pass, W_enc + A_enc; the projector stays at 3P
(it loses only the input grads of its first matmul, except for the two special rows).

The decoder's weight matmuls cost 2x forward (no weight-gradient matmul), but its attention
matmuls cost 3x: both operands of Q·K^T and P·V are activations, and both need a gradient.

With attention rows (the shape's `*_attention_rows`, arc_jax/model/attention_rows.py), a side's
attention runs on them instead of its rows: per group of rows, `count` rows of each `length` l
attending themselves (A(l, l) with block-causal keys where causal, as above), and pooling layer i's
pooled queries (l pooled by the factors up to i) against its keys (l pooled by those before i);
the weight matmuls stay on the packed rows. The gathers into and out of the attention rows are not
matmuls and are not counted.

What this leaves out, on purpose: rematerialisation (`remat_policy`) recomputes forward work
that model FLOPs do not count (MFU, not hardware FLOPs utilisation). The splash kernel skips the
[128 x 128] blocks of a row that hold no allowed pair: the static count takes its rows whole, and
`skipped_attention_flops` counts, from each batch, what it skipped (the trainer and `bench train`
subtract it: executed = static - skipped). Training only the last layers of the
encoder (arc_jax/train/trainable.py) masks the update, not the gradient computation, so it costs
the full 3x. `shape` is one (micro-)batch of the step, all devices together.

Useful FLOPs (`useful_train_flops`, the convention of `arc-jax bench inference`'s "useful" count):
the same formulas and the same forward / backward multipliers (3x encoder, 3x projector, frozen
decoder 2x weights + 3x attention, 1x a frozen encoder, no remat), but on what one packed batch
really holds instead of its static shape. Weight matmuls run on real (non-padding) slots only:
encoder layers on the real tokens of every row and, in pooling layer i, on the real pooled
queries (keys and values on the previous stage's real slots); the projector on the table rows
the decoder reads (the contexts' vectors and the special vectors used); decoder layers on real
slots (text, compressed vectors, special vectors); the output head on the loss tokens only (the
logits the loss reads, as bench inference counts the prefill's logits at its last position).
Attention runs over exactly the (query, key) pairs `attention.attention_mask` allows
(`allowed_pairs`): every pair within a text in a bidirectional encoder, key position <= query
position within a text when causal (a causal sequence of L positions: L(L+1)/2 pairs), so the
causal decoder's sample of L slots costs L(L+1)/2 pairs where the executed count runs L_row².
`train_step_flops` above is the executed count: useful <= executed, and the ratio shows what
padding, dense masked attention and the head on every slot (without a loss buffer) cost. The trainer and bench train
count each batch on the host from its numpy arrays before it goes to the devices (no device round
trip); with several processes each counts its own rows and the reports sum over processes
(`multihost.sum_over_processes`). Memory-token encoders count their memory tokens as real slots.

The MFU reference for `arc-jax bench train` is `measure_matmul_peak`, the best measured rate of
one large square matmul on one device, not a datasheet number; a step run over several devices
compares with the device count times that peak: mfu(total, seconds per step, devices x peak).
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.data.packing import PackingShape, TrainBatch
from arc_jax.model.attention import SPLASH_BLOCK, keys_per_query, splash_blocks
from arc_jax.model.config import BackboneConfig, EncoderConfig
from arc_jax.model.inputs import EncoderInputs
from arc_jax.model.pooling import pooled_length


def block_matmul_flops(cfg: BackboneConfig, rows: int, q_len: int, kv_len: int, keys: float | None = None
                       ) -> tuple[float, float]:
    """Forward (weight, attention) matmul FLOPs of one block: W(t, s) and A(t, s) above; `keys`:
    the keys each query is scored against when not all kv_len (windowed attention)."""
    d_attn, d_kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    weights = 2 * rows * (q_len * cfg.dim * d_attn + 2 * kv_len * cfg.dim * d_kv + q_len * d_attn * cfg.dim
                          + 3 * q_len * cfg.dim * cfg.hidden_dim)
    attention = 2 * rows * 2 * q_len * (kv_len if keys is None else keys) * d_attn
    return float(weights), float(attention)


def encoder_stage_lens(cfg: EncoderConfig, shape: PackingShape) -> list[int]:
    """Row length after each pooling layer of a batch of this shape (empty without pooling)."""
    return shape.stage_lens(cfg) if cfg.compress_rates else []


def encoder_output_len(cfg: EncoderConfig, shape: PackingShape) -> int:
    """Encoder output vectors per row, as the packer lays out the compressed table."""
    if cfg.n_memory_tokens:
        return cfg.n_memory_tokens * shape.max_contexts_per_row
    stages = encoder_stage_lens(cfg, shape)
    return stages[-1] if stages else shape.encoder_len


def _attention_rows_flops(cfg: BackboneConfig, spec: tuple[tuple[int, int], ...], groups: int, causal: bool,
                          windowed: bool, pooled_by: tuple[int, ...] = (), keys_pooled_by: tuple[int, ...] | None = None
                          ) -> float:
    """Forward attention matmul FLOPs of one layer in attention rows (arc_jax/model/attention_rows.py):
    `count` rows of `length` a group, queries at `pooled_by` pooling factors of the lengths, keys at
    `keys_pooled_by` (the same when None: a text attending itself, in block-causal chunks when causal
    on the "xla" path, `windowed`, else whole)."""
    total = 0.0
    for count, length in spec:
        q_len = pooled_length(length, pooled_by)
        if keys_pooled_by is None:
            keys = keys_per_query(q_len, 0, causal) if windowed else None
            total += block_matmul_flops(cfg, groups * count, q_len, q_len, keys)[1]
        else:
            total += block_matmul_flops(cfg, groups * count, q_len, pooled_length(length, keys_pooled_by))[1]
    return total


def encoder_forward_flops(cfg: EncoderConfig, shape: PackingShape, windowed: bool = True,
                          rows_windowed: bool = True) -> tuple[float, float]:
    """Forward (weight, attention) matmul FLOPs of the encoder backbone (projector excluded);
    `windowed`: its attention reads the windows of the shape's span, or block-causal chunks (the
    "xla" implementation: `keys_per_query`); otherwise whole rows. With attention rows, attention
    runs on them instead of the rows, in block-causal chunks where `rows_windowed` (all but
    "jax_nn": splash attends them on the "xla" path)."""
    b, rows, n = cfg.backbone, shape.encoder_rows, shape.encoder_len
    stages = encoder_stage_lens(cfg, shape)
    spec, groups = shape.encoder_attention_rows, shape.attention_groups
    keys = keys_per_query(n, shape.encoder_text_len, cfg.causal) if windowed else None
    w, a = block_matmul_flops(b, rows, n, n, keys)
    if spec:
        a = _attention_rows_flops(b, spec, groups, cfg.causal, rows_windowed)
    n_plain = b.n_layers - len(stages)
    weights, attention = n_plain * w, n_plain * a
    kv_len = n
    for i, q_len in enumerate(stages):
        w, a = block_matmul_flops(b, rows, q_len, kv_len)
        if spec:
            factors = cfg.pooling_factors
            a = _attention_rows_flops(b, spec, groups, cfg.causal, rows_windowed, factors[:i + 1], factors[:i])
        weights, attention = weights + w, attention + a
        kv_len = q_len
    return weights, attention


def projector_forward_flops(cfg: EncoderConfig, shape: PackingShape, decoder_index: int = 0) -> float:
    """Forward FLOPs of decoder `decoder_index`'s projector on the compressed table."""
    p = cfg.projectors[decoder_index]
    table_rows = shape.encoder_rows * encoder_output_len(cfg, shape) + 2
    return float(2 * table_rows * (p.in_dim * p.hidden_dim + p.hidden_dim * p.out_dim))


def decoder_forward_flops(cfg: BackboneConfig, shape: PackingShape, windowed: bool = True,
                          rows_windowed: bool = True) -> tuple[float, float]:
    """Forward (weight, attention) matmul FLOPs of the decoder, output head (on the shape's
    `head_slots` a row) in the weights; `windowed` and `rows_windowed` as for the encoder."""
    rows, t = shape.decoder_rows, shape.decoder_len
    keys = keys_per_query(t, shape.decoder_sample_len, causal=True) if windowed else None
    w, a = block_matmul_flops(cfg, rows, t, t, keys)
    if shape.decoder_attention_rows:
        a = _attention_rows_flops(cfg, shape.decoder_attention_rows, shape.attention_groups, True, rows_windowed)
    head = 2 * rows * shape.head_slots * cfg.dim * cfg.vocab_size
    return cfg.n_layers * w + head, cfg.n_layers * a


def train_step_flops(enc_cfg: EncoderConfig, dec_cfg: BackboneConfig, shape: PackingShape,
                     decoder_index: int = 0, *, encoder_frozen: bool = False, grad_accum: int = 1,
                     attention_impl: str = "xla") -> dict[str, float]:
    """Model FLOPs of one train step, by part (see the module docstring): encoder, projector,
    decoder, their total, and "attention", the attention matmuls of all parts (within the total).

    `grad_accum` micro-batches of `shape` make the step; `encoder_frozen` (only the decoder's head
    trains) leaves the encoder its forward pass. Only the "xla" `attention_impl` attends the windows
    of the shape's spans (arc_jax/model/attention.py); the kernels score whole rows."""
    if not 0 <= decoder_index < enc_cfg.n_decoders:
        raise ValueError(f"decoder_index={decoder_index} but the encoder has {enc_cfg.n_decoders} projectors")
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
    windowed, rows_windowed = attention_impl == "xla", attention_impl != "jax_nn"
    enc_w, enc_a = encoder_forward_flops(enc_cfg, shape, windowed, rows_windowed)
    dec_w, dec_a = decoder_forward_flops(dec_cfg, shape, windowed, rows_windowed)
    encoder_passes = 1 if encoder_frozen else 3
    out = {
        "encoder": grad_accum * encoder_passes * (enc_w + enc_a),
        "projector": grad_accum * 3 * projector_forward_flops(enc_cfg, shape, decoder_index),
        "decoder": grad_accum * (2 * dec_w + 3 * dec_a),
    }
    out["total"] = sum(out.values())
    # Included in the parts above: what a fused attention kernel (splash) runs, which XLA's cost
    # analysis of a compiled program leaves out.
    out["attention"] = grad_accum * (encoder_passes * enc_a + 3 * dec_a)
    return out


def allowed_pairs(q_segment_ids, q_positions, kv_segment_ids, kv_positions, causal: bool) -> int:
    """The (query, key) pairs `attention.attention_mask` allows, summed over rows and counted without
    building the mask: a query of segment s > 0 attends the keys of segment s (those at positions <=
    its own when `causal`). Arrays are [rows, q_len] and [rows, kv_len] (any leading axes)."""
    q_seg, kv_seg = np.asarray(q_segment_ids), np.asarray(kv_segment_ids)
    q_pos, kv_pos = np.asarray(q_positions), np.asarray(kv_positions)
    q_seg, q_pos = q_seg.reshape(-1, q_seg.shape[-1]), q_pos.reshape(-1, q_pos.shape[-1])
    kv_seg, kv_pos = kv_seg.reshape(-1, kv_seg.shape[-1]), kv_pos.reshape(-1, kv_pos.shape[-1])
    # One sortable key per (row, segment, position): keys of a query's segment form one run.
    n_seg = int(max(q_seg.max(initial=0), kv_seg.max(initial=0))) + 1
    n_pos = int(max(q_pos.max(initial=0), kv_pos.max(initial=0))) + 1
    kv_rows = np.broadcast_to(np.arange(len(kv_seg))[:, None], kv_seg.shape)
    kv_real = kv_seg > 0
    kv_keys = np.sort(((kv_rows[kv_real].astype(np.int64) * n_seg + kv_seg[kv_real]) * n_pos + kv_pos[kv_real]))
    q_rows = np.broadcast_to(np.arange(len(q_seg))[:, None], q_seg.shape)
    q_real = q_seg > 0
    base = (q_rows[q_real].astype(np.int64) * n_seg + q_seg[q_real]) * n_pos
    last = base + (q_pos[q_real] if causal else n_pos - 1)
    return int((np.searchsorted(kv_keys, last, "right") - np.searchsorted(kv_keys, base, "left")).sum())


def _micro_batches(batch: TrainBatch) -> list[TrainBatch]:
    """A step's micro-batches: the batch itself, or its slices along a leading micro-batch axis."""
    if batch.tokens.ndim == 2:
        return [batch]
    return [jax.tree.map(lambda x, g=g: x[g], batch) for g in range(batch.tokens.shape[0])]


def encoder_useful_forward_flops(cfg: EncoderConfig, inputs: EncoderInputs) -> tuple[float, float]:
    """Forward (weight, attention) matmul FLOPs of the encoder backbone on one batch's real tokens
    (module docstring: useful FLOPs)."""
    b = cfg.backbone
    if len(inputs.stages) != len(cfg.compress_rates):
        raise ValueError(f"{len(inputs.stages)} pooling stages in the batch for {len(cfg.compress_rates)} pooling layers")
    per_pair = block_matmul_flops(b, 1, 1, 1)[1]
    seg, pos = inputs.segment_ids, inputs.positions
    n = int((seg > 0).sum())
    n_plain = b.n_layers - len(inputs.stages)
    weights = n_plain * block_matmul_flops(b, 1, n, n)[0]
    attention = n_plain * per_pair * allowed_pairs(seg, pos, seg, pos, cfg.causal) if n_plain else 0.0
    for stage in inputs.stages:
        m = int((stage.segment_ids > 0).sum())
        weights += block_matmul_flops(b, 1, m, n)[0]
        attention += per_pair * allowed_pairs(stage.segment_ids, stage.positions, seg, pos, cfg.causal)
        seg, pos, n = stage.segment_ids, stage.positions, m
    return float(weights), float(attention)


def projector_useful_forward_flops(cfg: EncoderConfig, batch: TrainBatch, decoder_index: int = 0) -> float:
    """Forward FLOPs of the projector on the table rows the decoder reads (each context's vectors
    once, each special vector used once)."""
    p = cfg.projectors[decoder_index]
    index = np.asarray(batch.compressed_index)
    read = sum(len(np.unique(micro[micro >= 0])) for micro in index.reshape(-1, *index.shape[-2:]))
    return float(2 * read * (p.in_dim * p.hidden_dim + p.hidden_dim * p.out_dim))


def decoder_useful_forward_flops(cfg: BackboneConfig, batch: TrainBatch) -> tuple[float, float]:
    """Forward (weight, attention) matmul FLOPs of the decoder on one batch's real slots, causal
    within each sample, the output head on the loss tokens."""
    seg, pos = batch.segment_ids, batch.positions
    t = int((np.asarray(seg) > 0).sum())
    head = 2 * int((np.asarray(batch.loss_mask) > 0).sum()) * cfg.dim * cfg.vocab_size
    weights = cfg.n_layers * block_matmul_flops(cfg, 1, t, t)[0] + head
    attention = cfg.n_layers * block_matmul_flops(cfg, 1, 1, 1)[1] * allowed_pairs(seg, pos, seg, pos, causal=True)
    return float(weights), float(attention)


def useful_train_flops(enc_cfg: EncoderConfig, dec_cfg: BackboneConfig, batch: TrainBatch, decoder_index: int = 0,
                       *, encoder_frozen: bool = False) -> dict[str, float]:
    """Useful FLOPs of one train step on the host `batch` (numpy; a leading micro-batch axis when the
    step accumulates gradients), by part as `train_step_flops` gives the executed ones: encoder,
    projector, decoder, total and attention (within the total)."""
    out = {"encoder": 0.0, "projector": 0.0, "decoder": 0.0, "attention": 0.0}
    encoder_passes = 1 if encoder_frozen else 3
    for micro in _micro_batches(batch):
        enc_w, enc_a = encoder_useful_forward_flops(enc_cfg, micro.encoder)
        dec_w, dec_a = decoder_useful_forward_flops(dec_cfg, micro)
        out["encoder"] += encoder_passes * (enc_w + enc_a)
        out["projector"] += 3 * projector_useful_forward_flops(enc_cfg, micro, decoder_index)
        out["decoder"] += 2 * dec_w + 3 * dec_a
        out["attention"] += encoder_passes * enc_a + 3 * dec_a
    out["total"] = out["encoder"] + out["projector"] + out["decoder"]
    return out


def skipped_attention_flops(enc_cfg: EncoderConfig, dec_cfg: BackboneConfig, batch: TrainBatch, *,
                            attention_impl: str, encoder_frozen: bool = False) -> float:
    """FLOPs of one train step on the host `batch` that `train_step_flops` counts for `attention_impl`
    and the step does not run: 0 but for "splash", whose rows the static count takes whole (every
    (query, key) pair of each row attending itself) and whose kernel skips its [128 x 128] blocks
    that hold no allowed pair (`attention.splash_blocks`), in the encoder's layers before pooling and
    every decoder layer, forward and backward as counted there. The executed FLOPs of a step are the
    static count less these (negative where padding a row to the blocks adds more than is skipped)."""
    if attention_impl != "splash":
        return 0.0
    enc, block = enc_cfg.backbone, SPLASH_BLOCK
    encoder_passes = 1 if encoder_frozen else 3
    n_plain = enc.n_layers - len(enc_cfg.compress_rates)
    skipped = 0.0
    for micro in _micro_batches(batch):
        inputs = micro.encoder
        rows, n = np.shape(inputs.segment_ids)
        enc_pairs = rows * n * n - block * block * splash_blocks(inputs.segment_ids, inputs.positions, enc_cfg.causal)
        rows, t = np.shape(micro.segment_ids)
        dec_pairs = rows * t * t - block * block * splash_blocks(micro.segment_ids, micro.positions, causal=True)
        # Attention rows run on the "xla" path, counted as such.
        enc_pairs *= inputs.attention_rows is None
        dec_pairs *= micro.attention_rows is None
        skipped += (encoder_passes * n_plain * block_matmul_flops(enc, 1, 1, 1)[1] * enc_pairs
                    + 3 * dec_cfg.n_layers * block_matmul_flops(dec_cfg, 1, 1, 1)[1] * dec_pairs)
    return float(skipped)


def batch_counts(batch: TrainBatch) -> dict[str, int]:
    """What a host batch holds (any leading micro-batch axis summed over): real encoder tokens and
    encoder slots, real decoder slots (text, compressed and special vectors) and decoder slots,
    decoder text tokens (real slots that read a token) and loss tokens. Fills: tokens over slots."""
    enc_seg, seg = np.asarray(batch.encoder.segment_ids), np.asarray(batch.segment_ids)
    real = seg > 0
    return {"encoder_tokens": int((enc_seg > 0).sum()), "encoder_slots": int(enc_seg.size),
            "decoder_tokens": int(real.sum()), "decoder_slots": int(seg.size),
            "text_tokens": int((real & (np.asarray(batch.compressed_index) < 0)).sum()),
            "loss_tokens": int((np.asarray(batch.loss_mask) > 0).sum())}


def mfu(flops_per_step: float, seconds_per_step: float, peak_flops_per_second: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the peak (both for the same set of devices)."""
    if seconds_per_step <= 0 or peak_flops_per_second <= 0:
        raise ValueError(f"seconds_per_step={seconds_per_step} and peak_flops_per_second={peak_flops_per_second} "
                         "must be positive")
    return flops_per_step / seconds_per_step / peak_flops_per_second


def measure_matmul_peak(dtype="float32", size: int | None = None, repeats: int = 5,
                        min_seconds: float = 0.05) -> float:
    """Measured peak FLOP/s of one device: a jitted [size, size] x [size, size] matmul.

    The reference for MFU in `arc-jax bench train`. `size` defaults to 2048 on CPU and 8192 on
    accelerators. After a warm-up (compilation) call, each of `repeats` timings dispatches enough
    back-to-back matmuls to run at least `min_seconds` and blocks on the last one; the best
    timing wins. The rate is that of the default matmul precision (TF32 for float32 on recent
    NVIDIA GPUs unless jax_default_matmul_precision says otherwise), as the model's matmuls get.
    """
    dtype = jnp.dtype(dtype)
    if size is None:
        size = 2048 if jax.default_backend() == "cpu" else 8192
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (size, size), dtype)
    y = jax.random.normal(ky, (size, size), dtype)
    matmul = jax.jit(jnp.matmul)
    matmul(x, y).block_until_ready()  # compile

    start = time.perf_counter()
    matmul(x, y).block_until_ready()
    calls = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-9)))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = matmul(x, y)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - start) / calls)
    return 2 * size**3 / best
