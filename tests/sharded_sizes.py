"""The analytic bytes per device of a tiny config's train-step arguments, for the plan tests."""

import math

import jax
import numpy as np


def sharded_state_bytes(config, n: int) -> int:
    """Trainable encoder in f32 with Adam's mu and nu, the frozen decoder and the batch, split n ways."""
    import jax.numpy as jnp

    from arc_jax.data.packing import pack_batch
    from arc_jax.model import ARCEncoder, Decoder
    from arc_jax.train.run_config import parse_run_config

    run = parse_run_config(config, device_count=n)
    batch = pack_batch([], run.encoder, run.data.shape)[0]
    enc = jax.eval_shape(lambda: ARCEncoder(run.encoder).init(jax.random.key(0), batch.encoder))["params"]
    dec = jax.eval_shape(lambda: Decoder(run.decoders[0].backbone).init(
        jax.random.key(0), batch.tokens, batch.segment_ids, batch.positions))["params"]
    size = lambda tree: sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))
    decoder_bytes = size(dec) * jnp.dtype(run.decoders[0].dtype).itemsize // 4  # eval_shape gives f32
    return (3 * size(enc) + decoder_bytes + size(batch)) // n
