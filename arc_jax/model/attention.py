"""The one attention function every layer calls, so a fused kernel can be swapped in per backend.

Masking is described by segment ids and positions, never by a dense mask from the caller:
- a query attends a key only when both carry the same segment id, and id 0 (padding) attends
  nothing and is attended by nothing;
- causal attention additionally requires key position <= query position. Positions restart at 0
  for each packed sequence, so this is causal within a segment. Pooled queries carry positions
  0..m-1 against keys 0..n-1, which reproduces the reference's "top-left" causal pooling mask.

Implementations:
- "xla": plain einsum + float32 softmax; the reference path, used by the CPU tests.
- "jax_nn": `jax.nn.dot_product_attention` with cuDNN's fused flash attention on a GPU for
  bfloat16/float16 inputs (the mask becomes its additive bias; a causal prompt needs none, and
  rows holding one text each pass their lengths instead), and its XLA implementation elsewhere
  (jax's own default is XLA everywhere, so it is asked by name).
- windowed (the "xla" path given a `span`, for training's packed rows): when no text of a row is
  longer than `span` slots, a query can only see keys within span - 1 slots of it. The row is cut
  into chunks of `chunk` slots and each query chunk attends only its own and the `reach` >= span - 1
  slots before it (and after it, when not causal) that can hold its text: [t x t] scores per row
  become [t x (chunk + reach)] (causal) or [t x (chunk + 2 reach)]. The packer enforces the span
  (arc_jax/data/packing.py); every allowed (query, key) pair lies in the window, so the result
  equals the dense path's (up to the order of float sums).
- block-causal (the "xla" path for causal attention of a packed row on itself where no window
  applies): the row is cut into `block_causal_chunk` chunks and query chunk j is scored only
  against key chunks 0..j, since a causal query never sees a later slot. n chunks compute
  (n + 1) / 2n of the dense [t x t] scores (62.5% at 4 chunks) and give the dense result.
- "splash": the Pallas splash-attention kernel for TPU (run by the Pallas interpreter elsewhere,
  which is how the CPU tests check it), for a packed row attending itself (pooled-query layers use
  the "xla" path). Each row's mask is built on the device from its segment ids and positions (the
  rule above) and given to the kernel as a dynamic mask: the kernel skips every [128 x 128] block
  of (query, key) pairs that holds no allowed pair, so a row of many short texts costs about the
  blocks along its texts' diagonals instead of the whole causal triangle (`splash_blocks` counts
  them on the host). A query block of padding only is skipped whole and would come out 0 / 0: its
  output is set to 0. A row that is not a multiple of the blocks is padded to one inside the
  attention only (the rest of the layer runs on the row's own length).
"""

from __future__ import annotations

import functools
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from arc_jax.model.attention_rows import AttentionRows, attend_in_rows

AttentionImpl = Literal["xla", "jax_nn", "splash"]
SPLASH_BLOCK = 128

# Large but finite: a fully masked row (a padding query) then gets a uniform softmax instead of
# NaNs; its output is ignored downstream.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention_mask(q_segment_ids, kv_segment_ids, q_positions, kv_positions, causal: bool):
    """Boolean mask [batch, q_len, kv_len]: True where the query may attend the key."""
    same = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    mask = same & (kv_segment_ids[:, None, :] != 0)
    if causal:
        mask &= kv_positions[:, None, :] <= q_positions[:, :, None]
    return mask


def _xla_attention(q, k, v, mask):
    b, t, h, d = q.shape
    n_kv = k.shape[2]
    q = q.reshape(b, t, n_kv, h // n_kv, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    logits = logits * (d**-0.5)
    logits = jnp.where(mask[:, None, None], logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


_MAX_PIECES = 32  # a window is one concatenation of this many slices at most (a chunk of 37 slots has pieces of 1)


def _window_piece(chunk: int) -> int:
    return max(p for p in range(1, min(chunk, 16) + 1) if chunk % p == 0)


def span_window(row_len: int, span: int, causal: bool, min_chunk: int = 32) -> tuple[int, int] | None:
    """(chunk, reach) of windowed attention over rows of `row_len` slots whose texts are at most
    `span` slots long, or None where dense attention reads no more keys per query.

    A query sees keys at most span - 1 slots away, so a chunk of queries needs the `reach` >= span - 1
    slots before it (and after it, bidirectional) besides its own. The reach is a whole number of
    the chunk's pieces (its largest divisor of at most 16 slots), which the window is cut from, in at
    most `_MAX_PIECES` pieces. The chunk is the divisor of `row_len` (at least `min_chunk`, so that the
    matmuls stay large) that reads the fewest keys per query, the larger one on ties."""
    if span <= 0 or span >= row_len:
        return None
    best = None
    for chunk in range(min(min_chunk, row_len), row_len + 1):
        if row_len % chunk:
            continue
        piece = _window_piece(chunk)
        reach = -(-(span - 1) // piece) * piece
        keys = _window_keys(chunk, reach, causal)
        if (best is None or keys <= best[0]) and keys // piece <= _MAX_PIECES:
            best = (keys, chunk, reach)
    if best is None or best[0] >= row_len:
        return None
    return best[1], best[2]


def block_causal_chunk(row_len: int, min_chunk: int = 16, max_chunks: int = 8) -> int | None:
    """The chunk of block-causal attention over rows of `row_len` slots: the smallest divisor of the
    row into at most `max_chunks` chunks of at least `min_chunk` slots (each chunk costs a few more,
    smaller ops), or None where the row cannot be cut in two. Measured on this project's CPU (one
    layer's attention, forward and backward): rows of 256 in 8 chunks of 32 took 0.84x the time of 4
    chunks of 64, rows of 84 in 4 chunks of 21 0.84x the dense square; 12 chunks of 14 on rows of 168
    took 1.2x 8 chunks of 21."""
    for n in range(max_chunks, 1, -1):
        if row_len % n == 0 and row_len // n >= min_chunk:
            return row_len // n
    return None


def keys_per_query(row_len: int, span: int, causal: bool) -> float:
    """Keys each query's scores are computed against on the "xla" path, on average over a row's
    queries: the row, its window, or (block-causal) the chunks up to the query's own."""
    window = span_window(row_len, span, causal)
    if window is not None:
        return _window_keys(*window, causal)
    chunk = block_causal_chunk(row_len) if causal else None
    return row_len if chunk is None else (row_len + chunk) / 2


def _window_keys(chunk: int, reach: int, causal: bool) -> int:
    return chunk + (reach if causal else 2 * reach)


def _windows(x, chunk: int, before: int, after: int):
    """x [b, h, t, ...] -> [b, h, t / chunk, before + chunk + after, ...]: for each chunk of slots, the
    `before` slots preceding it, its own and the `after` following, zero past the row's ends (a zero
    segment id is padding, which the mask drops). Concatenated from strided slices of pieces of the
    row (`_window_piece`), each a plain copy."""
    b, h, t = x.shape[:3]
    piece = _window_piece(chunk)
    per_chunk, n = chunk // piece, t // chunk
    padded = jnp.pad(x, [(0, 0), (0, 0), (before, after)] + [(0, 0)] * (x.ndim - 3))
    pieces = padded.reshape(b, h, (before + t + after) // piece, piece, *x.shape[3:])
    return jnp.concatenate([pieces[:, :, o:o + per_chunk * (n - 1) + 1:per_chunk]
                            for o in range((before + chunk + after) // piece)], axis=3)


def _windowed_attention(q, k, v, segment_ids, positions, causal: bool, chunk: int, reach: int):
    """Attention of a packed row on itself, each query chunk against its window of keys (module
    docstring); the same mask rule as `attention_mask`, in the window. Heads lead the chunks, so
    that XLA's batched matmuls read q, k and v without further copies."""
    b, t, h, d = q.shape
    n_kv, n = k.shape[2], t // chunk
    after = 0 if causal else reach
    q = q.reshape(b, n, chunk, n_kv, h // n_kv, d).transpose(0, 3, 1, 4, 2, 5)  # [b, kv, n, group, chunk, d]
    k, v = (_windows(x.transpose(0, 2, 1, 3), chunk, reach, after) for x in (k, v))  # [b, kv, n, w, d]
    kv_seg, kv_pos = (_windows(x[:, None], chunk, reach, after)[:, 0] for x in (segment_ids, positions))  # [b, n, w]
    q_seg, q_pos = segment_ids.reshape(b, n, chunk), positions.reshape(b, n, chunk)
    mask = (q_seg[..., None] == kv_seg[:, :, None, :]) & (kv_seg[:, :, None, :] != 0)  # [b, n, chunk, w]
    if causal:
        mask &= kv_pos[:, :, None, :] <= q_pos[..., None]
    logits = jnp.einsum("bkngcd,bknwd->bkngcw", q, k, preferred_element_type=jnp.float32) * (d**-0.5)
    logits = jnp.where(mask[:, None, :, None], logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkngcw,bknwd->bkngcd", probs, v)
    return out.transpose(0, 2, 4, 1, 3, 5).reshape(b, t, h, d)


def _block_causal_attention(q, k, v, segment_ids, positions, chunk: int):
    """Causal attention of a packed row on itself, query chunk j against key chunks 0..j (module
    docstring): keys after a query's chunk are later slots, which the causal rule masks anyway."""
    outs = []
    for end in range(chunk, q.shape[1] + 1, chunk):
        qs = slice(end - chunk, end)
        mask = attention_mask(segment_ids[:, qs], segment_ids[:, :end], positions[:, qs], positions[:, :end], True)
        outs.append(_xla_attention(q[:, qs], k[:, :end], v[:, :end], mask))
    return jnp.concatenate(outs, axis=1)


def _use_cudnn(q) -> bool:
    return jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)


def _jax_nn_attention(q, k, v, mask):
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None],
                                        implementation="cudnn" if _use_cudnn(q) else "xla")


def _jax_nn_attention_by_lengths(q, k, v, q_segment_ids, kv_segment_ids, causal: bool):
    """Rows holding one sequence each at their start: the mask is each row's query and key counts,
    which cuDNN applies inside the kernel (a boolean mask becomes a dense [rows, 1, q, kv] bias
    that every head reads). An empty row keeps one key so that it stays finite; its output, like
    every padding query's, is never read."""
    q_lengths = jnp.maximum(jnp.sum(q_segment_ids != 0, axis=1, dtype=jnp.int32), 1)
    kv_lengths = jnp.maximum(jnp.sum(kv_segment_ids != 0, axis=1, dtype=jnp.int32), 1)
    return jax.nn.dot_product_attention(q, k, v, query_seq_lengths=q_lengths, key_value_seq_lengths=kv_lengths,
                                        is_causal=causal, implementation="cudnn" if _use_cudnn(q) else "xla")


def causal_prompt_attention(q, k, v, implementation: AttentionImpl = "xla") -> jax.Array:
    """Causal attention of rows that each hold one sequence from position 0 (generation's
    prefill; right padding attends only what precedes it and is never attended). The same as
    `dot_product_attention` with one segment and positions 0..t-1, without building a mask
    where the kernel knows causality (cuDNN)."""
    b, t = q.shape[:2]
    if implementation == "jax_nn" and _use_cudnn(q):
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
    ones, positions = jnp.ones((b, t), jnp.int32), jnp.broadcast_to(jnp.arange(t), (b, t))
    return dot_product_attention(q, k, v, q_segment_ids=ones, kv_segment_ids=ones, q_positions=positions,
                                 kv_positions=positions, causal=True, implementation=implementation,
                                 same_sequence=True)


def _splash_local(q, k, v, segment_ids, positions, causal: bool, interpret: bool):
    """The kernel over this device's rows and kv heads, each row with its own dynamic mask (module
    docstring). A row that is not a multiple of the kernel's blocks is padded to the next one with
    padding slots (segment id 0, attended by no real query) and cut back."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash

    b, row_len, h, d = q.shape
    pad = -row_len % SPLASH_BLOCK
    q, k, v, segment_ids, positions = (jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
                                       for x in (q, k, v, segment_ids, positions))
    t, n_kv = row_len + pad, k.shape[2]
    group = h // n_kv
    blocks = splash.BlockSizes(*(SPLASH_BLOCK,) * 8)
    q = (q * d**-0.5).reshape(b, t, n_kv, group, d).transpose(0, 2, 3, 1, 4)  # [b, kv, group, t, d]
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [b, kv, t, d]

    def one_row(q_row, k_row, v_row, seg, pos):
        mask = attention_mask(seg[None], seg[None], pos[None], pos[None], causal)  # [1, t, t]: every head's
        # One MQA kernel per kv head serves its group of query heads without repeating k and v.
        kernel = _dynamic(splash.make_splash_mqa(mask, head_shards=1, q_seq_shards=1, block_sizes=blocks,
                                                 interpret=interpret))
        out = jax.vmap(kernel)(q_row, k_row, v_row)  # [kv, group, t, d]
        return jnp.where((seg > 0)[:, None], out, 0.0)

    out = jax.vmap(one_row)(q, k, v, segment_ids, positions)  # [b, kv, group, t, d]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)[:, :row_len]


def _dynamic(kernel):
    """`kernel` with its mask infos marked dynamic by a Python bool: made under a trace (a dynamic
    mask is traced), jax 0.10's kernel holds the flag as an array, which its call then cannot branch on."""
    for name in ("fwd_mask_info", "dq_mask_info", "dkv_mask_info"):
        info = getattr(kernel, name)
        if info is not None:
            setattr(kernel, name, info._replace(is_dynamic_mask=True))
    return kernel


def splash_blocks(segment_ids, positions, causal: bool, block: int = SPLASH_BLOCK) -> int:
    """The [block x block] (query, key) blocks the "splash" path computes for packed rows attending
    themselves, summed over rows: those holding a pair `attention_mask` allows (rows padded to a
    multiple of `block`, as the kernel's are, add only skipped blocks). Host numpy, for the
    executed-FLOP count: query block i and key block j share a text, whose first slot in j is at a
    position <= its last one in i when causal."""
    seg, pos = np.asarray(segment_ids), np.asarray(positions)
    seg, pos = seg.reshape(-1, seg.shape[-1]), pos.reshape(-1, pos.shape[-1])
    total = 0
    for row_seg, row_pos in zip(seg, pos):
        real = np.flatnonzero(row_seg > 0)
        pairs = set()
        for text in np.unique(row_seg[real]):
            slots = real[row_seg[real] == text]
            blocks = slots // block
            ids = np.unique(blocks)
            first = np.array([row_pos[slots[blocks == j]].min() for j in ids])
            last = np.array([row_pos[slots[blocks == j]].max() for j in ids])
            allowed = first[None, :] <= last[:, None] if causal else np.ones((len(ids),) * 2, bool)
            q_blocks, kv_blocks = np.nonzero(allowed)
            pairs.update(zip(ids[q_blocks].tolist(), ids[kv_blocks].tolist()))
        total += len(pairs)
    return total


def _mesh_axes(mesh, logical: str, size: int) -> tuple[str, ...] | None:
    """The mesh axes the sharding rules in context give `logical`, kept while they divide `size`
    (an axis that does not is left replicated)."""
    axes = nn.logical_to_mesh_axes((logical,))[0]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept, n = [], 1
    for axis in axes:
        if axis in mesh.axis_names and size % (n * mesh.shape[axis]) == 0:
            kept.append(axis)
            n *= mesh.shape[axis]
    return tuple(kept) or None


def traced_platform() -> str:
    """The platform of the devices the function being traced is for: those of the mesh it traces
    under (the train step's, arc_jax.sharding.activation_sharding), else the default backend's."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else mesh.abstract_device
    return jax.default_backend() if device is None else device.platform


def _splash_attention(q, k, v, segment_ids, positions, causal: bool):
    """A Mosaic kernel is not partitioned by XLA: under a mesh of several devices (the train step
    traces under one, see arc_jax.sharding.activation_sharding) each device runs it on its rows
    and kv heads. The interpreter is chosen by the platform the program is compiled for, so a
    compile for TPU devices from a host without them lowers the real kernel."""
    mesh = jax.sharding.get_abstract_mesh()
    local = functools.partial(_splash_local, causal=causal, interpret=traced_platform() != "tpu")
    if mesh.empty or mesh.size == 1:
        return local(q, k, v, segment_ids, positions)
    rows = _mesh_axes(mesh, "activation_batch", q.shape[0])
    heads = _mesh_axes(mesh, "activation_kv_heads", k.shape[2])
    spec = PartitionSpec(rows, None, heads, None)
    row_spec = PartitionSpec(rows, None)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec, row_spec, row_spec), out_specs=spec,
                         check_vma=False)(q, k, v, segment_ids, positions)


_IMPLEMENTATIONS = {"xla": _xla_attention, "jax_nn": _jax_nn_attention, "splash": None}


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    q_segment_ids: jax.Array,
    kv_segment_ids: jax.Array,
    q_positions: jax.Array,
    kv_positions: jax.Array,
    causal: bool,
    implementation: AttentionImpl = "xla",
    same_sequence: bool = False,
    one_text_per_row: bool = False,
    span: int = 0,
    rows: tuple[AttentionRows, AttentionRows] | None = None,
) -> jax.Array:
    """Grouped-query attention. q [b, t, heads, d]; k, v [b, s, kv_heads, d] -> [b, t, heads, d].

    `same_sequence`: queries and keys are the same packed sequence (not pooled queries).
    `one_text_per_row`: every row holds at most one text, from slot 0, padding after it (segment
    ids 1 then 0): "jax_nn" then masks by lengths. Positions must run 0, 1, ... on both sides.
    `span` (> 0): no text of a row is longer than this many slots; the "xla" path then attends
    windows of the row (module docstring) where that reads fewer keys (`span_window`).
    `rows` (training): (queries', keys') AttentionRows, each text attended alone in its attention
    row (arc_jax/model/attention_rows.py), the segment ids and positions then unused; splash, made
    for long rows, attends them on the "xla" path."""
    if implementation not in _IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {implementation!r}; choose from {sorted(_IMPLEMENTATIONS)}")
    if rows is not None:
        def attend(q, k, v, q_valid, kv_valid):
            at = lambda valid: jnp.broadcast_to(jnp.arange(valid.shape[1], dtype=jnp.int32), valid.shape)
            return dot_product_attention(q, k, v, q_segment_ids=q_valid, kv_segment_ids=kv_valid, q_positions=at(q_valid),
                                         kv_positions=at(kv_valid), causal=causal, same_sequence=same_sequence,
                                         implementation="xla" if implementation == "splash" else implementation,
                                         one_text_per_row=True)
        return attend_in_rows(attend, q, k, v, *rows)
    if one_text_per_row and implementation == "jax_nn":
        return _jax_nn_attention_by_lengths(q, k, v, q_segment_ids, kv_segment_ids, causal)
    if implementation == "splash":
        if same_sequence:
            return _splash_attention(q, k, v, q_segment_ids, q_positions, causal)
        implementation = "xla"
    if implementation == "xla" and same_sequence:
        window = span_window(q.shape[1], span, causal)
        if window is not None:
            return _windowed_attention(q, k, v, q_segment_ids, q_positions, causal, *window)
        chunk = block_causal_chunk(q.shape[1]) if causal else None
        if chunk is not None:
            return _block_causal_attention(q, k, v, q_segment_ids, q_positions, chunk)
    mask = attention_mask(q_segment_ids, kv_segment_ids, q_positions, kv_positions, causal)
    return _IMPLEMENTATIONS[implementation](q, k, v, mask)
