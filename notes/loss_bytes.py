"""The loss of the train step and its gradient (the cross-entropy and the correct-token count of
arc_jax/train/step.py, summed under the loss mask) compiled for an H200 without one, at
bench_gpu_real_shapes' output head (8 rows x 1136 loss slots x 128,256, bf16 logits), and the
bytes its memory-bound ops move (notes/hlo_bytes.py): optax's cross-entropy, which gathers the
target's logit, against arc_jax's `cross_entropy`. Needs the gpu-compile extra.

    python notes/loss_bytes.py

2026-12-06 (jax-cuda12-plugin 0.10.2): optax 30.40 GB (a scatter-add into a zeroed float32 copy
of the logits, 9.32 GB; the float32 gradient written, then converted), arc_jax 9.43 GB.
"""

import glob
import os
import sys
import tempfile


def moved(name, loss) -> float:
    import jax
    import jax.numpy as jnp

    from arc_jax.tools.topology import parse_topology, topology_devices
    from hlo_bytes import memory_ops

    device = jax.sharding.SingleDeviceSharding(topology_devices(parse_topology("1xh200"))[0])
    shape = lambda s, dtype: jax.ShapeDtypeStruct(s, dtype, sharding=device)  # noqa: E731
    jax.jit(jax.grad(loss, has_aux=True)).lower(
        shape((8, 1136, 128256), jnp.bfloat16), shape((8, 1136), jnp.int32), shape((8, 1136), jnp.float32)).compile()
    dump = os.environ["XLA_FLAGS"].split("=", 1)[1].split()[0]
    path = max(glob.glob(os.path.join(dump, "*after_optimizations.txt")), key=os.path.getmtime)
    ops = memory_ops(path)
    total = sum(o["bytes"] * o["runs"] for o in ops)
    print(f"{name}: {total / 1e9:.2f} GB; largest: " + ", ".join(
        f"{o['name']} {o['bytes'] / 1e9:.2f}" for o in sorted(ops, key=lambda o: -o["bytes"])[:3]))
    return total


if __name__ == "__main__":
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = f"--xla_dump_to={tempfile.mkdtemp(prefix='loss_bytes_')} --xla_dump_hlo_as_text"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jax.numpy as jnp
    import optax

    from arc_jax.train.step import correct_tokens, cross_entropy
    from loss_variants import _old_correct_tokens as old_correct_tokens

    def optax_loss(logits, targets, mask):
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
        return (ce * mask).sum(), old_correct_tokens(logits, targets, mask)

    def arc_jax_loss(logits, targets, mask):
        logits = logits.astype(jnp.float32)
        return (cross_entropy(logits, targets) * mask).sum(), correct_tokens(logits, targets, mask)

    moved("optax (gathered target logit)", optax_loss)
    moved("arc_jax cross_entropy", arc_jax_loss)
