"""A stack of identical blocks, in one of two layouts of the same parameters.

Scanned (`scan_layers=True`: training, scoring, generation's prefill): `nn.scan` runs one compiled
layer, parameters stacked on a leading "layers" axis under `block`, optional rematerialisation
per block; a stacked KV cache is scanned along, each layer reading and returning its slice.

Unrolled (`scan_layers=False`: generation's decode step): a Python loop over blocks `block_0` ..
`block_{n-1}`, each with its own parameters and its own KV cache buffer. A scanned decode step
slices every layer's weights out of the stacked arrays at every token (XLA copies the slice
before each matmul) and returns a new stacked cache; unrolled, the weights are read where they
lie and the caches are updated in place. `unstack_layers` makes its parameters from the scanned
ones (a copy, made once per generation call). Its program grows with the depth (a 32-layer
decode loop compiles in ~4 s on a GPU, ~20 s on a CPU). The prefill stays scanned: its weight
copies cost little next to its matmuls (Llama 3.1 8B on an H200: 17 vs 10 ms at 288 tokens, 93
vs 90 ms at 4128), and unrolling it would need the unstacked weights kept beside the stacked
ones or copied at every call.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from arc_jax.model.attention import AttentionImpl
from arc_jax.model.attention_rows import AttentionRows
from arc_jax.model.config import BackboneConfig
from arc_jax.model.kv_cache import KVCache
from arc_jax.model.layers import Block

# The forward primitives of the fused attention kernels: cuDNN's (jax.nn.dot_product_attention on a
# GPU) and Pallas's (splash on a TPU, interpreted elsewhere; arc_jax's only Pallas kernels are
# attention's). Their outputs hold what their backward kernels read (the attention output and its
# softmax statistics).
FUSED_ATTENTION_FORWARD = frozenset({"dot_product_attention_fwd", "dot_product_attention_fwd_wrapper", "pallas_call"})


def dots_no_batch_and_attention_saveable(prim, *avals, **params) -> bool:
    """dots_no_batch, and the fused attention kernels' forward outputs: the backward pass then
    recomputes neither the weight matmuls nor the attention kernel (with dots_no_batch alone, a
    cuDNN or splash forward runs twice a step)."""
    return (prim.name in FUSED_ATTENTION_FORWARD
            or jax.checkpoint_policies.dots_with_no_batch_dims_saveable(prim, *avals, **params))


# Names accepted by `remat_policy`; "none" stores every activation, "full" recomputes the block.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_no_batch_attention": dots_no_batch_and_attention_saveable,
}


class _ScanBlock(Block):
    """A Block with the (carry, output) signature `nn.scan` wants."""

    def __call__(self, h, segment_ids, positions, rows=None):
        return super().__call__(h, segment_ids, positions, rows=rows), None


class _CachedScanBlock(Block):
    """A Block reading and extending its layer's KV cache, with the `nn.scan` signature."""

    def __call__(self, h, segment_ids, positions, cache):
        return super().__call__(h, segment_ids, positions, cache=cache)


class LayerStack(nn.Module):
    cfg: BackboneConfig
    n_layers: int
    causal: bool
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention_impl: AttentionImpl = "xla"
    remat_policy: str = "none"  # scanned layout only
    scan_layers: bool = True
    one_text_per_row: bool = False  # see attention.dot_product_attention
    span: int = 0  # the longest text of a packed row (training); see attention.dot_product_attention
    # Scanned layout without cache: compile the scan fully unrolled (the same stacked parameters).
    unroll: bool = False

    @nn.compact
    def __call__(self, h, segment_ids, positions, cache: KVCache | tuple[KVCache, ...] | None = None,
                 rows: AttentionRows | None = None):
        """h after the stack; with a KV cache (stacked [layers, ...] when scanned, one per layer
        when unrolled), (h, updated cache). `rows`: training's attention rows (attention_rows.py)."""
        if not self.scan_layers:
            blocks = [Block(self.cfg, self.causal, self.dtype, self.param_dtype, self.attention_impl,
                            self.one_text_per_row, self.span, name=f"block_{i}") for i in range(self.n_layers)]
            if cache is None:
                for block in blocks:
                    h = block(h, segment_ids, positions, rows=rows)
                return h
            updated = []
            for block, layer_cache in zip(blocks, cache, strict=True):
                h, layer_cache = block(h, segment_ids, positions, cache=layer_cache)
                updated.append(layer_cache)
            return h, tuple(updated)
        if cache is not None:
            scanned = nn.scan(_CachedScanBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                              in_axes=(nn.broadcast, nn.broadcast, 0), length=self.n_layers,
                              metadata_params={nn.PARTITION_NAME: "layers"})
            return scanned(self.cfg, self.causal, self.dtype, self.param_dtype, self.attention_impl,
                           self.one_text_per_row, self.span, name="block")(h, segment_ids, positions, cache)
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"unknown remat_policy {self.remat_policy!r}; choose from {sorted(REMAT_POLICIES)}")
        block_cls = _ScanBlock
        if self.remat_policy != "none":
            # Unrolled, the forward and its recomputation share one straight-line program, where XLA
            # would merge them (and keep what the policy drops) unless told not to; a scan's loop
            # keeps them apart by itself, without the barriers prevent_cse adds.
            block_cls = nn.remat(_ScanBlock, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=self.unroll)
        scanned = nn.scan(
            block_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
            length=self.n_layers,
            unroll=self.n_layers if self.unroll else 1,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        h, _ = scanned(self.cfg, self.causal, self.dtype, self.param_dtype, self.attention_impl,
                       self.one_text_per_row, self.span, name="block")(h, segment_ids, positions, rows)
        return h


def unstack_layers(stack_params: dict, n_layers: int) -> dict:
    """A LayerStack's scanned parameters ({"block": arrays with a leading layers axis}) in the
    unrolled layout ({"block_0": ..., "block_1": ...}): slices of the same arrays."""
    return {f"block_{i}": jax.tree.map(lambda x, i=i: x[i], stack_params["block"]) for i in range(n_layers)}
