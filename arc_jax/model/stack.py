"""A stack of identical blocks run with `nn.scan`: one compiled layer, parameters stacked on a
leading "layers" axis, optional rematerialisation per block. In generation the KV cache is
scanned along with the parameters: each layer reads and returns its [batch, slots, ...] slice."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from arc_jax.model.attention import AttentionImpl
from arc_jax.model.config import BackboneConfig
from arc_jax.model.kv_cache import KVCache
from arc_jax.model.layers import Block

# Names accepted by `remat_policy`; "none" stores every activation, "full" recomputes the block.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class _ScanBlock(Block):
    """A Block with the (carry, output) signature `nn.scan` wants."""

    def __call__(self, h, segment_ids, positions):
        return super().__call__(h, segment_ids, positions), None


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
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, h, segment_ids, positions, cache: KVCache | None = None):
        """h after the stack; with a stacked `cache` [layers, ...], (h, updated cache)."""
        if cache is not None:
            scanned = nn.scan(_CachedScanBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                              in_axes=(nn.broadcast, nn.broadcast, 0), length=self.n_layers,
                              metadata_params={nn.PARTITION_NAME: "layers"})
            return scanned(self.cfg, self.causal, self.dtype, self.param_dtype, self.attention_impl, name="block")(
                h, segment_ids, positions, cache)
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"unknown remat_policy {self.remat_policy!r}; choose from {sorted(REMAT_POLICIES)}")
        block_cls = _ScanBlock
        if self.remat_policy != "none":
            block_cls = nn.remat(_ScanBlock, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=False)
        scanned = nn.scan(
            block_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast),
            length=self.n_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        h, _ = scanned(self.cfg, self.causal, self.dtype, self.param_dtype, self.attention_impl, name="block")(
            h, segment_ids, positions)
        return h
