"""Which encoder parameters train: all of them, the last k layers (with or without the embedding
matrix), or none (a frozen encoder whose new decoder head alone trains), as the paper's options.

The shared encoder tree is {tok_embeddings, layers (scanned, stacked on a leading axis),
pooling_layers_{i} (the last len(compress_rates) layers), memory_tokens}. A mask holds, for each
of its leaves, a 0/1 array that broadcasts to it (per layer along the stacked axis).
"""

from __future__ import annotations

import jax
import numpy as np

from arc_jax.model import param_groups
from arc_jax.model.config import EncoderConfig


def shared_mask(params: dict, cfg: EncoderConfig, encoder_layers: int, embedding: bool) -> dict | None:
    """The mask of the shared encoder group, or None when all of it trains (no masking work)."""
    n_layers = cfg.backbone.n_layers
    k = n_layers if encoder_layers < 0 else encoder_layers
    if k == n_layers and embedding:
        return None
    n_pool = len(cfg.compress_rates)
    n_scanned = n_layers - n_pool
    first_trained = n_layers - k  # layers are numbered 0..n_layers-1, pooling layers last

    def layer_flags(leaf_path: str, leaf) -> np.ndarray:
        if leaf_path == "tok_embeddings":
            return np.float32(embedding)
        if leaf_path == "memory_tokens":
            return np.float32(k > 0)
        if leaf_path == "layers":
            flags = (np.arange(n_scanned) >= first_trained).astype(np.float32)
            return flags.reshape((n_scanned,) + (1,) * (len(leaf.shape) - 1))
        if leaf_path.startswith("pooling_layers_"):
            return np.float32(n_scanned + int(leaf_path.rsplit("_", 1)[1]) >= first_trained)
        raise ValueError(f"unexpected encoder parameter group {leaf_path!r}")

    return {name: jax.tree.map(lambda leaf, name=name: layer_flags(name, leaf), sub)
            for name, sub in param_groups.split(params)[param_groups.SHARED].items()}

